//! # Writing FluxPay policies
//!
//! A FluxPay policy is a WebAssembly component that prices something (a
//! credit use, a subscription period, metered usage, an order) or validates
//! something (an order, a credit use, a usage batch, a payment). The host runs
//! it in a sandbox on each request: no files, network, clock or randomness,
//! only what the [`Context`] and the request carry, and a fresh instance per
//! call. The contract is the WIT package `fluxpay:policy@0.1.0` (`wit/` at the
//! repository root); this crate gives you its types as plain Rust and turns a
//! plain function into the component's export.
//!
//! ## A complete policy
//!
//! ```
//! use fluxpay_policy_sdk::prelude::*;
//! use std::collections::BTreeMap;
//!
//! /// The `config:` block of the tenant's YAML binding, e.g.
//! /// `config: { costs: { image-render: 5 }, minimum: 2 }`.
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Credits per unit, by feature.
//!     costs: BTreeMap<String, i64>,
//!     /// The least a single use costs.
//!     #[serde(default)]
//!     minimum: i64,
//! }
//!
//! #[pricing]
//! fn price(ctx: &Context, config: &Config, request: PricingRequest) -> Result<Quote, PolicyError> {
//!     let PricingRequest::CreditUsage(usage) = request else {
//!         return Err(PolicyError::unsupported("this policy prices credit-usage requests"));
//!     };
//!     let Some(&cost) = config.costs.get(&usage.feature) else {
//!         return Err(PolicyError::rejected(
//!             "unknown-feature",
//!             format!("no credit cost is configured for `{}`", usage.feature),
//!         ));
//!     };
//!     let credits = Credits(cost).checked_mul(usage.units)?.max(Credits(config.minimum));
//!     log::debug(format!("{} pays {} credits", ctx.customer_id, credits.0));
//!     let line = LineItem::new(
//!         format!("feature:{}", usage.feature),
//!         format!("{} × {} at {cost} credits", usage.units, usage.feature),
//!         usage.units,
//!         credits,
//!     );
//!     Ok(Quote::from_line_items(Amount::credits(0), vec![line])?)
//! }
//!
//! // Native unit tests call the function directly (or through
//! // `testing::price`, which also parses the config like the component does).
//! # fn main() {
//! let ctx = testing::context().config_json(serde_json::json!({ "costs": { "render": 5 } })).build();
//! let request = PricingRequest::CreditUsage(CreditUsage {
//!     feature: "render".into(),
//!     units: 3,
//!     metadata: vec![],
//! });
//! let quote = testing::price(price, &ctx, request).unwrap();
//! assert_eq!(quote.total, Amount::credits(15));
//! # }
//! ```
//!
//! The crate needs `crate-type = ["cdylib", "rlib"]` (the `cdylib` is the
//! component, the `rlib` lets native tests link) and depends on
//! `fluxpay-policy-sdk` and `serde`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! fluxpay-policy-sdk = { path = "../../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! ## The two entry points
//!
//! - [`#[pricing]`](macro@pricing): `fn(&Context, &YourConfig, PricingRequest)
//!   -> Result<Quote, PolicyError>`, exported as `fluxpay:policy/pricer`.
//! - [`#[validation]`](macro@validation): `fn(&Context, &YourConfig,
//!   ValidationSubject) -> Result<Vec<Violation>, PolicyError>`, exported as
//!   `fluxpay:policy/validator`.
//!
//! A crate has **exactly one** of them: a component implements one world. Your
//! config type is any `serde::Deserialize` type; the generated `check-config`
//! export parses it when the host loads or reloads the binding (a bad config
//! keeps the old version serving), and each call parses `ctx.config` again
//! before calling you (an invalid config is [`PolicyError::InvalidConfig`]).
//! See [`config`] for how errors name the field.
//!
//! Answer with:
//! - `Ok(quote)` / `Ok(violations)` (an empty list means "passes");
//! - [`PolicyError::unsupported`] for a request kind this policy does not price;
//! - [`PolicyError::rejected`] (a stable code and a sentence) when the rules
//!   refuse the request. Money errors convert with `?` (see [`money`]).
//!
//! ## Helpers
//! - [`money`]: checked [`Money`], [`Credits`] and [`Amount`] arithmetic,
//!   [`money::prorate`] and [`money::mul_div`] with explicit [`Rounding`].
//! - [`calendar`]: UTC month/year arithmetic on epoch milliseconds.
//! - [`KeyValues`] and [`Context::attribute`]: read attributes and metadata.
//! - [`log`]: `log::info("…")` goes to the host's log (stderr in native tests).
//! - [`testing`]: a [`Context`] builder and the export's call path, natively.
//!
//! ## Building the component
//!
//! With the workspace's builder, `fluxpay-policy-build` (recommended: it builds
//! with LTO and a small stack, and writes `target/policies/<package>.wasm`):
//!
//! ```text
//! let root = fluxpay_policy_build::workspace_root_from(env!("CARGO_MANIFEST_DIR").as_ref())?;
//! let component = fluxpay_policy_build::build_component(&root, "my-policy", fluxpay_policy_build::Target::UnknownUnknown)?;
//! ```
//!
//! or by hand (any component encoder works; this is `wasm-tools`):
//!
//! ```text
//! cargo build -p my-policy --release --target wasm32-unknown-unknown
//! wasm-tools component new target/wasm32-unknown-unknown/release/my_policy.wasm -o my_policy.wasm
//! ```
//!
//! Then `fluxpay-host policy check my_policy.wasm` says whether the host would
//! load it, and `fluxpay-host policy run my_policy.wasm --kind pricing --input
//! request.json` runs it once under the production limits and prints fuel,
//! memory and sizes against them.
//!
//! The component imports only `fluxpay:policy/types@0.1.0` and
//! `fluxpay:policy/host@0.1.0` (the host refuses anything else), so do not use
//! crates that need WASI or `wasm-bindgen`. `wasm32-unknown-unknown` is the
//! target to use: `wasm32-wasip2` would add WASI imports.
//!
//! ## Testing natively
//!
//! `cargo test -p my-policy` runs on the host machine: the macro leaves your
//! function untouched, the export is generated only for `wasm32`, and
//! [`log`] writes to stderr. Use [`testing::context`] to build a context and
//! [`testing::price`]/[`testing::validate`] to go through the config parsing.
//!
//! ## Cost per call
//!
//! The host gives each call a fresh instance and a fuel budget (about 10M
//! instructions). Parsing the config is part of every call, so keep configs
//! small and avoid work that does not depend on the request.
//!
//! Because every instance serves one call and is then thrown away, the
//! component's global allocator is a bump allocator (cargo feature
//! `bump-allocator`, on by default): allocating is a pointer increment,
//! freeing is a no-op (except for the most recent block, which also grows
//! in place), and a small call never grows linear memory. It made the
//! reference policies' calls about a quarter cheaper than Rust's default
//! allocator. Freed memory is not reused, so a policy that allocates and
//! frees a lot in a loop uses more memory than it would with a general
//! allocator (the call's memory limit still applies). To use Rust's
//! default allocator or your own `#[global_allocator]`, depend on the SDK
//! with `default-features = false`.

#![warn(missing_docs)]

// Lets the macros' `::fluxpay_policy_sdk::…` paths resolve inside this crate's own tests.
extern crate self as fluxpay_policy_sdk;

// Compiled natively too for its unit tests; installed only in components.
#[cfg(any(test, all(target_arch = "wasm32", feature = "bump-allocator")))]
mod alloc;
#[doc(hidden)]
pub mod bindings;
pub mod calendar;
pub mod config;
mod errors;
mod export;
mod kv;
pub mod log;
pub mod money;
mod quote;
pub mod testing;

pub use bindings::fluxpay::policy::types::{
    Amount, Context, CreditUsage, CreditUseSubject, LineItem, MeteredPeriod, MetricUsage, Money,
    OrderItem, OrderRequest, OrderSubject, PaymentSubject, PlanChange, PolicyError, PricingRequest,
    Quote, Rejection, SubscriptionRenewal, SubscriptionRequest, SubscriptionStart,
    SubscriptionTerms, UsageEvent, ValidationSubject, Violation,
};
pub use kv::KeyValues;

/// Every call runs in a fresh instance whose memory is then thrown away, so
/// a component allocates by bumping a pointer (feature `bump-allocator`).
#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
#[global_allocator]
static ALLOCATOR: alloc::BumpAllocator<alloc::LinearMemory> =
    alloc::BumpAllocator::new(alloc::LinearMemory);
pub use money::{Credits, MoneyError, Rounding};

/// Exports a plain function as this component's pricing policy
/// (`fluxpay:policy/pricer@0.1.0`, world `fluxpay:policy/pricing`).
///
/// ```text
/// #[pricing]
/// fn price(ctx: &Context, config: &YourConfig, request: PricingRequest) -> Result<Quote, PolicyError>
/// ```
///
/// - The function name is free; `YourConfig` is your `serde::Deserialize` type.
/// - The function is kept as written (call it from unit tests). Only on
///   `wasm32` does the macro add the component export; its `check-config`
///   parses `YourConfig`, its `price` parses `ctx.config` and calls you.
/// - Use it once per crate, and not together with `#[validation]`.
/// - The macro takes no arguments. The crate must depend on
///   `fluxpay-policy-sdk` under that name.
/// - The generated export uses `unsafe` internally (it allows it locally), so
///   `#![deny(unsafe_code)]` is fine but `#![forbid(unsafe_code)]` is not.
///
/// A wrong signature is a compile error that says what is expected:
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Config {}
/// // error: expected 3 parameters, found 2: a #[pricing] function takes (ctx: &Context, ...
/// #[pricing]
/// fn price(ctx: &Context, request: PricingRequest) -> Result<Quote, PolicyError> {
///     todo!()
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Config {}
/// // error: `config` must be a shared reference (`&`): a #[pricing] function takes ...
/// #[pricing]
/// fn price(ctx: &Context, config: Config, request: PricingRequest) -> Result<Quote, PolicyError> {
///     todo!()
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Config {}
/// // error: `fn(...) -> Result<Quote, String> {price}` cannot be a #[pricing] function
/// #[pricing]
/// fn price(ctx: &Context, config: &Config, request: PricingRequest) -> Result<Quote, String> {
///     todo!()
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// struct NotDeserialize;
/// // error: `NotDeserialize` cannot be a policy config type
/// #[pricing]
/// fn price(ctx: &Context, config: &NotDeserialize, request: PricingRequest) -> Result<Quote, PolicyError> {
///     todo!()
/// }
/// # fn main() {}
/// ```
pub use fluxpay_policy_sdk_macros::pricing;

/// Exports a plain function as this component's validation policy
/// (`fluxpay:policy/validator@0.1.0`, world `fluxpay:policy/validation`).
///
/// ```text
/// #[validation]
/// fn validate(ctx: &Context, config: &YourConfig, subject: ValidationSubject) -> Result<Vec<Violation>, PolicyError>
/// ```
///
/// Return every broken rule as a [`Violation`] with a stable `rule_id`; an
/// empty list means the subject passes. The rules of [`macro@pricing`] apply:
/// one per crate, the function is kept as written, the export exists only on
/// `wasm32`, and a wrong signature is a compile error:
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Config {}
/// // error: `subject` is passed by value, remove the `&`: a #[validation] function takes ...
/// #[validation]
/// fn validate(ctx: &Context, config: &Config, subject: &ValidationSubject) -> Result<Vec<Violation>, PolicyError> {
///     todo!()
/// }
/// # fn main() {}
/// ```
///
/// ```compile_fail
/// use fluxpay_policy_sdk::prelude::*;
/// #[derive(serde::Deserialize)]
/// struct Config {}
/// // error: `... {validate}` cannot be a #[validation] function
/// #[validation]
/// fn validate(ctx: &Context, config: &Config, subject: ValidationSubject) -> Vec<Violation> {
///     todo!()
/// }
/// # fn main() {}
/// ```
pub use fluxpay_policy_sdk_macros::validation;

/// Everything a policy usually needs: `use fluxpay_policy_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::calendar;
    pub use crate::log;
    pub use crate::money::{self, Credits, MoneyError, Rounding};
    pub use crate::testing;
    pub use crate::{
        Amount, Context, CreditUsage, CreditUseSubject, KeyValues, LineItem, MeteredPeriod,
        MetricUsage, Money, OrderItem, OrderRequest, OrderSubject, PaymentSubject, PlanChange,
        PolicyError, PricingRequest, Quote, Rejection, SubscriptionRenewal, SubscriptionRequest,
        SubscriptionStart, SubscriptionTerms, UsageEvent, ValidationSubject, Violation, pricing,
        validation,
    };
}

/// What the macros' expansion refers to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::export::*;
    pub use wit_bindgen;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        limit: i64,
    }

    // The macro must leave the function callable natively and expand without
    // warnings on a private function.
    #[validation]
    fn validate(
        _ctx: &Context,
        config: &Config,
        subject: ValidationSubject,
    ) -> Result<Vec<Violation>, PolicyError> {
        match subject {
            ValidationSubject::CreditUse(use_) if use_.credits > config.limit => {
                Ok(vec![Violation::new("limit", "too many credits")])
            }
            _ => Ok(vec![]),
        }
    }

    #[test]
    fn an_annotated_function_is_still_a_plain_function() {
        let subject = ValidationSubject::CreditUse(CreditUseSubject {
            feature: "f".into(),
            units: 1,
            credits: 11,
            balance: 100,
            spent_today: 0,
            metadata: vec![],
        });
        let ctx = testing::context().build();
        let violations = validate(&ctx, &Config { limit: 10 }, subject).unwrap();
        assert_eq!(violations[0].rule_id, "limit");
    }
}

/// The repository README's Rust example is compiled as a doctest, so the
/// quick-start a newcomer copies always builds against this SDK.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
