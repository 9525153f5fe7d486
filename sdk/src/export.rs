//! What `#[pricing]` and `#[validation]` expand to call. Not part of the
//! public API (reached through `__private`), but the shapes here are what make
//! the macro work, so they are documented for the SDK's maintainers.
//!
//! The config type is never named by the macro: it is inferred from the
//! author's function through [`PricingFn`]/[`ValidationFn`]. Those traits carry
//! the `on_unimplemented` sentence shown when a signature parses but does not
//! type-check.

use serde::de::DeserializeOwned;

use crate::{Context, PolicyError, PricingRequest, Quote, ValidationSubject, Violation};

/// A function usable as `#[pricing]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a #[pricing] function",
    label = "this function's signature does not fit #[pricing]",
    note = "a #[pricing] function takes (ctx: &Context, config: &YourConfig, request: PricingRequest) and returns Result<Quote, PolicyError>, where YourConfig derives serde::Deserialize"
)]
pub trait PricingFn<C, Marker = ()> {
    /// Calls the function.
    fn call(
        &self,
        ctx: &Context,
        config: &C,
        request: PricingRequest,
    ) -> Result<Quote, PolicyError>;
}

impl<C, F> PricingFn<C, ()> for F
where
    F: Fn(&Context, &C, PricingRequest) -> Result<Quote, PolicyError>,
{
    fn call(
        &self,
        ctx: &Context,
        config: &C,
        request: PricingRequest,
    ) -> Result<Quote, PolicyError> {
        self(ctx, config, request)
    }
}

/// A function usable as `#[validation]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a #[validation] function",
    label = "this function's signature does not fit #[validation]",
    note = "a #[validation] function takes (ctx: &Context, config: &YourConfig, subject: ValidationSubject) and returns Result<Vec<Violation>, PolicyError>, where YourConfig derives serde::Deserialize"
)]
pub trait ValidationFn<C, Marker = ()> {
    /// Calls the function.
    fn call(
        &self,
        ctx: &Context,
        config: &C,
        subject: ValidationSubject,
    ) -> Result<Vec<Violation>, PolicyError>;
}

impl<C, F> ValidationFn<C, ()> for F
where
    F: Fn(&Context, &C, ValidationSubject) -> Result<Vec<Violation>, PolicyError>,
{
    fn call(
        &self,
        ctx: &Context,
        config: &C,
        subject: ValidationSubject,
    ) -> Result<Vec<Violation>, PolicyError> {
        self(ctx, config, subject)
    }
}

/// Never implemented. The decoy impls below give each trait a second
/// candidate, so that for a function that fits neither, rustc reports the
/// trait's `on_unimplemented` sentence instead of the first mismatch it finds
/// inside the one blanket impl (which reads well for a wrong return type but
/// not for a wrong parameter).
pub trait Never {}

/// Marks the decoy impls.
pub enum Decoy {}

impl<C, F: Never> PricingFn<C, Decoy> for F {
    fn call(&self, _: &Context, _: &C, _: PricingRequest) -> Result<Quote, PolicyError> {
        unreachable!("Never has no implementations")
    }
}

impl<C, F: Never> ValidationFn<C, Decoy> for F {
    fn call(
        &self,
        _: &Context,
        _: &C,
        _: ValidationSubject,
    ) -> Result<Vec<Violation>, PolicyError> {
        unreachable!("Never has no implementations")
    }
}

/// A config type: anything serde can deserialise from JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a policy config type",
    label = "the config parameter's type must implement serde::Deserialize",
    note = "add #[derive(serde::Deserialize)] (and #[serde(deny_unknown_fields)]) to your config type"
)]
pub trait PolicyConfig: DeserializeOwned {}

impl<C: DeserializeOwned> PolicyConfig for C {}

/// Type-checks a `#[pricing]` function; never called at run time.
pub fn assert_pricing_fn<C: PolicyConfig, M, F: PricingFn<C, M>>(_function: F) {}

/// Type-checks a `#[validation]` function; never called at run time.
pub fn assert_validation_fn<C: PolicyConfig, M, F: ValidationFn<C, M>>(_function: F) {}

/// `pricer.check-config`: does `config` parse as the function's config type?
pub fn check_pricing_config<C: PolicyConfig, M, F: PricingFn<C, M>>(
    _function: F,
    config: &str,
) -> Result<(), String> {
    crate::config::parse::<C>(config).map(drop)
}

/// `validator.check-config`: does `config` parse as the function's config type?
pub fn check_validation_config<C: PolicyConfig, M, F: ValidationFn<C, M>>(
    _function: F,
    config: &str,
) -> Result<(), String> {
    crate::config::parse::<C>(config).map(drop)
}

/// `pricer.price`: parse `ctx.config`, then call the author's function.
pub fn run_pricing<C: PolicyConfig, M, F: PricingFn<C, M>>(
    function: F,
    ctx: Context,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    let config = crate::config::parse::<C>(&ctx.config).map_err(PolicyError::InvalidConfig)?;
    let result = function.call(&ctx, &config, request);
    discard(ctx, config);
    result
}

/// `validator.validate`: parse `ctx.config`, then call the author's function.
pub fn run_validation<C: PolicyConfig, M, F: ValidationFn<C, M>>(
    function: F,
    ctx: Context,
    subject: ValidationSubject,
) -> Result<Vec<Violation>, PolicyError> {
    let config = crate::config::parse::<C>(&ctx.config).map_err(PolicyError::InvalidConfig)?;
    let result = function.call(&ctx, &config, subject);
    discard(ctx, config);
    result
}

/// Drops the call's context and config. In a component built with the bump
/// allocator nothing is reused before the instance (and its memory) is
/// thrown away, so the walk over every node to free it is skipped.
#[inline(always)]
fn discard<C>(ctx: Context, config: C) {
    if cfg!(all(target_arch = "wasm32", feature = "bump-allocator")) {
        core::mem::forget((ctx, config));
    }
}
