//! `fluxpay-host policy check|run`: the policy author's local runner. It
//! loads a module exactly as the service does and runs it under the
//! production limits, printing what it used beside each limit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::policy::{
    CallError, CallStats, EngineSettings, Limits, LimitsOverride, LoadError, LoadedPolicy,
    ModuleInfo, PolicyEngine, PolicyKind, types,
};

/// The call answered: a quote, or a validation without violations.
const EXIT_OK: u8 = 0;
/// The policy refused: its own error, violations, or (`check`) a refused module.
const EXIT_REJECTED: u8 = 1;
/// The sandbox stopped the policy, or `run` could not load it.
const EXIT_FAILED: u8 = 3;

/// Policy author tools.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Build a policy crate into a component: `cargo build` for
    /// wasm32-unknown-unknown, then wrapped with wit-component. Prints the
    /// path of the `.wasm` written (`<workspace>/target/policies/<package>.wasm`
    /// unless `--out-dir` says otherwise).
    Build(BuildArgs),
    /// Check that a module would load: world, imports, exports and size
    /// against the limit. Exit 0 when it loads, 1 when it is refused.
    Check(CheckArgs),
    /// Run a module once under the production limits; print its answer and
    /// the fuel, memory, time and sizes it used against each limit.
    ///
    /// The input file is JSON in the shape of the host's types:
    /// `{"context": {"tenant_id": "t", "customer_id": "c",
    /// "customer_attributes": [["tier", "gold"]], "now_ms": 0, "config": {}},
    /// "request": {"CreditUsage": {"feature": "render", "units": 3,
    /// "metadata": []}}}` for pricing, or `{"context": …, "subject": {"Order":
    /// {…}}}` for validation. Context fields may be left out (tenant and
    /// customer default to "local", now_ms to 0); `config` is a JSON object
    /// or JSON text, and `--config` replaces it.
    ///
    /// Exit 0: answered (validation: no violations); 1: the policy refused
    /// (its own error or violations); 3: the sandbox stopped it or it did not
    /// load; 2: bad arguments or files.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The policy crate's directory (the one with its Cargo.toml).
    crate_dir: PathBuf,
    /// Where to write the component.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component file.
    module: PathBuf,
    /// The kind it must be; by default whatever it exports.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// A YAML file of limit overrides (`fuel:`, `memory_bytes:`, …).
    #[arg(long)]
    limits: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component file.
    module: PathBuf,
    /// Which world to call.
    #[arg(long, value_enum)]
    kind: KindArg,
    /// The call's input (JSON; see above).
    #[arg(long)]
    input: PathBuf,
    /// The policy's config block (YAML or JSON); replaces `context.config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A YAML file of limit overrides (`fuel:`, `memory_bytes:`, …).
    #[arg(long)]
    limits: Option<PathBuf>,
    /// Print one JSON object (result, stats, limits) instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Pricing,
    Validation,
}

impl From<KindArg> for PolicyKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Pricing => PolicyKind::Pricing,
            KindArg::Validation => PolicyKind::Validation,
        }
    }
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Build(args) => build(args),
        PolicyCommand::Check(args) => check(args),
        PolicyCommand::Run(args) => run_once(args),
    }
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let manifest = args.crate_dir.join("Cargo.toml");
    // Cargo knows the package name and the workspace it belongs to (a
    // standalone crate is its own workspace); ask it rather than parse TOML.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .with_context(|| format!("running cargo metadata for {}", manifest.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "cargo metadata for {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest_abs = std::path::absolute(&manifest)?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest_abs.as_path()))
        .and_then(|p| p["name"].as_str())
        .with_context(|| format!("{} does not define a package", manifest.display()))?;
    let root = PathBuf::from(
        metadata["workspace_root"]
            .as_str()
            .context("cargo metadata has no workspace_root")?,
    );
    let mut build = fluxpay_policy_build::Build::in_workspace(&root, package);
    if let Some(out_dir) = args.out_dir {
        build = build.out_dir(out_dir);
    }
    let path = build.run()?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    let limits = read_limits(args.limits.as_deref())?;
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("reading {}", args.module.display()))?;
    let engine = local_engine(&limits)?;
    println!("module    {}", args.module.display());
    println!(
        "size      {} of {} limit",
        bytes_h(bytes.len() as u64),
        bytes_h(limits.module_bytes)
    );
    let info = match engine.inspect(&bytes) {
        Ok(info) => info,
        Err(err) => return Ok(refused(&err)),
    };
    print_outline(&info);
    let Some(kind) = args
        .kind
        .map(PolicyKind::from)
        .or(info.worlds.first().copied())
    else {
        return Ok(refused(&LoadError::WrongWorld {
            expected: PolicyKind::Pricing,
            found: "it exports neither fluxpay:policy/pricer nor fluxpay:policy/validator".into(),
        }));
    };
    let started = Instant::now();
    match engine.load(&bytes, kind, &limits) {
        Ok(_) => {
            println!(
                "result    ok: loads as a {kind} policy (compiled in {} ms)",
                started.elapsed().as_millis()
            );
            Ok(ExitCode::from(EXIT_OK))
        }
        Err(err) => Ok(refused(&err)),
    }
}

fn print_outline(info: &ModuleInfo) {
    println!("sha256    {}", info.content_hash);
    let worlds: Vec<_> = info
        .worlds
        .iter()
        .map(|k| format!("{k} ({})", k.export_name()))
        .collect();
    println!(
        "world     {}",
        if worlds.is_empty() {
            "none".into()
        } else {
            worlds.join(", ")
        }
    );
    let forbidden: Vec<_> = info.forbidden_imports().collect();
    for (i, import) in info.imports.iter().enumerate() {
        let label = if i == 0 { "imports" } else { "" };
        let verdict = if forbidden.contains(&import.as_str()) {
            "FORBIDDEN"
        } else {
            "ok"
        };
        println!("{label:<9} {import}  {verdict}");
    }
    for (i, export) in info.exports.iter().enumerate() {
        let label = if i == 0 { "exports" } else { "" };
        println!("{label:<9} {export}");
    }
}

fn refused(err: &LoadError) -> ExitCode {
    println!("result    refused: {err}");
    ExitCode::from(EXIT_REJECTED)
}

fn run_once(args: RunArgs) -> Result<ExitCode> {
    let kind = PolicyKind::from(args.kind);
    let limits = read_limits(args.limits.as_deref())?;
    let input_text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let config = args.config.as_deref().map(read_config).transpose()?;
    let engine = local_engine(&limits)?;
    let policy = match engine.load_file(&args.module, kind, &limits) {
        Ok(policy) => policy,
        Err(LoadError::Io { path, source }) => {
            return Err(source).with_context(|| format!("reading {}", path.display()));
        }
        Err(err) => {
            eprintln!("error: {} was not loaded: {err}", args.module.display());
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };

    let (outcome, stats) = match kind {
        PolicyKind::Pricing => {
            let input: PricingInput = parse_input(&input_text, &args.input)?;
            let ctx = input.context.into_context(config)?;
            if let Some(code) = reject_config(&policy, &ctx, &limits, args.json)? {
                return Ok(code);
            }
            let call = policy.price(&ctx, &input.request, &limits);
            (
                outcome_of(call.result, |q| Ok((serde_json::to_value(q)?, true)))?,
                call.stats,
            )
        }
        PolicyKind::Validation => {
            let input: ValidationInput = parse_input(&input_text, &args.input)?;
            let ctx = input.context.into_context(config)?;
            if let Some(code) = reject_config(&policy, &ctx, &limits, args.json)? {
                return Ok(code);
            }
            let call = policy.validate(&ctx, &input.subject, &limits);
            (
                outcome_of(call.result, |v| {
                    Ok((serde_json::to_value(&v)?, v.is_empty()))
                })?,
                call.stats,
            )
        }
    };
    report(&outcome, &stats, &limits, &policy, args.json)?;
    Ok(ExitCode::from(outcome.exit_code))
}

/// What `run` prints as the answer, and the exit code it implies.
struct Outcome {
    json: serde_json::Value,
    exit_code: u8,
}

fn outcome_of<T>(
    result: Result<T, CallError>,
    answer: impl FnOnce(T) -> Result<(serde_json::Value, bool)>,
) -> Result<Outcome> {
    Ok(match result {
        Ok(value) => {
            let (json, passed) = answer(value)?;
            let exit_code = if passed { EXIT_OK } else { EXIT_REJECTED };
            Outcome { json, exit_code }
        }
        Err(CallError::Policy(e)) => Outcome {
            json: serde_json::json!({ "policy_error": e }),
            exit_code: EXIT_REJECTED,
        },
        Err(CallError::Failed(f)) => Outcome {
            json: serde_json::json!({ "failure": f }),
            exit_code: EXIT_FAILED,
        },
    })
}

/// Run `check-config` first, as the service does at load; print and return
/// the exit code when the config is refused or the check itself fails.
fn reject_config(
    policy: &LoadedPolicy,
    ctx: &types::Context,
    limits: &Limits,
    json: bool,
) -> Result<Option<ExitCode>> {
    let call = policy.check_config(&ctx.config, limits);
    if call.result.is_ok() {
        return Ok(None);
    }
    let outcome = outcome_of(call.result, |()| Ok((serde_json::Value::Null, true)))?;
    eprintln!("check-config refused the config:");
    report(&outcome, &call.stats, limits, policy, json)?;
    Ok(Some(ExitCode::from(outcome.exit_code)))
}

fn report(
    outcome: &Outcome,
    stats: &CallStats,
    limits: &Limits,
    policy: &LoadedPolicy,
    json: bool,
) -> Result<()> {
    if json {
        let all = serde_json::json!({
            "result": outcome.json,
            "stats": {
                "fuel_used": stats.fuel_used,
                "peak_memory_bytes": stats.peak_memory_bytes,
                "duration_us": stats.duration.as_micros() as u64,
                "input_bytes": stats.input_bytes,
                "output_bytes": stats.output_bytes,
                "module_bytes": policy.size_bytes(),
                "log_bytes": stats.log_bytes,
                "log_truncated": stats.log_truncated,
            },
            "limits": limits,
        });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&outcome.json)?);
    println!();
    print!("{}", stats_table(stats, limits, policy.size_bytes()));
    Ok(())
}

/// The function-runner table: what the call used beside each limit.
fn stats_table(stats: &CallStats, limits: &Limits, module_bytes: u64) -> String {
    let duration_us = stats.duration.as_micros() as u64;
    let rows = [
        (
            "fuel",
            thousands(stats.fuel_used),
            thousands(limits.fuel),
            stats.fuel_used,
            limits.fuel,
        ),
        (
            "memory (peak)",
            bytes_h(stats.peak_memory_bytes),
            bytes_h(limits.memory_bytes),
            stats.peak_memory_bytes,
            limits.memory_bytes,
        ),
        (
            "duration",
            format!("{:.3} ms", duration_us as f64 / 1000.0),
            format!("{} ms", limits.deadline_ms),
            duration_us,
            limits.deadline_ms * 1000,
        ),
        (
            "input",
            bytes_h(stats.input_bytes),
            bytes_h(limits.input_bytes),
            stats.input_bytes,
            limits.input_bytes,
        ),
        (
            "output",
            bytes_h(stats.output_bytes),
            bytes_h(limits.output_bytes),
            stats.output_bytes,
            limits.output_bytes,
        ),
        (
            "module",
            bytes_h(module_bytes),
            bytes_h(limits.module_bytes),
            module_bytes,
            limits.module_bytes,
        ),
        (
            if stats.log_truncated {
                "log (truncated)"
            } else {
                "log"
            },
            bytes_h(stats.log_bytes),
            bytes_h(limits.log_bytes),
            stats.log_bytes,
            limits.log_bytes,
        ),
    ];
    let mut out = format!("{:<16} {:>14} {:>14} {:>7}\n", "", "used", "limit", "");
    for (name, used, limit, u, l) in rows {
        let pct = if l == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}%", u as f64 * 100.0 / l as f64)
        };
        out.push_str(&format!("{name:<16} {used:>14} {limit:>14} {pct:>7}\n"));
    }
    out
}

/// `run`'s input file: the host's types, with a forgiving context.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingInput {
    #[serde(default)]
    context: ContextInput,
    request: types::PricingRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidationInput {
    #[serde(default)]
    context: ContextInput,
    subject: types::ValidationSubject,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextInput {
    tenant_id: Option<String>,
    /// A JSON object, or the JSON text itself (the wire shape).
    config: Option<serde_json::Value>,
    customer_id: Option<String>,
    #[serde(default)]
    customer_attributes: Vec<(String, String)>,
    #[serde(default)]
    now_ms: i64,
}

impl ContextInput {
    fn into_context(self, config_override: Option<String>) -> Result<types::Context> {
        let config = match (config_override, self.config) {
            (Some(text), _) => text,
            (None, Some(serde_json::Value::String(text))) => text,
            (None, Some(value)) => serde_json::to_string(&value)?,
            (None, None) => "{}".to_owned(),
        };
        Ok(types::Context {
            tenant_id: self.tenant_id.unwrap_or_else(|| "local".into()),
            config,
            customer_id: self.customer_id.unwrap_or_else(|| "local".into()),
            customer_attributes: self.customer_attributes,
            now_ms: self.now_ms,
        })
    }
}

fn parse_input<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T> {
    serde_json::from_str(text).with_context(|| format!("parsing the input file {}", path.display()))
}

/// A config file (YAML or JSON: YAML reads both) as JSON text.
fn read_config(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing the config file {}", path.display()))?;
    Ok(serde_json::to_string(&value)?)
}

fn read_limits(path: Option<&Path>) -> Result<Limits> {
    let Some(path) = path else {
        return Ok(Limits::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let o: LimitsOverride = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing the limits file {}", path.display()))?;
    Ok(Limits::default().with(&o))
}

/// A small engine sized for one call at a time, with room for the limits.
fn local_engine(limits: &Limits) -> Result<PolicyEngine> {
    let defaults = EngineSettings::default();
    let engine = PolicyEngine::new(EngineSettings {
        max_concurrent_instances: 2,
        max_memory_bytes: defaults.max_memory_bytes.max(limits.memory_bytes),
        ..defaults
    })?;
    limits
        .validate(engine.settings().max_memory_bytes)
        .map_err(anyhow::Error::msg)?;
    Ok(engine)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes_h(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} B")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_for_humans() {
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(bytes_h(512), "512 B");
        assert_eq!(bytes_h(64 * 1024), "64.0 KiB");
        assert_eq!(bytes_h(16 * 1024 * 1024), "16.0 MiB");
    }

    #[test]
    fn an_input_context_may_leave_fields_out_and_give_config_as_an_object() {
        let input: PricingInput = serde_json::from_str(
            r#"{"context": {"config": {"rate": 3}},
                "request": {"CreditUsage": {"feature": "f", "units": 2, "metadata": []}}}"#,
        )
        .unwrap();
        let ctx = input.context.into_context(None).unwrap();
        assert_eq!(ctx.config, r#"{"rate":3}"#);
        assert_eq!(ctx.tenant_id, "local");
        let ctx = ContextInput::default()
            .into_context(Some("{}".into()))
            .unwrap();
        assert_eq!(ctx.config, "{}");
    }

    #[test]
    fn the_table_shows_each_limit_and_the_share_used() {
        let stats = CallStats {
            fuel_used: 1_000_000,
            ..Default::default()
        };
        let table = stats_table(&stats, &Limits::default(), 32 * 1024);
        assert!(table.contains("1,000,000"), "{table}");
        assert!(table.contains("10.0%"), "{table}");
        assert!(table.contains("module"), "{table}");
    }
}
