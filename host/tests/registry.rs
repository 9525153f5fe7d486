//! The registry's versioning as operators see it, with the real credit
//! policy: a version per definition change, snapshots that outlive a swap,
//! rollback and the rule that keeps it, kept history, call counters.

mod common;

use fluxpay_host::config::PricingKind;
use std::collections::BTreeMap;

use fluxpay_host::policy::registry::{Change, KEPT_VERSIONS, RollbackError};
use fluxpay_host::policy::reload::Trigger;
use fluxpay_host::policy::{CallError, FailureKind, types};

use common::{
    change_of, credit, credit_module, credit_tenant_yaml, ctx, price_one, setup, tenants_yaml,
    usage,
};

#[test]
fn a_config_change_is_a_new_version_and_reuses_the_compiled_module() {
    let (_dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let v1 = credit(&reloader, "acme");
    assert_eq!(v1.version(), 1);
    assert_eq!(price_one(&v1), 3);

    std::fs::write(&config, credit_tenant_yaml(7)).unwrap();
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert!(report.commit.swapped);
    assert_eq!(report.commit.snapshot_version, 2);
    assert_eq!(change_of(&report, "acme", "credit"), Change::Changed);
    assert_eq!(
        report.modules_loaded, 0,
        "same module bytes: nothing compiled"
    );
    assert_eq!(report.modules_reused, 1);

    let v2 = credit(&reloader, "acme");
    assert_eq!(v2.version(), 2);
    assert_eq!(v2.content_hash(), v1.content_hash());
    assert_eq!(price_one(&v2), 7);
}

#[test]
fn reloading_an_unchanged_file_publishes_nothing() {
    let (_dir, _config, reloader) = setup(&credit_tenant_yaml(3));
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert!(!report.commit.swapped);
    assert_eq!(report.commit.snapshot_version, 1);
    assert_eq!(change_of(&report, "acme", "credit"), Change::Unchanged);
    assert_eq!(report.modules_loaded, 0);
    assert_eq!(credit(&reloader, "acme").version(), 1);
}

#[test]
fn a_request_holding_a_snapshot_finishes_on_it_after_a_swap() {
    let (_dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let held = reloader.registry().snapshot();
    std::fs::write(&config, credit_tenant_yaml(7)).unwrap();
    reloader.reload(Trigger::Admin).unwrap();

    let old = held
        .tenant("acme")
        .unwrap()
        .pricing(PricingKind::Credit)
        .unwrap();
    assert_eq!(held.version(), 1);
    assert_eq!(
        price_one(old),
        3,
        "the held snapshot still answers with version 1"
    );
    assert_eq!(price_one(&credit(&reloader, "acme")), 7);
}

#[test]
fn rollback_serves_the_previous_version_until_the_file_changes_that_binding() {
    let (_dir, config, reloader) = setup(&tenants_yaml(&[("acme", 3), ("globex", 4)]));
    std::fs::write(&config, tenants_yaml(&[("acme", 5), ("globex", 4)])).unwrap();
    reloader.reload(Trigger::Admin).unwrap();
    assert_eq!(credit(&reloader, "acme").version(), 2);

    let report = reloader
        .registry()
        .writer()
        .rollback("acme", "credit")
        .unwrap();
    assert_eq!((report.from_version, report.to_version), (2, 1));
    assert_eq!(price_one(&credit(&reloader, "acme")), 3);
    assert!(
        reloader
            .registry()
            .snapshot()
            .is_rolled_back("acme", "credit")
    );

    // Another tenant's edit reloads the file: acme's rollback is not undone,
    // because the file still defines acme's credit binding as it did.
    std::fs::write(&config, tenants_yaml(&[("acme", 5), ("globex", 6)])).unwrap();
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert_eq!(change_of(&report, "acme", "credit"), Change::KeptRolledBack);
    assert_eq!(change_of(&report, "globex", "credit"), Change::Changed);
    assert_eq!(credit(&reloader, "acme").version(), 1);
    assert_eq!(price_one(&credit(&reloader, "acme")), 3);
    assert_eq!(price_one(&credit(&reloader, "globex")), 6);

    // Version 1 is the oldest: nothing to roll back to.
    let err = reloader
        .registry()
        .writer()
        .rollback("acme", "credit")
        .unwrap_err();
    assert!(
        matches!(err, RollbackError::NoEarlierVersion { version: 1, .. }),
        "{err}"
    );

    // Editing acme's binding ends the rollback: the new definition loads.
    std::fs::write(&config, tenants_yaml(&[("acme", 9), ("globex", 6)])).unwrap();
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert_eq!(change_of(&report, "acme", "credit"), Change::Changed);
    let v3 = credit(&reloader, "acme");
    assert_eq!((v3.version(), price_one(&v3)), (3, 9));
    assert!(
        !reloader
            .registry()
            .snapshot()
            .is_rolled_back("acme", "credit")
    );

    // The previous version of 3 is 2 (cost 5), which is kept.
    let report = reloader
        .registry()
        .writer()
        .rollback("acme", "credit")
        .unwrap();
    assert_eq!((report.from_version, report.to_version), (3, 2));
    assert_eq!(price_one(&credit(&reloader, "acme")), 5);
}

#[test]
fn rollback_of_an_unknown_tenant_or_policy_is_refused() {
    let (_dir, _config, reloader) = setup(&credit_tenant_yaml(3));
    let err = reloader
        .registry()
        .writer()
        .rollback("nobody", "credit")
        .unwrap_err();
    assert_eq!(err, RollbackError::UnknownTenant("nobody".into()));
    let err = reloader
        .registry()
        .writer()
        .rollback("acme", "order")
        .unwrap_err();
    assert!(matches!(err, RollbackError::UnknownPolicy { .. }));
}

#[test]
fn the_last_ten_versions_of_a_binding_are_kept_for_rollback() {
    let (_dir, config, reloader) = setup(&credit_tenant_yaml(1));
    for cost in 2..=12 {
        std::fs::write(&config, credit_tenant_yaml(cost)).unwrap();
        reloader.reload(Trigger::Admin).unwrap();
    }
    let snapshot = reloader.registry().snapshot();
    let kept: Vec<u64> = snapshot
        .history("acme", "credit")
        .iter()
        .map(|b| b.version())
        .collect();
    assert_eq!(kept, (3..=12).collect::<Vec<_>>());
    assert_eq!(kept.len(), KEPT_VERSIONS);

    for expected in (3..=11).rev() {
        let report = reloader
            .registry()
            .writer()
            .rollback("acme", "credit")
            .unwrap();
        assert_eq!(report.to_version, expected);
        assert_eq!(price_one(&credit(&reloader, "acme")), expected as i64);
    }
    assert!(
        reloader
            .registry()
            .writer()
            .rollback("acme", "credit")
            .is_err()
    );
}

#[test]
fn moving_a_module_file_without_changing_it_keeps_the_version() {
    let (dir, config, reloader) = setup(&credit_tenant_yaml(3));
    let moved = dir.path().join("moved.wasm");
    std::fs::copy(credit_module(), &moved).unwrap();
    let yaml = credit_tenant_yaml(3).replace(&credit_module().display().to_string(), "moved.wasm");
    std::fs::write(&config, yaml).unwrap();
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert_eq!(change_of(&report, "acme", "credit"), Change::Unchanged);
    let binding = credit(&reloader, "acme");
    assert_eq!(binding.version(), 1);
    assert_eq!(binding.module(), std::path::absolute(&moved).unwrap());
}

#[test]
fn counters_count_calls_policy_errors_and_failures_by_kind() {
    let yaml = credit_tenant_yaml(3).replace(
        "        config:",
        "        limits: { input_bytes: 400 }\n        config:",
    );
    let (_dir, _config, reloader) = setup(&yaml);
    let binding = credit(&reloader, "acme");
    assert_eq!(price_one(&binding), 3);

    let unknown = binding.price(ctx(), &usage("no-such-feature", 1));
    assert!(
        matches!(unknown.result, Err(CallError::Policy(_))),
        "{:?}",
        unknown.result
    );

    let big = types::PricingRequest::CreditUsage(types::CreditUsage {
        feature: "image-render".into(),
        units: 1,
        metadata: vec![("note".into(), "x".repeat(1000))],
    });
    let too_big = binding.price(ctx(), &big);
    assert_eq!(
        too_big.failure().map(|f| f.kind),
        Some(FailureKind::InputTooLarge)
    );

    let stats = binding.stats().snapshot();
    assert_eq!(stats.calls, 3);
    assert_eq!(stats.policy_errors, 1);
    assert_eq!(stats.failures, BTreeMap::from([("input_too_large", 1)]));
}

#[test]
fn reordering_validation_policies_publishes_the_new_order_without_new_versions() {
    let module = common::policy("fluxpay-policy-validation");
    let yaml = |names: [&str; 2]| {
        let mut yaml = common::engine_yaml();
        yaml.push_str("tenants:\n  acme:\n    validation:\n");
        for name in names {
            yaml.push_str(&format!(
                "      - {{ name: {name}, module: {} }}\n",
                module.display()
            ));
        }
        yaml
    };
    let (_dir, config, reloader) = setup(&yaml(["first", "second"]));
    std::fs::write(&config, yaml(["second", "first"])).unwrap();
    let report = reloader.reload(Trigger::Admin).unwrap();
    assert!(report.commit.swapped, "the order is part of what serves");
    assert_eq!(change_of(&report, "acme", "first"), Change::Unchanged);
    let snapshot = reloader.registry().snapshot();
    let order: Vec<(&str, u64)> = snapshot
        .tenant("acme")
        .unwrap()
        .validation()
        .iter()
        .map(|b| (b.name(), b.version()))
        .collect();
    assert_eq!(order, [("second", 1), ("first", 1)]);
}
