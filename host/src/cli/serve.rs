//! `fluxpay-host serve`: config → engine → registry → watcher → HTTP server.
//!
//! The listener is bound before the policies load, so `/health/live` answers
//! at once and `/health/ready` turns 200 when the first snapshot is
//! published. A configuration that does not load at start-up stops the
//! process with every problem listed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::api::{self, admin::AdminState, admin::AdminToken};
use crate::policy::registry::Registry;
use crate::policy::reload::{Reloader, Trigger, watch};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The tenants/policies YAML file (see examples/tenants.yaml).
    #[arg(long, env = "FLUXPAY_CONFIG")]
    pub config: PathBuf,
    /// The address to listen on (port 0 picks a free port; the chosen
    /// address is printed on stdout).
    #[arg(long, env = "FLUXPAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Run the service until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fluxpay-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let registry = Arc::new(Registry::new());
    let reloader = Arc::new(Reloader::new(&args.config, registry)?);

    let token = AdminToken::from_env();
    if token.is_none() {
        tracing::warn!(
            "serve.admin_disabled: {} is not set; the admin API answers 503 until it is set and the host restarted",
            api::admin::ADMIN_TOKEN_ENV
        );
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, config = %args.config.display(), "serve.listening");
    // On stdout for scripts and tests that pass port 0.
    println!("fluxpay-host listening on http://{addr}");

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = api::router(AdminState::new(reloader.clone(), token));
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal(stop_rx))
            .into_future(),
    );

    let startup = {
        let reloader = reloader.clone();
        tokio::task::spawn_blocking(move || reloader.reload(Trigger::Startup))
    };
    match startup.await.context("startup load task")? {
        Ok(report) => tracing::info!(
            snapshot_version = report.commit.snapshot_version,
            bindings = report.commit.bindings.len(),
            duration_ms = report.duration_ms,
            "serve.ready"
        ),
        Err(failure) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            anyhow::bail!("the configuration cannot be loaded: {}", failure.errors);
        }
    }

    let _watcher = watch::watch(reloader, watch::DEFAULT_DEBOUNCE)?;
    server
        .await
        .context("server task")?
        .context("serving HTTP")?;
    tracing::info!("serve.stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C, SIGTERM, or `stop`.
async fn shutdown_signal(stop: oneshot::Receiver<()>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "serve.cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("serve.shutdown: Ctrl-C"),
        _ = terminate => tracing::info!("serve.shutdown: SIGTERM"),
        _ = stop => {}
    }
}
