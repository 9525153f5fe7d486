//! `fluxpay-host audit --config <file> [--tenant T] [--json]`: check that the
//! books balance (see `app::audit` for every check). Exit 0 when clean, 1
//! with a report when anything does not add up, 2 when it could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::app::audit;
use crate::store::{Maintenance, Store};

/// Exit code when the audit found discrepancies.
pub const EXIT_DISCREPANCIES: u8 = 1;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The configuration file whose `database:` section names the database
    /// (`FLUXPAY_DATABASE_URL` overrides it).
    #[arg(long, env = "FLUXPAY_CONFIG")]
    pub config: PathBuf,
    /// Audit this tenant only (default: every tenant with data).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run the auditor.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let database = super::database_config(&args.config)?;
    // Opening a SQLite file that is not there would create an empty one,
    // and the audit would then fail on a missing table.
    if let crate::config::DatabaseUrl::Sqlite(path) = &database.url
        && !path.exists()
    {
        anyhow::bail!(
            "there is no database at {}: nothing to audit (`fluxpay-host migrate` or `serve` creates it)",
            path.display()
        );
    }
    super::runtime()?.block_on(async {
        let store = Store::connect(&database)
            .await
            .with_context(|| format!("connecting to {:?}", database.url))?;
        // The checks read the schema this build's migrations make; against
        // an older one they would fail on what is missing or, worse, judge
        // data by rules it was not written under.
        let unapplied = store
            .unapplied_migrations()
            .await
            .context("reading which migrations the database has applied")?;
        if !unapplied.is_empty() {
            store.close().await;
            let versions: Vec<String> = unapplied.iter().map(i64::to_string).collect();
            anyhow::bail!(
                "the database at {:?} has not applied {} of this build's migrations ({}): \
                 run `fluxpay-host migrate --config {}` first",
                database.url,
                unapplied.len(),
                versions.join(", "),
                args.config.display()
            );
        }
        let tenants = match &args.tenant {
            Some(tenant) => {
                let known = store.tenants().await.context("listing tenants")?;
                let configured = crate::config::load(&args.config)
                    .map(|c| c.tenants.contains_key(tenant))
                    .unwrap_or(false);
                if !configured && !known.contains(tenant) {
                    anyhow::bail!("tenant `{tenant}` is neither configured nor has data");
                }
                vec![tenant.clone()]
            }
            None => Vec::new(),
        };
        let report = audit::audit(&store, &tenants).await.context("auditing")?;
        store.close().await;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{report}");
        }
        Ok(if report.is_clean() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_DISCREPANCIES)
        })
    })
}
