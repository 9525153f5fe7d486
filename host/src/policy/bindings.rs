//! The one place that runs `bindgen!` for `fluxpay:policy@0.1.0`.
//!
//! Both worlds share the `types` and `host` interfaces: the validation world
//! reuses the pricing world's generated modules through `with`, so there is
//! exactly one Rust type per WIT type.

#![allow(missing_docs, clippy::all)]

mod pricing {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "pricing",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

mod validation {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "validation",
        with: {
            "fluxpay:policy/types": super::pricing::fluxpay::policy::types,
            "fluxpay:policy/host": super::pricing::fluxpay::policy::host,
        },
    });
}

pub use pricing::PricingPre;
pub use pricing::fluxpay::policy::{host, types};
pub use validation::ValidationPre;
