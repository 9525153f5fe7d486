//! `fluxpay-host`: thin entry point; everything lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fluxpay_host::cli::Cli::parse();
    fluxpay_host::telemetry::init(cli.log_format);
    match fluxpay_host::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(fluxpay_host::cli::EXIT_ERROR)
        }
    }
}
