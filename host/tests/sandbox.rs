//! Every sandbox limit proved with a hostile policy: each misbehaviour fails
//! its own call with the exact `FailureKind`, and the same engine and the
//! same loaded policy answer a good call right after it.

mod hostile;

use std::sync::OnceLock;
use std::time::Duration;

use fluxpay_host::policy::types::{Amount, PolicyError, Quote};
use fluxpay_host::policy::{
    ArtifactSource, Call, CallError, EngineSettings, FailureKind, Limits, LimitsOverride,
    LoadError, LoadedPolicy, PolicyEngine, PolicyKind,
};

use hostile::{credit_use, ctx, fixtures};

/// One engine for the whole binary: every test's misbehaviour lands on it.
fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::new(EngineSettings::default()).unwrap())
}

/// The hostile pricing policy, loaded once on the shared engine.
fn hostile() -> &'static LoadedPolicy {
    static POLICY: OnceLock<LoadedPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        engine()
            .load_file(&fixtures().pricing, PolicyKind::Pricing, &Limits::default())
            .unwrap()
    })
}

fn run(behaviour: &str, limits: &Limits) -> Call<Quote> {
    hostile().price(&ctx(behaviour), &credit_use("render", 4), limits)
}

fn expect_failure(call: &Call<Quote>, kind: FailureKind) -> String {
    match &call.result {
        Err(CallError::Failed(f)) if f.kind == kind => f.message.clone(),
        other => panic!("expected {kind}, got {other:?}"),
    }
}

/// The same engine and policy still answer correctly.
fn assert_still_serving() {
    let call = run("ok", &Limits::default());
    let quote = call.result.expect("a good call after a bad one");
    assert_eq!(quote.total, Amount::Credits(12));
}

#[test]
fn an_ok_call_prices_and_reports_what_it_used() {
    let limits = Limits::default();
    let call = run("ok", &limits);
    let quote = call.result.unwrap();
    assert_eq!(quote.total, Amount::Credits(12));
    assert_eq!(quote.line_items.len(), 1);
    assert_eq!(quote.metadata, vec![("customer".into(), "cust-1".into())]);
    let s = call.stats;
    assert!(s.fuel_used > 0 && s.fuel_used < limits.fuel, "{s:?}");
    assert!(s.peak_memory_bytes > 0 && s.peak_memory_bytes <= limits.memory_bytes);
    assert!(s.input_bytes > 0 && s.output_bytes > 0, "{s:?}");
    assert_eq!((s.log_bytes, s.log_truncated), (0, false));
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let limits = Limits::default();
    let call = run("loop", &limits);
    let message = expect_failure(&call, FailureKind::OutOfFuel);
    assert!(message.contains("10000000"), "{message}");
    assert_eq!(call.stats.fuel_used, limits.fuel);
    assert_still_serving();
}

#[test]
fn an_endless_loop_with_fuel_to_spare_is_stopped_by_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 20,
        ..Limits::default()
    };
    let call = run("loop", &limits);
    expect_failure(&call, FailureKind::Deadline);
    assert!(
        call.stats.duration >= Duration::from_millis(20),
        "{:?}",
        call.stats
    );
    assert!(
        call.stats.duration < Duration::from_secs(2),
        "{:?}",
        call.stats
    );
    assert_still_serving();
}

#[test]
fn a_memory_bomb_is_a_memory_limit_not_a_trap() {
    let limits = Limits::default();
    let call = run("memory-bomb", &limits);
    let message = expect_failure(&call, FailureKind::MemoryLimit);
    assert!(message.contains("16777216"), "{message}");
    assert!(call.stats.peak_memory_bytes <= limits.memory_bytes);
    assert!(call.stats.peak_memory_bytes > limits.memory_bytes / 2);
    assert_still_serving();
}

#[test]
fn deep_recursion_overflows_the_shadow_stack_and_traps_out_of_bounds() {
    // Policies get a 64 KiB shadow stack placed first in linear memory (see
    // fluxpay-policy-build): overflowing it wraps the stack pointer below
    // address 0, and the first store there faults instead of corrupting data.
    let call = run("deep-recursion", &Limits::default());
    let message = expect_failure(&call, FailureKind::Trap);
    assert_eq!(message, "wasm trap: out of bounds memory access");
    assert_still_serving();
}

#[test]
fn a_huge_answer_is_output_too_large() {
    let limits = Limits::default();
    let call = run("huge-output", &limits);
    expect_failure(&call, FailureKind::OutputTooLarge);
    assert!(call.stats.output_bytes > limits.output_bytes);
    assert_still_serving();
}

#[test]
fn a_panic_is_a_trap_that_says_unreachable() {
    let call = run("panic", &Limits::default());
    let message = expect_failure(&call, FailureKind::Trap);
    // Rust's panic=abort on wasm ends in `unreachable`; the wasm backtrace
    // is left out of the message (it goes to the debug log).
    assert_eq!(
        message,
        "wasm trap: wasm `unreachable` instruction executed"
    );
    assert_still_serving();
}

#[test]
fn a_log_flood_is_cut_at_the_log_limit_and_the_call_still_answers() {
    let limits = Limits::default();
    let call = run("log-flood", &limits);
    assert_eq!(call.result.unwrap().total, Amount::Credits(12));
    assert!(call.stats.log_truncated);
    assert_eq!(call.stats.log_bytes, limits.log_bytes);
    assert_still_serving();
}

#[test]
fn an_answer_whose_lines_do_not_add_up_is_invalid_output() {
    let call = run("invalid-output", &Limits::default());
    let message = expect_failure(&call, FailureKind::InvalidOutput);
    assert!(
        message.contains("add up to 3 but the total is 10"),
        "{message}"
    );
    assert_still_serving();
}

#[test]
fn the_policys_own_refusal_is_a_policy_error_not_a_failure() {
    let call = hostile().price(&ctx("ok"), &credit_use("forbidden", 1), &Limits::default());
    match call.result {
        Err(CallError::Policy(PolicyError::Rejected(r))) => assert_eq!(r.code, "unknown-feature"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn check_config_refuses_an_unknown_behaviour_naming_the_field() {
    let limits = Limits::default();
    assert!(
        hostile()
            .check_config(r#"{"behaviour":"ok"}"#, &limits)
            .result
            .is_ok()
    );
    let call = hostile().check_config(r#"{"behaviour":"explode"}"#, &limits);
    match call.result {
        Err(CallError::Policy(PolicyError::InvalidConfig(m))) => {
            assert!(m.contains("behaviour"), "{m}")
        }
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn a_module_importing_wasi_is_refused_at_load_naming_the_import() {
    let err = engine()
        .load_file(&fixtures().wasi, PolicyKind::Pricing, &Limits::default())
        .unwrap_err();
    match &err {
        LoadError::ForbiddenImport { name } => assert!(name.starts_with("wasi:"), "{name}"),
        other => panic!("expected a forbidden import, got {other}"),
    }
    assert!(err.to_string().contains("wasi:"), "{err}");
}

#[test]
fn a_module_bound_as_the_other_world_is_refused() {
    let err = engine()
        .load_file(
            &fixtures().validator,
            PolicyKind::Pricing,
            &Limits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::WrongWorld { expected: PolicyKind::Pricing, found }
            if found.contains("fluxpay:policy/validator@0.1.0")),
        "{err}"
    );
    let err = engine()
        .load_file(
            &fixtures().pricing,
            PolicyKind::Validation,
            &Limits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WrongWorld {
                expected: PolicyKind::Validation,
                ..
            }
        ),
        "{err}"
    );
    // Bound as what it is, it loads and validates.
    let validator = engine()
        .load_file(
            &fixtures().validator,
            PolicyKind::Validation,
            &Limits::default(),
        )
        .unwrap();
    let subject = fluxpay_host::policy::types::ValidationSubject::Usage(vec![]);
    let call = validator.validate(&ctx("ok"), &subject, &Limits::default());
    assert_eq!(call.result.unwrap(), vec![]);
}

#[test]
fn asking_a_policy_for_the_other_kind_of_call_is_unsupported() {
    let subject = fluxpay_host::policy::types::ValidationSubject::Usage(vec![]);
    let call = hostile().validate(&ctx("ok"), &subject, &Limits::default());
    assert!(matches!(
        call.result,
        Err(CallError::Policy(PolicyError::Unsupported(_)))
    ));
}

#[test]
fn an_oversize_module_is_refused_before_compiling() {
    let limits = Limits {
        module_bytes: 1024,
        ..Limits::default()
    };
    let err = engine()
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
    let bytes = std::fs::read(&fixtures().pricing).unwrap();
    let err = engine()
        .load(&bytes, PolicyKind::Pricing, &limits)
        .unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[test]
fn an_input_over_the_limit_is_refused_before_the_policy_runs() {
    let limits = Limits::default();
    let mut big = ctx("ok");
    big.customer_attributes = vec![("note".into(), "x".repeat(70 * 1024))];
    let call = hostile().price(&big, &credit_use("render", 1), &limits);
    expect_failure(&call, FailureKind::InputTooLarge);
    assert_eq!(call.stats.fuel_used, 0);
    assert!(call.stats.input_bytes > limits.input_bytes);
    assert_still_serving();
}

#[test]
fn the_same_input_gives_the_same_answer_and_fuel_in_every_fresh_instance() {
    let limits = Limits::default();
    let first = run("ok", &limits);
    for _ in 0..200 {
        let again = run("ok", &limits);
        assert_eq!(again.result, first.result);
        assert_eq!(again.stats.fuel_used, first.stats.fuel_used);
        assert_eq!(again.stats.peak_memory_bytes, first.stats.peak_memory_bytes);
        assert_eq!(again.stats.output_bytes, first.stats.output_bytes);
    }
}

#[test]
fn a_lower_fuel_override_makes_an_ok_call_run_out_of_fuel() {
    let limits = Limits::default().with(&LimitsOverride {
        fuel: Some(1_000),
        ..Default::default()
    });
    expect_failure(&run("ok", &limits), FailureKind::OutOfFuel);
    assert_still_serving();
}

#[test]
fn a_memory_override_below_the_modules_initial_memory_fails_at_instantiation() {
    let limits = Limits::default().with(&LimitsOverride {
        memory_bytes: Some(64 * 1024),
        ..Default::default()
    });
    expect_failure(&run("ok", &limits), FailureKind::MemoryLimit);
    assert_still_serving();
}

#[test]
fn a_second_engine_on_the_same_artifact_dir_loads_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let settings = EngineSettings {
        artifact_dir: Some(dir.path().to_owned()),
        max_concurrent_instances: 4,
        ..EngineSettings::default()
    };
    let limits = Limits::default();

    let first = PolicyEngine::new(settings.clone()).unwrap();
    let policy = first
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap();
    assert_eq!(policy.artifact_source(), ArtifactSource::Compiled);
    assert_eq!(first.stats().compiled, 1);
    drop((policy, first));

    let second = PolicyEngine::new(settings.clone()).unwrap();
    let policy = second
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap();
    assert_eq!(policy.artifact_source(), ArtifactSource::Cached);
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().artifacts_loaded, 1);
    let call = policy.price(&ctx("ok"), &credit_use("render", 4), &limits);
    assert_eq!(call.result.unwrap().total, Amount::Credits(12));

    // A corrupt artifact is recompiled and replaced, never fatal.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not an artifact").unwrap();
    }
    let third = PolicyEngine::new(settings.clone()).unwrap();
    let policy = third
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap();
    assert_eq!(policy.artifact_source(), ArtifactSource::Compiled);
    assert_eq!(third.stats().artifacts_rejected, 1);
    let call = policy.price(&ctx("ok"), &credit_use("render", 4), &limits);
    assert_eq!(call.result.unwrap().total, Amount::Credits(12));
    let fourth = PolicyEngine::new(settings).unwrap();
    let policy = fourth
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap();
    assert_eq!(policy.artifact_source(), ArtifactSource::Cached);
}

#[test]
fn a_call_that_finds_every_instance_slot_busy_is_overloaded() {
    let engine = PolicyEngine::new(EngineSettings {
        max_concurrent_instances: 1,
        ..EngineSettings::default()
    })
    .unwrap();
    let policy = engine
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &Limits::default())
        .unwrap();
    let slow = Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 3_000,
        ..Limits::default()
    };
    let busy = {
        let policy = policy.clone();
        // Retried while our own probing calls below hold the slot.
        std::thread::spawn(move || {
            loop {
                let call = policy.price(&ctx("loop"), &credit_use("render", 1), &slow);
                if call.failure().map(|f| f.kind) != Some(FailureKind::Overloaded) {
                    break call;
                }
            }
        })
    };
    // Until the looping call holds the only slot, a good call may still get
    // it; once it does, every other call is refused rather than queued.
    let refused = loop {
        let call = policy.price(&ctx("ok"), &credit_use("render", 1), &Limits::default());
        if call.failure().is_some() || busy.is_finished() {
            break call;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    expect_failure(&refused, FailureKind::Overloaded);
    expect_failure(&busy.join().unwrap(), FailureKind::Deadline);
    let call = policy.price(&ctx("ok"), &credit_use("render", 1), &Limits::default());
    assert!(call.result.is_ok(), "{:?}", call.result);
}

#[test]
fn many_threads_share_one_engine_while_others_misbehave() {
    let threads: Vec<_> = ["ok", "loop", "ok", "memory-bomb", "ok", "panic"]
        .into_iter()
        .map(|behaviour| {
            std::thread::spawn(move || {
                // A generous wall-clock backstop: on a loaded 2-core machine
                // a good call can wait longer than the 50 ms production
                // deadline for a core; fuel still stops the loops.
                let limits = Limits {
                    deadline_ms: 5_000,
                    ..Limits::default()
                };
                for _ in 0..20 {
                    let call = run(behaviour, &limits);
                    assert_eq!(call.result.is_ok(), behaviour == "ok", "{behaviour}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn with_signal_based_traps_the_same_misbehaviour_fails_the_same_way() {
    let engine = PolicyEngine::new(EngineSettings {
        signals_based_traps: true,
        max_concurrent_instances: 4,
        ..EngineSettings::default()
    })
    .unwrap();
    let limits = Limits::default();
    let policy = engine
        .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
        .unwrap();
    let run = |behaviour| policy.price(&ctx(behaviour), &credit_use("render", 4), &limits);
    expect_failure(&run("loop"), FailureKind::OutOfFuel);
    expect_failure(&run("memory-bomb"), FailureKind::MemoryLimit);
    let message = expect_failure(&run("deep-recursion"), FailureKind::Trap);
    assert!(
        message.ends_with("wasm trap: out of bounds memory access"),
        "{message}"
    );
    expect_failure(&run("panic"), FailureKind::Trap);
    assert_eq!(run("ok").result.unwrap().total, Amount::Credits(12));
}
