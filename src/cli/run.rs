//! `poolpilot run`: the agent, with its settings from flags, `POOLPILOT_*` variables, the
//! config file and defaults (docs/config.md). This file only resolves the settings, wires
//! SIGHUP to a rule reload and hands over to `crate::agent::run`; it never starts the agent
//! when a setting is invalid or a secret it needs cannot be read.

use std::path::PathBuf;

use clap::Args;

use crate::agent::config::{self, ConfigError, Effective, Flags};

/// The text after `run --help` and `config print --help`.
pub(crate) const CONFIG_HELP: &str = "\
Each setting comes from the first of: its flag, its POOLPILOT_* variable, the config file,
E2B's own variable (E2B_API_URL), the default. `poolpilot config print` shows the result.
Secrets are never flags: the API key comes from --api-key-file, the systemd credential
e2b-api-key, or E2B_API_KEY; the webhook secret from --webhook-secret-file, the credential
webhook-secret, or POOLPILOT_WEBHOOK_SECRET.";

/// The agent's settings. Each flag has a `POOLPILOT_*` variable; a flag wins over its
/// variable, and both win over the config file (docs/config.md). Secrets are never flags:
/// the API key comes from a file, the systemd credential `e2b-api-key` or E2B_API_KEY; the
/// webhook secret from a file, the credential `webhook-secret` or POOLPILOT_WEBHOOK_SECRET.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConfigArgs {
    /// The configuration file; optional when --rules and --state-dir are given.
    #[arg(long, env = "POOLPILOT_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// A flag and a variable for each setting, from `crate::agent::config`'s table.
    #[command(flatten)]
    pub(crate) settings: Flags,
}

impl ConfigArgs {
    /// The effective configuration: flags and environment over the file and defaults.
    pub(crate) fn resolve(&self) -> Result<Effective, ConfigError> {
        config::resolve(self.config.as_deref(), &self.settings.overrides()?, &|k| {
            std::env::var(k).ok()
        })
    }
}

/// `poolpilot run`: resolves the settings, checks the secrets, and runs the agent until
/// SIGTERM or Ctrl-C; SIGHUP reloads the rules.
pub(crate) async fn run(args: ConfigArgs) -> anyhow::Result<()> {
    let eff = args.resolve()?;
    eff.require_secrets()?;
    let cfg = eff.config;
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading rules");
                let _ = reload_tx.try_send(());
            }
        }
    });
    #[cfg(not(unix))]
    drop(reload_tx);
    crate::agent::run::run(cfg, super::shutdown_signal(), reload_rx).await
}
