//! Command line: `serve`, `migrate`, `audit`, and the policy author's
//! `policy check` / `policy run`.

mod audit;
mod migrate;
mod pg_sim;
mod policy;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Exit code for a command that could not do its job (bad arguments, I/O).
pub const EXIT_ERROR: u8 = 2;

/// FluxPay host engine.
#[derive(Debug, Parser)]
#[command(name = "fluxpay-host", version, about)]
pub struct Cli {
    /// Log format: `pretty` for development, `json` for production.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "FLUXPAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (tenant API, admin API, policy hot reload).
    Serve(serve::ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(migrate::MigrateArgs),
    /// Check that the books balance; exit 1 with a report if not.
    Audit(audit::AuditArgs),
    /// Policy author tools: check a module, run it under production limits.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the bundled payment-gateway simulator (Toss-Payments-style API).
    PgSim(pg_sim::PgSimArgs),
}

/// Run a parsed command line; the exit code tells scripts what happened.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::PgSim(args) => pg_sim::run(args),
    }
}

/// The database section of a config file, `FLUXPAY_DATABASE_URL` applied.
fn database_config(path: &std::path::Path) -> anyhow::Result<crate::config::DatabaseConfig> {
    migrate::load_database(path)
}

/// A runtime for the database commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("starting the async runtime: {err}"))
}
