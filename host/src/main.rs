//! `fluxpay-host`: thin entry point; everything lives in the library.

use clap::Parser;

// Requests allocate and free many small buffers on two threads; glibc's
// malloc spent ~10 % of the host's CPU on `credits/use` (BENCHMARKS.md).
// With the crate's `override` feature it also serves C's malloc, so
// SQLite's allocations on the writer go through it as well.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
