//! `fluxpay-host migrate --config <file>`: apply the database migrations the
//! binary embeds (also done by `serve` at start-up).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config;
use crate::store::{Maintenance, Store};

/// Arguments of `migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The configuration file whose `database:` section names the database
    /// (`FLUXPAY_DATABASE_URL` overrides it).
    #[arg(long, env = "FLUXPAY_CONFIG")]
    pub config: PathBuf,
}

/// Apply pending migrations and exit.
pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let database = super::database_config(&args.config)?;
    super::runtime()?.block_on(async {
        let store = Store::connect(&database)
            .await
            .with_context(|| format!("connecting to {:?}", database.url))?;
        store.migrate().await.context("migrating")?;
        println!(
            "migrated the {} database {:?}",
            store.backend(),
            database.url
        );
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Reads the configuration file's database section.
pub(super) fn load_database(path: &std::path::Path) -> anyhow::Result<config::DatabaseConfig> {
    let config = config::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    config
        .database
        .with_env_override()
        .map_err(|err| anyhow::anyhow!(err))
}
