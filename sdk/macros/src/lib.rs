//! Procedural macros behind `fluxpay-policy-sdk`'s `#[pricing]` and `#[validation]`.
//!
//! Policy authors do not depend on this crate directly: they use the re-exports
//! `fluxpay_policy_sdk::pricing` and `fluxpay_policy_sdk::validation`, whose
//! documentation is the manual. This crate only turns a plain function into the
//! component export:
//!
//! - the function itself is left exactly as written, so native unit tests call it;
//! - a `const` item checks its signature on every target, so a wrong signature is
//!   a compile error (with a sentence saying how to fix it) already in `cargo test`;
//! - on `wasm32` only, a hidden module runs `wit_bindgen::generate!` for the
//!   world, reusing the SDK's types through `with:`, implements the `Guest` trait
//!   by parsing `ctx.config` and calling the function, and `export!`s it.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Type, parse_macro_input};

/// The repository's `wit/` folder, fixed when this crate is compiled so that a
/// policy crate needs no `wit/` folder of its own.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");

/// The two export kinds the SDK knows; everything that differs between them.
struct Kind {
    attribute: &'static str,
    world: &'static str,
    interface: &'static str,
    guest_fn: &'static str,
    input_name: &'static str,
    input_ty: &'static str,
    output_ty: &'static str,
    output_path: &'static str,
    run_fn: &'static str,
    check_fn: &'static str,
    assert_fn: &'static str,
}

const PRICING: Kind = Kind {
    attribute: "pricing",
    world: "fluxpay:policy/pricing@0.1.0",
    interface: "pricer",
    guest_fn: "price",
    input_name: "request",
    input_ty: "PricingRequest",
    output_ty: "Quote",
    output_path: "::fluxpay_policy_sdk::Quote",
    run_fn: "run_pricing",
    check_fn: "check_pricing_config",
    assert_fn: "assert_pricing_fn",
};

const VALIDATION: Kind = Kind {
    attribute: "validation",
    world: "fluxpay:policy/validation@0.1.0",
    interface: "validator",
    guest_fn: "validate",
    input_name: "subject",
    input_ty: "ValidationSubject",
    output_ty: "Vec<Violation>",
    output_path: "::std::vec::Vec<::fluxpay_policy_sdk::Violation>",
    run_fn: "run_validation",
    check_fn: "check_validation_config",
    assert_fn: "assert_validation_fn",
};

/// (Implemented in `fluxpay-policy-sdk-macros`; use it as `fluxpay_policy_sdk::pricing`.)
#[proc_macro_attribute]
pub fn pricing(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(&PRICING, attr.into(), parse_macro_input!(item as ItemFn)).into()
}

/// (Implemented in `fluxpay-policy-sdk-macros`; use it as `fluxpay_policy_sdk::validation`.)
#[proc_macro_attribute]
pub fn validation(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(&VALIDATION, attr.into(), parse_macro_input!(item as ItemFn)).into()
}

fn expand(kind: &Kind, attr: TokenStream2, func: ItemFn) -> TokenStream2 {
    if !attr.is_empty() {
        let message = format!("#[{}] takes no arguments", kind.attribute);
        return syn::Error::new(attr.span(), message).to_compile_error();
    }
    if let Err(error) = check_signature(kind, &func) {
        let error = error.to_compile_error();
        // Keep the function so the author sees only the one signature error.
        return quote! { #func #error };
    }
    let name = &func.sig.ident;
    let assert_fn = format_ident!("{}", kind.assert_fn);
    let span = func.sig.span();
    // Type-level check on every target: the helper's bound carries a
    // `#[diagnostic::on_unimplemented]` sentence for signatures that parse but
    // do not type-check (e.g. `Result<Quote, String>`). Referencing the
    // function here also keeps it "used" in native builds.
    let assertion = quote_spanned! {span=>
        const _: fn() = || {
            ::fluxpay_policy_sdk::__private::#assert_fn(#name);
        };
    };
    let export = wasm_export(kind, name);
    quote! {
        #func
        #assertion
        #export
    }
}

/// The sentence every signature error ends with.
fn expected_signature(kind: &Kind) -> String {
    format!(
        "a #[{}] function takes (ctx: &Context, config: &YourConfig, {}: {}) and returns \
         Result<{}, PolicyError>, where YourConfig derives serde::Deserialize",
        kind.attribute, kind.input_name, kind.input_ty, kind.output_ty
    )
}

/// Catches the mistakes that can be seen without types, with a message that
/// names the fix; the `const` assertion catches the rest.
fn check_signature(kind: &Kind, func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    let fail = |span: Span, what: &str| {
        Err(syn::Error::new(
            span,
            format!("{what}: {}", expected_signature(kind)),
        ))
    };
    if let Some(asyncness) = &sig.asyncness {
        return fail(asyncness.span(), "policies are synchronous, remove `async`");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return fail(
            sig.generics.span(),
            "the function cannot be generic; name your config type",
        );
    }
    if let Some(variadic) = &sig.variadic {
        return fail(variadic.span(), "the function cannot be variadic");
    }
    if sig.inputs.len() != 3 {
        let what = format!("expected 3 parameters, found {}", sig.inputs.len());
        return fail(sig.paren_token.span.join(), &what);
    }
    let names = ["ctx", "config", kind.input_name];
    for (index, input) in sig.inputs.iter().enumerate() {
        let ty = match input {
            FnArg::Receiver(receiver) => {
                return fail(
                    receiver.span(),
                    "the function must be a free function, not a method",
                );
            }
            FnArg::Typed(pat) => &*pat.ty,
        };
        let by_reference = matches!(ty, Type::Reference(r) if r.mutability.is_none());
        if index < 2 && !by_reference {
            let what = format!("`{}` must be a shared reference (`&`)", names[index]);
            return fail(ty.span(), &what);
        }
        if index == 2 && matches!(ty, Type::Reference(_)) {
            let what = format!("`{}` is passed by value, remove the `&`", names[index]);
            return fail(ty.span(), &what);
        }
    }
    match &sig.output {
        ReturnType::Default => fail(sig.span(), "the function must return a Result"),
        ReturnType::Type(_, _) => Ok(()),
    }
}

/// The `wasm32`-only half: bindings for the world and the `Guest` impl.
fn wasm_export(kind: &Kind, name: &syn::Ident) -> TokenStream2 {
    let wit_dir = std::fs::canonicalize(WIT_DIR)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| WIT_DIR.to_string());
    let world = kind.world;
    let module = format_ident!("__fluxpay_policy_{}_export", kind.attribute);
    let interface = format_ident!("{}", kind.interface);
    let guest_fn = format_ident!("{}", kind.guest_fn);
    let input_name = format_ident!("{}", kind.input_name);
    let input_ty = format_ident!("{}", kind.input_ty);
    let output_ty: Type = syn::parse_str(kind.output_path).expect("output type parses");
    let run_fn = format_ident!("{}", kind.run_fn);
    let check_fn = format_ident!("{}", kind.check_fn);
    quote! {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]
        mod #module {
            ::fluxpay_policy_sdk::__private::wit_bindgen::generate!({
                world: #world,
                path: #wit_dir,
                runtime_path: "::fluxpay_policy_sdk::__private::wit_bindgen::rt",
                with: {
                    "fluxpay:policy/types@0.1.0": ::fluxpay_policy_sdk::__private::bindings::fluxpay::policy::types,
                    "fluxpay:policy/host@0.1.0": ::fluxpay_policy_sdk::__private::bindings::fluxpay::policy::host,
                },
            });

            struct Policy;

            impl exports::fluxpay::policy::#interface::Guest for Policy {
                fn check_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    ::fluxpay_policy_sdk::__private::#check_fn(super::#name, &config)
                }

                fn #guest_fn(
                    ctx: ::fluxpay_policy_sdk::Context,
                    #input_name: ::fluxpay_policy_sdk::#input_ty,
                ) -> ::core::result::Result<#output_ty, ::fluxpay_policy_sdk::PolicyError> {
                    ::fluxpay_policy_sdk::__private::#run_fn(super::#name, ctx, #input_name)
                }
            }

            export!(Policy);
        }
    }
}
