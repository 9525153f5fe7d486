//! `fluxpay-host policy check|run`, run as the real binary: what it prints
//! and the exit codes scripts rely on (0 ok, 1 refused, 2 usage, 3 failed).

mod hostile;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hostile::fixtures;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running fluxpay-host")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_pricing(extra: &[&str]) -> Output {
    let module = fixtures().pricing.to_str().unwrap().to_owned();
    let input = data("credit-use.json");
    let mut args = vec!["policy", "run", &module, "--kind", "pricing"];
    args.extend(["--input", input.to_str().unwrap()]);
    args.extend(extra);
    host(&args)
}

#[test]
fn check_prints_the_outline_and_accepts_a_pure_module() {
    let out = host(&["policy", "check", fixtures().pricing.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("world     pricing (fluxpay:policy/pricer@0.1.0)"),
        "{text}"
    );
    assert!(text.contains("fluxpay:policy/host@0.1.0  ok"), "{text}");
    assert!(text.contains("of 4.0 MiB limit"), "{text}");
    assert!(
        text.contains("result    ok: loads as a pricing policy"),
        "{text}"
    );
}

#[test]
fn check_refuses_a_wasi_module_and_marks_the_import() {
    let out = host(&["policy", "check", fixtures().wasi.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FORBIDDEN"), "{text}");
    assert!(
        text.contains("result    refused: module imports `wasi:"),
        "{text}"
    );
}

#[test]
fn run_prints_the_answer_and_the_usage_table() {
    let out = run_pricing(&[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(r#""Credits": 12"#), "{text}");
    for row in [
        "fuel",
        "memory (peak)",
        "duration",
        "input",
        "output",
        "module",
        "log",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(row)),
            "no {row} row in {text}"
        );
    }
    assert!(text.contains("10,000,000"), "{text}");
}

#[test]
fn run_as_json_reports_stats_and_limits() {
    let out = run_pricing(&["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"]["total"]["Credits"], 12);
    assert!(json["stats"]["fuel_used"].as_u64().unwrap() > 0);
    assert_eq!(json["limits"]["fuel"], 10_000_000);
}

#[test]
fn run_exits_3_when_the_sandbox_stops_the_policy() {
    let config = data("loop.yaml");
    let out = run_pricing(&["--config", config.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains(r#""kind": "out_of_fuel""#), "{text}");
}

#[test]
fn run_applies_a_limits_file() {
    let limits = data("low-fuel.yaml");
    let out = run_pricing(&["--limits", limits.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("out_of_fuel"), "{text}");
}

#[test]
fn run_exits_1_when_the_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.json");
    std::fs::write(&config, r#"{"behaviour": "explode"}"#).unwrap();
    let out = run_pricing(&["--config", config.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("InvalidConfig"), "{text}");
}

#[test]
fn run_validates_with_a_validation_module() {
    let input = data("usage-batch.json");
    let out = host(&[
        "policy",
        "run",
        fixtures().validator.to_str().unwrap(),
        "--kind",
        "validation",
        "--input",
        input.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("[]"), "{text}");
}

#[test]
fn run_exits_2_on_a_missing_input_file() {
    let out = host(&[
        "policy",
        "run",
        fixtures().pricing.to_str().unwrap(),
        "--kind",
        "pricing",
        "--input",
        "/nonexistent/input.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/input.json"));
}
