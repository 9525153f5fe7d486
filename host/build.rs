//! Builds the reference policies (policies/*) into components under
//! `target/policies/`, so `cargo run -p fluxpay-host -- serve` with the
//! example config works on a fresh clone with nothing but the Rust toolchain.
//!
//! Set `FLUXPAY_SKIP_POLICY_BUILD=1` to skip (e.g. an image that builds the
//! policies in a separate stage).

use std::path::Path;

use fluxpay_policy_build::{Build, workspace_root_from};

const REFERENCE_POLICIES: [&str; 5] = [
    "fluxpay-policy-credit",
    "fluxpay-policy-subscription",
    "fluxpay-policy-metered",
    "fluxpay-policy-validation",
    "fluxpay-policy-catalog",
];

fn main() {
    // `sqlx::migrate!` embeds ../migrations at compile time and tracks the
    // files it saw; a *new* migration file needs this to trigger a rebuild.
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-env-changed=FLUXPAY_SKIP_POLICY_BUILD");
    if std::env::var_os("FLUXPAY_SKIP_POLICY_BUILD").is_some_and(|v| v != "0") {
        return;
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = workspace_root_from(Path::new(&manifest_dir)).expect("host lives in the workspace");
    for input in [
        "wit",
        "sdk/src",
        "sdk/macros/src",
        "sdk/Cargo.toml",
        "policies",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    for package in REFERENCE_POLICIES {
        if let Err(err) = Build::in_workspace(&root, package).run() {
            panic!("building reference policy {package} failed: {err:#}");
        }
    }
}
