//! The one place the SDK runs `wit_bindgen::generate!`.
//!
//! The inline world imports only `types` and `host`: those are the two imports
//! the host allows, and generating them here (with `generate_unused_types`, as
//! `types` has no functions) gives every policy crate the same Rust types. The
//! `#[pricing]`/`#[validation]` expansion points its own `generate!` at these
//! modules through `with:` instead of generating a second copy.

#![allow(missing_docs, unsafe_code, clippy::all)]

wit_bindgen::generate!({
    inline: "
        package fluxpay:policy-sdk;

        world sdk {
            import fluxpay:policy/types@0.1.0;
            import fluxpay:policy/host@0.1.0;
        }
    ",
    path: "../wit",
    generate_all,
    generate_unused_types: true,
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq, Eq, Hash],
});
