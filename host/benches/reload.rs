//! How long a hot reload takes, from the change to the new version serving.
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p fluxpay-host --bench reload
//! ```
//!
//! On a copy of the quick-start config (two tenants, 11 bindings, 5 modules):
//! - `reload()` after a config edit: parse, validate, `check-config` the
//!   changed binding, swap — no compile;
//! - `reload()` after a module replacement: the same plus one compile;
//! - file watcher: from writing the file to `registry.snapshot()` serving the
//!   new version; includes the watcher's 150 ms debounce, which dominates.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::root;
use fluxpay_host::policy::registry::Registry;
use fluxpay_host::policy::reload::watch::watch;
use fluxpay_host::policy::reload::{Reloader, Trigger};

const ROUNDS: usize = 20;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    let module = dir.path().join("credit.wasm");
    let credit = std::fs::read(root().join("target/policies/fluxpay-policy-credit.wasm")).unwrap();
    std::fs::write(&module, &credit).unwrap();
    let template = quick_start_config(&module);
    write(&config, &template);

    let registry = Arc::new(Registry::new());
    let reloader = Arc::new(Reloader::new(&config, registry.clone()).unwrap());
    reloader
        .reload(Trigger::Startup)
        .expect("quick-start config loads");

    let mut config_edit = Vec::new();
    let mut module_swap = Vec::new();
    for round in 0..ROUNDS {
        let cost = 6 + round;
        write(
            &config,
            &template.replace("credits_per_unit: 5", &format!("credits_per_unit: {cost}")),
        );
        let start = Instant::now();
        reloader
            .reload(Trigger::Admin)
            .expect("config edit reloads");
        config_edit.push(start.elapsed());

        // A different module: the same component with a round-specific
        // custom section, so its content hash (and compile) is new.
        let mut bytes = credit.clone();
        append_custom_section(&mut bytes, round as u8);
        write_bytes(&module, &bytes);
        let start = Instant::now();
        reloader
            .reload(Trigger::Admin)
            .expect("module swap reloads");
        module_swap.push(start.elapsed());
    }

    let _watch = watch(reloader.clone(), Duration::from_millis(150)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut watched = Vec::new();
    for round in 0..ROUNDS {
        let before = registry.snapshot().version();
        write(
            &config,
            &template.replace(
                "credits_per_unit: 5",
                &format!("credits_per_unit: {}", 100 + round),
            ),
        );
        let start = Instant::now();
        while registry.snapshot().version() == before {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "watcher did not reload"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        watched.push(start.elapsed());
    }

    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "reload", "p50 ms", "max ms", "rounds"
    );
    for (name, samples) in [
        ("reload(): config edit", &mut config_edit),
        ("reload(): module replaced", &mut module_swap),
        ("file write -> serving (watcher)", &mut watched),
    ] {
        samples.sort_unstable();
        println!(
            "{:<34} {:>9.2} {:>9.2} {:>9}",
            name,
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3,
            samples.len()
        );
    }
}

/// The quick-start config with absolute module paths, acme's credit binding
/// pointing at `credit` (a copy this bench replaces).
fn quick_start_config(credit: &Path) -> String {
    let examples = root().join("examples");
    let text = std::fs::read_to_string(examples.join("tenants.yaml")).unwrap();
    let policies = root().join("target/policies");
    let text = text
        .replace(
            "../.fluxpay/artifacts",
            &root().join("target/bench-artifacts").display().to_string(),
        )
        .replace("../target/policies", &policies.display().to_string());
    // Only acme's credit binding (the first credit module line) uses the copy.
    text.replacen(
        &policies
            .join("fluxpay-policy-credit.wasm")
            .display()
            .to_string(),
        &credit.display().to_string(),
        1,
    )
}

fn write(path: &Path, text: &str) {
    write_bytes(path, text.as_bytes());
}

/// Write then rename, as editors and builders do.
fn write_bytes(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn append_custom_section(bytes: &mut Vec<u8>, tag: u8) {
    let name = b"fluxpay-bench";
    let len = 1 + name.len() + 1;
    bytes.extend_from_slice(&[0, len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.push(tag);
}
