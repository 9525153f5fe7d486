//! `fluxpay-host serve`: config → database (migrated) → engine → registry →
//! watcher → HTTP server, plus the maintenance tasks (feed sequencer,
//! idempotency purge).
//!
//! The database is opened and migrated first: a host that cannot reach it
//! does not start. The listener is bound before the policies load, so
//! `/health/live` answers at once and `/health/ready` turns 200 when the
//! first snapshot is published (and the database answers). A configuration
//! that does not load at start-up stops the process with every problem
//! listed. Tenant API keys and signing secrets are read here, once: a
//! reload changes policies, a restart changes keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::api::{self, admin::AdminState, admin::AdminToken};
use crate::app::payments::Gateways;
use crate::app::{App, TenantDirectory, system_clock};
use crate::config::{self, GatewayKind, Secret};
use crate::events::kafka::KafkaRelay;
use crate::events::webhook::WebhookRelay;
use crate::gateway::resilient::ResilientGateway;
use crate::gateway::simulator::Simulator;
use crate::gateway::toss::{TossConfig, TossGateway};
use crate::policy::registry::Registry;
use crate::policy::reload::{Reloader, Trigger, watch};
use crate::store::{Maintenance, Store};

/// How often committed outbox events get their feed positions (PostgreSQL).
const FEED_INTERVAL: Duration = Duration::from_millis(250);
/// How often expired idempotency records are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often due subscriptions are renewed, activated or expired.
const SUBSCRIPTION_INTERVAL: Duration = Duration::from_secs(5);
/// How often grants past their `expiresAt` lose their unspent credits (the
/// longest a lapsed grant stays spendable).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
/// How often payments whose PG outcome is unknown are checked for due
/// status queries (the schedule itself is `CHECK_SCHEDULE_MS`).
const PAYMENT_JANITOR_INTERVAL: Duration = Duration::from_secs(2);

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
    let config = config::load(&args.config)
        .map_err(|errors| anyhow::anyhow!("the configuration cannot be loaded: {errors}"))?;
    let tenants = TenantDirectory::from_config(&config, &|name| std::env::var(name).ok())
        .map_err(|errors| anyhow::anyhow!("the tenants cannot be served: {errors}"))?;
    let database = config
        .database
        .clone()
        .with_env_override()
        .map_err(|err| anyhow::anyhow!(err))?;
    let store = Store::open(&database)
        .await
        .with_context(|| format!("opening the database {:?}", database.url))?;
    tracing::info!(backend = store.backend(), url = ?database.url, "serve.database_ready");

    let registry = Arc::new(Registry::new());
    let reloader = Arc::new(Reloader::new(&args.config, registry.clone())?);
    let app = App::new(store.clone(), registry, tenants, system_clock());
    let (gateways, simulator) = gateways(&config).await?;
    app.set_gateways(gateways);
    app.set_payment_settings(payment_settings(&config));

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
    if let Some((simulator, tenants)) = simulator {
        notify_to(&simulator, &tenants, addr);
    }

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = api::service(AdminState::new(reloader.clone(), token), app.clone());
    let maintenance = tokio::spawn(maintenance(
        app.clone(),
        database.idempotency_retention_hours,
        (database.outbox_retention_days, config.kafka.is_some()),
    ));
    let relay = match &config.kafka {
        Some(kafka) => {
            let relay = KafkaRelay::new(
                kafka.clone(),
                format!("{}-{}", std::process::id(), crate::app::new_id("relay")),
                &|name| std::env::var(name).ok(),
            )
            .map_err(|err| anyhow::anyhow!(err))?;
            tracing::info!(owner = relay.owner(), brokers = %kafka.brokers, "serve.kafka_relay");
            let relay = Arc::new(relay);
            Some((
                relay.clone(),
                tokio::spawn(crate::events::kafka::run(app.clone(), relay)),
            ))
        }
        None => None,
    };
    let webhooks = if app.tenants().iter().any(|t| t.webhook.is_some()) {
        let relay = WebhookRelay::new(
            config.webhooks,
            format!("{}-{}", std::process::id(), crate::app::new_id("hooks")),
        )
        .context("the webhook client cannot be created")?;
        tracing::info!(owner = relay.owner(), "serve.webhook_relay");
        let relay = Arc::new(relay);
        Some((
            relay.clone(),
            tokio::spawn(crate::events::webhook::run(app.clone(), relay)),
        ))
    } else {
        None
    };
    let server = tokio::spawn(
        axum::serve(listener, router)
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
            maintenance.abort();
            store.close().await;
            anyhow::bail!("the configuration cannot be loaded: {}", failure.errors);
        }
    }

    let _watcher = watch::watch(reloader, watch::DEFAULT_DEBOUNCE)?;
    let served = server.await;
    maintenance.abort();
    if let Some((relay, task)) = relay {
        task.abort();
        let _ = task.await;
        // Another host takes this one's tenants over at once.
        relay.release(&app).await;
    }
    if let Some((relay, task)) = webhooks {
        task.abort();
        let _ = task.await;
        relay.release(&app).await;
    }
    // Every acknowledged write is committed; closing checkpoints SQLite.
    store.close().await;
    served.context("server task")?.context("serving HTTP")?;
    tracing::info!("serve.stopped");
    Ok(ExitCode::SUCCESS)
}

/// Background housekeeping: number committed outbox events for the feed
/// (PostgreSQL; SQLite numbers at insert), purge idempotency records and
/// published outbox events past their retention, expire lapsed credit
/// grants, and move due subscriptions on (renew, end trials, expire).
async fn maintenance(app: App, retention_hours: u32, (outbox_days, kafka): (u32, bool)) {
    let store = app.store().clone();
    let mut feed = tokio::time::interval(FEED_INTERVAL);
    feed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut purge = tokio::time::interval(PURGE_INTERVAL);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut subscriptions = tokio::time::interval(SUBSCRIPTION_INTERVAL);
    subscriptions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut janitor = tokio::time::interval(PAYMENT_JANITOR_INTERVAL);
    janitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sequenced = matches!(store, Store::Postgres(_));
    loop {
        tokio::select! {
            _ = subscriptions.tick() => {
                match app.run_subscription_scheduler(app.now()).await {
                    Ok(summary) if summary.changed_any() => {
                        tracing::info!(?summary, "serve.subscriptions_scheduled")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "serve.subscription_scheduler_failed"),
                }
            }
            _ = feed.tick(), if sequenced => {
                if let Err(err) = store.sequence_feed().await {
                    tracing::warn!(error = %err, "serve.feed_sequencer_failed");
                }
            }
            _ = purge.tick() => {
                // Outbox retention: what every sink has published, past the
                // window.
                let sinks: &[&str] = if kafka { &[crate::events::kafka::SINK] } else { &[] };
                match app.prune_outbox(app.now(), i64::from(outbox_days) * 86_400_000, sinks).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(pruned = n, "serve.outbox_pruned"),
                    Err(err) => tracing::warn!(error = %err, "serve.outbox_prune_failed"),
                }
                let before = app.now() - i64::from(retention_hours) * 3_600_000;
                for tenant in app.tenants().iter() {
                    match store.purge_idempotency(&tenant.id, before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(tenant = %tenant.id, purged = n, "serve.idempotency_purged"),
                        Err(err) => tracing::warn!(tenant = %tenant.id, error = %err, "serve.idempotency_purge_failed"),
                    }
                }
            }
            _ = janitor.tick() => {
                let run = app.run_payment_janitor(app.now()).await;
                if run.checked > 0 {
                    tracing::info!(?run, "serve.payments_checked");
                }
                let run = app.run_sagas(app.now()).await;
                if run.claimed > 0 {
                    tracing::info!(?run, "serve.sagas_moved");
                }
                let run = app.run_renewal_charges(app.now()).await;
                if run.claimed > 0 {
                    tracing::info!(?run, "serve.renewals_charged");
                }
            }
            _ = expiry.tick() => {
                match app.expire_credits(app.now()).await {
                    Ok(run) if run.grants > 0 || run.failed > 0 => tracing::info!(
                        grants = run.grants, credits = run.credits, failed = run.failed,
                        "serve.credits_expired"
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "serve.credit_expiry_failed"),
                }
            }
        }
    }
}

/// The payment settings of the tenants with a gateway.
fn payment_settings(
    config: &config::Config,
) -> std::collections::BTreeMap<String, crate::app::payments::PaymentSettings> {
    config
        .tenants
        .iter()
        .filter_map(|(tenant, settings)| {
            let gateway = settings.api.gateway.as_ref()?;
            Some((
                tenant.clone(),
                crate::app::payments::PaymentSettings {
                    void_unconfirmed_after_ms: gateway.void_unconfirmed_after.as_millis() as i64,
                    service_timeout_ms: gateway.service_timeout.as_millis() as i64,
                    capture_with_approval: gateway.capture_with_approval,
                },
            ))
        })
        .collect()
}

/// The tenants' payment gateways: a Toss-style connector with the secret
/// key from the environment, or the bundled simulator, which is started
/// here (on `pg_simulator.listen`, with a secret key made for this
/// process) when a tenant uses it. Each behind its breaker and retries.
async fn gateways(
    config: &config::Config,
) -> anyhow::Result<(Gateways, Option<(Simulator, Vec<String>)>)> {
    let mut simulator: Option<(Simulator, String, Secret)> = None;
    let mut simulated = Vec::new();
    let mut gateways = Gateways::new();
    for (tenant, settings) in &config.tenants {
        let Some(gateway) = &settings.api.gateway else {
            continue;
        };
        let (base_url, secret_key) = match &gateway.kind {
            GatewayKind::Toss {
                base_url,
                secret_env,
            } => {
                let secret = Secret::from_env(secret_env).with_context(|| {
                    format!("tenants.{tenant}.gateway: set {secret_env} to the PG's secret key")
                })?;
                (base_url.clone(), secret)
            }
            GatewayKind::Simulator => {
                if simulator.is_none() {
                    let addr = config
                        .pg_simulator
                        .context("tenants with a simulator gateway need pg_simulator")?;
                    simulator = Some(start_simulator(addr).await?);
                }
                simulated.push(tenant.clone());
                let (_, url, secret) = simulator.as_ref().expect("started above");
                (url.clone(), secret.clone())
            }
        };
        let connector = TossGateway::new(TossConfig {
            base_url,
            secret_key,
            connect_timeout: gateway.connect_timeout,
            request_timeout: gateway.request_timeout,
        })
        .map_err(|err| anyhow::anyhow!("tenants.{tenant}.gateway: {err}"))?;
        let resilient = ResilientGateway::new(connector, tenant, &gateway.resilience)
            .map_err(|err| anyhow::anyhow!("tenants.{tenant}.gateway: {err}"))?;
        gateways.insert(tenant.clone(), Arc::new(resilient));
    }
    Ok((gateways, simulator.map(|(sim, _, _)| (sim, simulated))))
}

/// Starts the bundled PG simulator on `addr` (loopback, checked by the
/// config); it, its URL and the secret key it accepts.
async fn start_simulator(addr: SocketAddr) -> anyhow::Result<(Simulator, String, Secret)> {
    let secret = format!("test_sk_{}", uuid::Uuid::now_v7().simple());
    let simulator = Simulator::new(&secret, 1);
    let url = simulator
        .spawn(addr)
        .await
        .with_context(|| format!("the PG simulator: listening on {addr}"))?;
    tracing::info!(%url, "serve.pg_simulator_listening");
    Ok((simulator, url, Secret::new(secret)))
}

/// Registers this host's notification endpoint with the in-process
/// simulator, as a merchant registers its webhook URL with its PG. The
/// simulator is one merchant account: with several tenants on it, a
/// notification could not say whose it is, so there are none (the recovery
/// scheduler resolves lost answers all the same).
fn notify_to(simulator: &Simulator, tenants: &[String], addr: SocketAddr) {
    let [tenant] = tenants else {
        tracing::info!(
            tenants = tenants.len(),
            "serve.pg_simulator_notifications_off: one merchant account, several tenants"
        );
        return;
    };
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    simulator.set_notify_url(Some(format!("http://{host}/pg/v1/notifications/{tenant}")));
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
