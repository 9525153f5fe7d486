//! Hot reload with the real credit policy: module reuse, every load-time
//! error with its file and field, reload under concurrent load, serialised
//! reloads, and the file watcher.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxpay_host::config::PricingKind;
use fluxpay_host::policy::reload::{Reloader, Trigger, watch};

use common::{
    credit, credit_config_yaml, credit_cost_of, credit_module, credit_tenant_yaml, engine_yaml,
    price_one, setup, tenants_yaml, write_atomically,
};

#[test]
fn bindings_sharing_a_module_load_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, tenants_yaml(&[("acme", 3), ("globex", 4)])).unwrap();
    let registry = Arc::new(fluxpay_host::policy::registry::Registry::new());
    let reloader = Reloader::new(&config, registry).unwrap();
    let report = reloader.reload(Trigger::Startup).unwrap();
    assert_eq!((report.modules_loaded, report.modules_reused), (1, 1));
    assert_eq!(price_one(&credit(&reloader, "globex")), 4);
}

#[test]
fn every_load_error_is_reported_with_file_and_field_and_the_old_version_keeps_serving() {
    let (dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    let module = credit_module().display().to_string();
    let wrong_pin = "0".repeat(64);
    let yaml = format!(
        r#"{engine}tenants:
  acme:
    pricing:
      credit: {{ module: missing.wasm }}
      order: {{ module: {module}, sha256: "{wrong_pin}", config: {ok} }}
      metered: {{ module: {module}, config: {{ costs: nope }} }}
    validation:
      - {{ name: rules, module: {module} }}
  globex:
    pricing:
      credit: {{ module: garbage.wasm, config: {ok} }}
"#,
        engine = engine_yaml(),
        ok = credit_config_yaml(1),
    );
    std::fs::write(&config, yaml).unwrap();
    let failure = reloader.reload(Trigger::Admin).unwrap_err();
    assert_eq!(failure.serving_version, 1);
    let text = failure.errors.to_string();
    let expect = |field: &str, needle: &str| {
        let found = failure
            .errors
            .iter()
            .any(|e| e.file == config && e.field == field && e.message.contains(needle));
        assert!(found, "no error at {field} containing {needle:?}:\n{text}");
    };
    expect("tenants.acme.pricing.credit.module", "file not found: ");
    expect("tenants.acme.pricing.credit.module", "missing.wasm");
    expect(
        "tenants.acme.pricing.order.sha256",
        &format!("the pin expects {wrong_pin}"),
    );
    expect(
        "tenants.acme.pricing.metered.config",
        "the module refused its config",
    );
    expect(
        "tenants.acme.validation[0].module",
        "bound as a validation policy",
    );
    expect(
        "tenants.globex.pricing.credit.module",
        "not a WebAssembly component",
    );
    assert_eq!(failure.errors.0.len(), 5, "{text}");
    assert!(text.contains(&format!(
        "{}: tenants.acme.pricing.credit.module: file not found",
        config.display()
    )));

    // Nothing was swapped.
    assert_eq!(reloader.registry().snapshot().version(), 1);
    assert_eq!(price_one(&credit(&reloader, "acme")), 3);
    let status = reloader.last_status().unwrap();
    assert!(!status.ok);
    assert_eq!(status.errors.len(), 5);
}

#[test]
fn a_correct_sha256_pin_is_accepted() {
    let bytes = std::fs::read(credit_module()).unwrap();
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let yaml = credit_tenant_yaml(3).replace(
        "        config:",
        &format!("        sha256: {hash}\n        config:"),
    );
    let (_dir, _config, reloader) = setup(&yaml);
    assert_eq!(credit(&reloader, "acme").content_hash(), hash);
}

#[test]
fn engine_settings_cannot_change_without_a_restart() {
    let (_dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let yaml =
        credit_tenant_yaml(3).replace("engine:\n", "engine:\n  max_concurrent_instances: 8\n");
    std::fs::write(&config, yaml).unwrap();
    let failure = reloader.reload(Trigger::Admin).unwrap_err();
    let err = failure.errors.iter().next().unwrap();
    assert_eq!(err.field, "engine.max_concurrent_instances");
    assert!(err.message.contains("restart"), "{err}");
}

#[test]
fn under_load_every_call_answers_from_the_old_or_the_new_version_and_none_fails() {
    let (dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let registry = reloader.registry().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let registry = registry.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answers: BTreeMap<i64, u64> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = registry.snapshot();
                    let binding = snapshot
                        .tenant("acme")
                        .unwrap()
                        .pricing(PricingKind::Credit)
                        .unwrap();
                    let credits = price_one(binding);
                    // The answer is the one of the version this call took.
                    assert_eq!(credits, credit_cost_of(binding.config_json()));
                    *answers.entry(credits).or_default() += 1;
                }
                answers
            })
        })
        .collect();

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component").unwrap();
    let mut serving = 3;
    for round in 0..40 {
        // Now and then a bad module or a config the module refuses: refused,
        // and the version serving before keeps answering.
        if round % 8 == 4 {
            let before = registry.snapshot().version();
            let bad = if round % 16 == 4 {
                credit_tenant_yaml(1)
                    .replace(&credit_module().display().to_string(), "garbage.wasm")
            } else {
                credit_tenant_yaml(1).replace(&credit_config_yaml(1), "{ costs: [1, 2] }")
            };
            write_atomically(&config, bad);
            assert!(reloader.reload(Trigger::Admin).is_err());
            assert_eq!(registry.snapshot().version(), before);
        }
        serving = if serving == 3 { 7 } else { 3 };
        write_atomically(&config, credit_tenant_yaml(serving));
        let report = reloader.reload(Trigger::Admin).unwrap();
        assert!(report.commit.swapped);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);

    let mut answers: BTreeMap<i64, u64> = BTreeMap::new();
    for caller in callers {
        for (credits, n) in caller.join().expect("a caller failed") {
            *answers.entry(credits).or_default() += n;
        }
    }
    let keys: Vec<_> = answers.keys().copied().collect();
    assert_eq!(
        keys,
        [3, 7],
        "both versions answered, and nothing else: {answers:?}"
    );
}

#[test]
fn concurrent_reloads_are_serialised_and_the_last_one_publishes_the_newest_file() {
    let (_dir, config, reloader) = setup(&credit_tenant_yaml(1));
    let writers: Vec<_> = (0..4)
        .map(|thread| {
            let reloader = reloader.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let mut published = Vec::new();
                for round in 0..8 {
                    write_atomically(&config, credit_tenant_yaml(100 * (thread + 1) + round));
                    let report = reloader.reload(Trigger::Admin).unwrap();
                    if report.commit.swapped {
                        published.push(report.commit.snapshot_version);
                    }
                }
                published
            })
        })
        .collect();
    let mut published: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    published.sort();
    let count = published.len();
    published.dedup();
    assert_eq!(
        published.len(),
        count,
        "two reloads published the same snapshot version"
    );

    // Whatever the interleaving, the registry ends on what the file says.
    let text = std::fs::read_to_string(&config).unwrap();
    let binding = credit(&reloader, "acme");
    assert!(
        text.contains(&credit_config_yaml(price_one(&binding))),
        "{text}"
    );
}

/// Poll `cond` until it holds; generous, as CI machines can be slow.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The component plus a custom section: same behaviour, different hash,
/// as a rebuild with different debug info would be.
fn with_custom_section(component: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(component).unwrap();
    // Section id 0, size 3, name length 1, name "x", payload "1".
    bytes.extend_from_slice(&[0x00, 0x03, 0x01, b'x', b'1']);
    bytes
}

#[test]
fn the_watcher_reloads_on_a_config_edit_and_on_a_module_replaced_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("credit.wasm");
    std::fs::copy(credit_module(), &module).unwrap();
    let yaml = |cost: i64| {
        credit_tenant_yaml(cost).replace(&credit_module().display().to_string(), "credit.wasm")
    };
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, yaml(3)).unwrap();
    let reloader = common::loaded(&config);
    let _watcher = watch::watch(reloader.clone(), Duration::from_millis(100)).unwrap();

    write_atomically(&config, yaml(7));
    eventually("the config edit is live", || {
        price_one(&credit(&reloader, "acme")) == 7
    });
    assert_eq!(credit(&reloader, "acme").version(), 2);
    assert_eq!(reloader.last_status().unwrap().trigger, Trigger::Watcher);

    let old_hash = credit(&reloader, "acme").content_hash().to_owned();
    write_atomically(&module, with_custom_section(&module));
    eventually("the replaced module is live", || {
        credit(&reloader, "acme").content_hash() != old_hash
    });
    let binding = credit(&reloader, "acme");
    assert_eq!(binding.version(), 3);
    assert_eq!(price_one(&binding), 7);

    // A broken edit is refused; version 3 keeps serving.
    let serving = reloader.registry().snapshot().version();
    write_atomically(&config, "tenants: [\n");
    eventually("the broken edit is seen and refused", || {
        reloader.last_status().is_some_and(|s| !s.ok)
    });
    assert_eq!(reloader.registry().snapshot().version(), serving);
    assert_eq!(price_one(&credit(&reloader, "acme")), 7);
}

#[test]
fn a_config_given_by_a_relative_path_watches_its_modules_by_absolute_path() {
    // Tests run in the package directory: a temp dir inside it gives a
    // relative config path, as `serve --config examples/tenants.yaml` does.
    let dir = tempfile::Builder::new()
        .prefix(".reload-relative-")
        .tempdir_in(".")
        .unwrap();
    let relative = Path::new(".").join(dir.path().file_name().unwrap());
    let module = relative.join("credit.wasm");
    std::fs::copy(credit_module(), &module).unwrap();
    let config = relative.join("tenants.yaml");
    std::fs::write(
        &config,
        credit_tenant_yaml(3).replace(&credit_module().display().to_string(), "credit.wasm"),
    )
    .unwrap();
    let reloader = common::loaded(&config);
    let watched = reloader.watched_files();
    assert!(watched.iter().all(|p| p.is_absolute()), "{watched:?}");
    let module_abs = std::path::absolute(&module).unwrap();
    assert!(watched.contains(&module_abs), "{watched:?}");

    let _watcher = watch::watch(reloader.clone(), Duration::from_millis(100)).unwrap();
    let old_hash = credit(&reloader, "acme").content_hash().to_owned();
    write_atomically(&module, with_custom_section(&module));
    eventually(
        "the module replaced under a relative config path is live",
        || credit(&reloader, "acme").content_hash() != old_hash,
    );
}

#[test]
fn writes_to_other_files_beside_the_config_do_not_reload() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, credit_tenant_yaml(3)).unwrap();
    let reloader = common::loaded(&config);
    let _watcher = watch::watch(reloader.clone(), Duration::from_millis(50)).unwrap();
    // What an SQLite database next to the config does under load.
    let db = dir.path().join("fluxpay.db-wal");
    for i in 0..500u32 {
        std::fs::write(&db, i.to_le_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        reloader.last_status().map(|s| s.trigger),
        Some(Trigger::Startup),
        "only the start-up load ran"
    );
    // The watcher is still alive and still reacts to the config itself.
    write_atomically(&config, credit_tenant_yaml(9));
    eventually("the config edit is live", || {
        price_one(&credit(&reloader, "acme")) == 9
    });
}
