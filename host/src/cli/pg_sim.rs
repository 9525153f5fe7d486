//! `fluxpay-host pg-sim`: the bundled PG simulator as a process of its own
//! ([`crate::gateway::simulator`]): the Toss-Payments-style API on a
//! loopback address, for trying payments by hand and for tests that run
//! FluxPay against a PG over real HTTP.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::Secret;
use crate::gateway::simulator::Simulator;

/// Arguments of `pg-sim`.
#[derive(Debug, clap::Args)]
pub struct PgSimArgs {
    /// The address to listen on (port 0 picks a free one; the chosen
    /// address is printed on stdout).
    #[arg(long, env = "FLUXPAY_PG_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The environment variable holding the secret key it accepts
    /// (`Authorization: Basic base64("<key>:")`).
    #[arg(long, default_value = "FLUXPAY_PG_SIM_SECRET_KEY")]
    pub secret_env: String,
    /// Seed of its latency draws, so a run with injected latency repeats.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to send status-change notifications (the merchant's webhook,
    /// e.g. `http://127.0.0.1:8080/pg/v1/notifications/<tenant>`).
    #[arg(long, env = "FLUXPAY_PG_SIM_NOTIFY_URL")]
    pub notify_url: Option<String>,
}

/// Serves until Ctrl-C or SIGTERM.
pub fn run(args: PgSimArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "pg-sim listens on loopback addresses only (127.0.0.1, ::1), not {}",
            args.listen
        );
    }
    let secret = Secret::from_env(&args.secret_env).with_context(|| {
        format!(
            "the simulator's secret key: set {} (e.g. test_sk_…)",
            args.secret_env
        )
    })?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        println!("fluxpay pg-sim listening on http://{addr}");
        let simulator = Simulator::new(secret.expose(), args.seed);
        simulator.set_notify_url(args.notify_url);
        axum::serve(listener, simulator.router())
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")?;
        Ok(ExitCode::SUCCESS)
    })
}
