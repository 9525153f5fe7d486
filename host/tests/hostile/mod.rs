//! The hostile fixture (`tests/fixtures/hostile`) built once per test binary
//! by the workspace's builder, in its three shapes, plus request builders.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fluxpay_host::policy::types::{Context, CreditUsage, PricingRequest};
use fluxpay_policy_build::{Build, Target};

const PACKAGE: &str = "fluxpay-fixture-hostile";

/// The fixture's components.
pub struct Fixtures {
    /// The pricing policy, `wasm32-unknown-unknown`: the one that loads.
    pub pricing: PathBuf,
    /// The same crate for `wasm32-wasip2`: imports WASI.
    pub wasi: PathBuf,
    /// Built with `--features validator`: exports the validation world.
    pub validator: PathBuf,
}

pub fn fixtures() -> &'static Fixtures {
    static BUILT: OnceLock<Fixtures> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = fluxpay_policy_build::workspace_root_from(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("workspace root");
        // One directory per test binary: binaries may run in parallel, and the
        // builder writes through a fixed temporary name.
        let exe = std::env::current_exe().expect("test binary path");
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let out = root.join("target/test-policies").join(stem);
        let build = |b: Build| {
            b.run()
                .unwrap_or_else(|err| panic!("building the hostile fixture: {err:#}"))
        };
        let pricing = build(Build::in_workspace(&root, PACKAGE).out_dir(out.join("pricing")));
        let wasi = build(
            Build::in_workspace(&root, PACKAGE)
                .target(Target::Wasip2)
                .out_dir(out.join("wasi")),
        );
        let mut validator = Build::in_workspace(&root, PACKAGE).out_dir(out.join("validator"));
        validator.features = vec!["validator".into()];
        // Its own cargo target dir, so the two feature sets never overwrite
        // each other's `.wasm` between a build and its read.
        validator.target_dir = root.join("target/wasm-validator");
        let validator = build(validator);
        Fixtures {
            pricing,
            wasi,
            validator,
        }
    })
}

/// A context whose config selects the fixture's `behaviour`.
pub fn ctx(behaviour: &str) -> Context {
    Context {
        tenant_id: "acme".into(),
        config: format!(r#"{{"behaviour":"{behaviour}"}}"#),
        customer_id: "cust-1".into(),
        customer_attributes: vec![("tier".into(), "gold".into())],
        now_ms: 1_700_000_000_000,
    }
}

/// "Customer used `units` of `feature`."
pub fn credit_use(feature: &str, units: i64) -> PricingRequest {
    PricingRequest::CreditUsage(CreditUsage {
        feature: feature.into(),
        units,
        metadata: vec![],
    })
}
