//! The agent's configuration file (`poolpilot run --config FILE`), documented in
//! docs/config.md. Secrets come from the environment or from files (systemd credentials), never
//! from the file itself, and are never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub api: ApiConfig,
    /// Rule files and directories, relative to the config file.
    pub rules: Vec<PathBuf>,
    /// Where state (engine state, event cursor, dedup window) and the decision log live.
    pub state_dir: PathBuf,
    /// Address of the HTTP server: health, metrics, decisions, webhooks. Loopback by default.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    /// Decide and log; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_listen() -> String {
    "127.0.0.1:9477".into()
}

/// How to reach E2B.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Base URL; `E2B_API_URL` when absent, else https://api.e2b.app.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the API key (e.g. a systemd credential); `E2B_API_KEY` when absent.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Creates per second (E2B: 1 on Hobby, 5 on Pro).
    #[serde(default)]
    pub create_rate: Option<f64>,
}

/// Polling intervals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Sandboxes and metrics, in step with E2B's 5 s sampling.
    #[serde(default = "five_s")]
    pub metrics: HumanDuration,
    /// The events API, backfilling what webhooks missed.
    #[serde(default = "ten_s")]
    pub events: HumanDuration,
}

fn five_s() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn ten_s() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            metrics: five_s(),
            events: ten_s(),
        }
    }
}

/// The webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// A file holding the signature secret; `POOLPILOT_WEBHOOK_SECRET` when absent.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The URL E2B should deliver to (https in production); when set, the agent registers its
    /// webhook at start, idempotently (found by `name` or URL, then patched, or created).
    #[serde(default)]
    pub public_url: Option<String>,
    /// The registered webhook's name.
    #[serde(default = "default_webhook_name")]
    pub name: String,
}

fn default_webhook_name() -> String {
    "poolpilot".into()
}

/// A configuration problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a config file; relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        let mut cfg: Config = serde_saphyr::from_str(&text).map_err(|e| {
            let (l, c) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError(format!(
                "{}:{l}:{c}: {}",
                path.display(),
                e.to_string().lines().next().unwrap_or("invalid")
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        cfg.rules = cfg.rules.iter().map(abs).collect();
        cfg.state_dir = abs(&cfg.state_dir);
        if let Some(k) = &cfg.api.key_file {
            cfg.api.key_file = Some(abs(k));
        }
        if let Some(w) = &mut cfg.webhook
            && let Some(f) = &w.secret_file
        {
            w.secret_file = Some(abs(f));
        }
        if cfg.rules.is_empty() {
            return Err(ConfigError(format!(
                "{}: `rules` must name at least one file or directory",
                path.display()
            )));
        }
        Ok(cfg)
    }
}

/// Reads a secret, trimmed: from `file` when given; else from the systemd credential
/// `$CREDENTIALS_DIRECTORY/<credential>` when it exists (`LoadCredential=`); else from `env`.
pub fn secret(file: Option<&Path>, credential: &str, env: &str) -> Result<String, ConfigError> {
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(credential))
        .filter(|p| p.exists());
    let (value, source) = match file.map(Path::to_path_buf).or(from_credentials) {
        Some(f) => (
            std::fs::read_to_string(&f).map_err(|e| ConfigError(format!("cannot read secret file {}: {e}", f.display())))?,
            f.display().to_string(),
        ),
        None => (
            std::env::var(env).map_err(|_| ConfigError(format!("no secret: set {env}, give a file, or load the systemd credential {credential:?}")))?,
            env.to_string(),
        ),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(ConfigError(format!("the secret from {source} is empty")));
    }
    Ok(value)
}
