//! Command line: `serve`, and the policy author's `policy check` / `policy run`.

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
    /// Run the service (admin API, policy hot reload).
    Serve(serve::ServeArgs),
    /// Policy author tools: check a module, run it under production limits.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

/// Run a parsed command line; the exit code tells scripts what happened.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Policy(cmd) => policy::run(cmd),
    }
}
