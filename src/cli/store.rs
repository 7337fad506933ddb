//! `poolpilot store migrate` and `poolpilot store check`: the store `run` would use (the
//! PostgreSQL `store` shared by replicas, else `history.db` in the state dir), from the same
//! config, flags and variables as `run`. `migrate` applies the schema versions this build has
//! (the agent also does at start; run it first to upgrade replicas one by one). `check` reads
//! the store without changing it: schema versions applied and pending, who leads, row counts.
//! Neither ever prints the store's password.

use anyhow::Context as _;
use clap::Subcommand;

use super::run::{CONFIG_HELP, ConfigArgs};
use crate::store;

/// `poolpilot store ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum StoreCommand {
    /// Apply the schema versions this build has to the store (docs/operations.md).
    #[command(after_help = CONFIG_HELP)]
    Migrate(ConfigArgs),
    /// Show the store's schema versions, its leader and its row counts; exit 1 when a
    /// version is pending.
    #[command(after_help = CONFIG_HELP)]
    Check(ConfigArgs),
}

/// Runs a `store` subcommand: true when it found nothing wrong.
pub(crate) async fn run(command: &StoreCommand) -> anyhow::Result<bool> {
    match command {
        StoreCommand::Migrate(args) => {
            let url = url_of(args)?;
            let applied = store::migrate(&url).await?;
            match applied.as_slice() {
                [] => outln!("{}: up to date", store::redact(&url)),
                v => outln!("{}: applied {}", store::redact(&url), versions(v)),
            }
            Ok(true)
        }
        StoreCommand::Check(args) => {
            let url = url_of(args)?;
            let h = store::check(&url).await?;
            outln!("store: {}", store::redact(&url));
            outln!("schema: applied {}", versions(&h.applied));
            if !h.pending.is_empty() {
                outln!(
                    "schema: pending {} (run `poolpilot store migrate`)",
                    versions(&h.pending)
                );
            }
            match &h.leader {
                Some(l) => outln!(
                    "leader: {} (generation {}, lease {})",
                    l.holder,
                    l.generation,
                    if l.live { "live" } else { "run out" }
                ),
                None => outln!("leader: none"),
            }
            for (table, n) in &h.rows {
                outln!("rows: {table} {n}");
            }
            Ok(h.pending.is_empty())
        }
    }
}

/// The store's URL, with its password, as `run` would open it.
fn url_of(args: &ConfigArgs) -> anyhow::Result<String> {
    let eff = args.resolve()?;
    let cfg = &eff.config;
    match &cfg.store {
        Some(url) => crate::agent::run::store_url(url, cfg),
        None => {
            std::fs::create_dir_all(&cfg.state_dir)
                .with_context(|| format!("create the state dir {}", cfg.state_dir.display()))?;
            Ok(store::sqlite_url(&cfg.state_dir))
        }
    }
}

fn versions(v: &[i64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}
