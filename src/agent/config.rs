//! The agent's configuration (`poolpilot run`), documented in docs/config.md.
//!
//! A setting's value comes from, in order: a flag, its `POOLPILOT_*` environment variable, the
//! config file, E2B's own variable (`E2B_API_URL`), the default. [`resolve`] applies that
//! order and remembers where each value came from, for `poolpilot config print`. Secrets come
//! from the environment or from files (systemd credentials), never from the config file or a
//! flag, and are never printed: [`SecretSource`] says where one would be read, not what it is.

use std::collections::BTreeMap;
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
    /// Bounds that keep the agent answering under load or attack.
    #[serde(default)]
    pub limits: LimitsConfig,
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

/// Bounds on connections, slow clients and the dedup window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections held at most. When full, the one waiting longest without a request is
    /// closed to take a new one, so health checks get through. Well under the descriptor limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    #[serde(default = "ten_s")]
    pub header_timeout: HumanDuration,
    /// Time a webhook body has to arrive once its headers have.
    #[serde(default = "ten_s")]
    pub body_timeout: HumanDuration,
    /// Event ids the dedup window holds at most.
    #[serde(default = "default_seen_ids")]
    pub seen_ids: usize,
    /// Bytes the dedup window holds at most.
    #[serde(default = "default_seen_bytes")]
    pub seen_bytes: usize,
}

fn default_max_connections() -> usize {
    512
}
fn default_seen_ids() -> usize {
    100_000
}
fn default_seen_bytes() -> usize {
    16 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            header_timeout: ten_s(),
            body_timeout: ten_s(),
            seen_ids: default_seen_ids(),
            seen_bytes: default_seen_bytes(),
        }
    }
}

impl LimitsConfig {
    /// Each bound in its range, or what is wrong with the first that is not.
    fn check(&self, from: &str) -> Result<(), ConfigError> {
        let count = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "{from}`limits.{name}` must be from {lo} to {hi}, got {v}"
                )))
            }
        };
        count("max_connections", self.max_connections, 1, 1_000_000)?;
        count("seen_ids", self.seen_ids, 1, 100_000_000)?;
        count("seen_bytes", self.seen_bytes, 1024, 1 << 36)?;
        for (name, d) in [
            ("header_timeout", self.header_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d.0 < Duration::from_millis(10) || d.0 > Duration::from_secs(3600) {
                return Err(ConfigError(format!(
                    "{from}`limits.{name}` must be from 10ms to 1h, got {d}"
                )));
            }
        }
        Ok(())
    }
}

/// A configuration problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a config file; relative paths in it are taken from the file's folder.
    /// The process environment fills what the file leaves out (`E2B_API_URL`), as for
    /// `poolpilot run --config FILE` with no flags.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        resolve(Some(path), &Overrides::default(), &|k| {
            std::env::var(k).ok()
        })
        .map(|e| e.config)
    }

    /// Checks what the file format cannot: settings that are required, values in range.
    fn check(&self, file: Option<&Path>) -> Result<(), ConfigError> {
        let from = match file {
            Some(f) => format!("{}: ", f.display()),
            None => String::new(),
        };
        if self.rules.is_empty() {
            return Err(ConfigError(format!(
                "{from}`rules` must name at least one file or directory (in the config file, by --rules, or POOLPILOT_RULES)"
            )));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "{from}`state_dir` is required (in the config file, by --state-dir, or POOLPILOT_STATE_DIR)"
            )));
        }
        if let Some(r) = self.api.create_rate
            && !(r.is_finite() && r > 0.0)
        {
            return Err(ConfigError(format!(
                "{from}`api.create_rate` must be a positive number of creates per second, got {r}"
            )));
        }
        for (name, d) in [
            ("poll.metrics", self.poll.metrics),
            ("poll.events", self.poll.events),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError(format!(
                    "{from}`{name}` must be longer than 0s, such as \"5s\""
                )));
            }
        }
        let port_ok = self
            .listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(ConfigError(format!(
                "{from}`listen` must be a host and port such as \"127.0.0.1:9477\", got {:?}",
                self.listen
            )));
        }
        self.limits.check(&from)
    }

    /// Parses a config file's text without [`Config::check`]: flags may still supply what it
    /// lacks.
    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
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

/// Settings given by flag or environment variable; each wins over the config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub api_url: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub create_rate: Option<f64>,
    /// Replaces the file's `rules` list when not empty.
    pub rules: Vec<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub poll_metrics: Option<HumanDuration>,
    pub poll_events: Option<HumanDuration>,
    /// Turns the webhook receiver on (as does any other webhook setting) or off.
    pub webhook: Option<bool>,
    pub webhook_secret_file: Option<PathBuf>,
    pub webhook_public_url: Option<String>,
    pub webhook_name: Option<String>,
    pub dry_run: Option<bool>,
    /// Where each given override came from ("flag --listen", "env POOLPILOT_LISTEN"), by
    /// setting name ("listen", "api.url", ...).
    pub origins: BTreeMap<&'static str, String>,
}

/// Every setting, by the name the config file and `config print` use.
pub const SETTINGS: &[&str] = &[
    "api.url",
    "api.key_file",
    "api.create_rate",
    "rules",
    "state_dir",
    "listen",
    "poll.metrics",
    "poll.events",
    "webhook",
    "webhook.secret_file",
    "webhook.public_url",
    "webhook.name",
    "limits.max_connections",
    "limits.header_timeout",
    "limits.body_timeout",
    "limits.seen_ids",
    "limits.seen_bytes",
    "dry_run",
];

/// The configuration in force, with where each setting came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    /// By setting name: "flag --x", "env POOLPILOT_X", "file <path>", "env E2B_API_URL" or
    /// "default".
    pub origins: BTreeMap<&'static str, String>,
    pub api_key: SecretSource,
    /// None while the webhook receiver is off.
    pub webhook_secret: Option<SecretSource>,
}

/// Where a secret would be read from; never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// No file, no credential and the variable unset: `run` will refuse to start.
    Missing(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "read from the file {}", p.display()),
            SecretSource::Env(v) => write!(f, "read from the environment variable {v}"),
            SecretSource::Missing(v) => write!(
                f,
                "NOT SET: give a file, load the systemd credential, or set {v}"
            ),
        }
    }
}

/// Finds where a secret would come from, in the order [`secret`] reads it.
pub fn secret_source(
    file: Option<&Path>,
    credential: &str,
    env_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> SecretSource {
    if let Some(f) = file {
        return SecretSource::File(f.to_path_buf());
    }
    if let Some(c) = env("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(credential))
        .filter(|p| p.exists())
    {
        return SecretSource::File(c);
    }
    if env(env_name).is_some_and(|v| !v.trim().is_empty()) {
        SecretSource::Env(env_name.to_string())
    } else {
        SecretSource::Missing(env_name.to_string())
    }
}

/// Applies flags and environment over the config file (if any) and the defaults. `env` reads
/// the process environment (a parameter so that tests need not change it). Relative paths in
/// the file are taken from the file's folder; those given by flag or variable, from the
/// working directory.
pub fn resolve(
    file: Option<&Path>,
    o: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Effective, ConfigError> {
    let mut origins: BTreeMap<&'static str, String> = BTreeMap::new();
    let (mut cfg, present) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
            let cfg = Config::parse(path, &text)?;
            let tree: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
            let present: Vec<&'static str> = SETTINGS
                .iter()
                .copied()
                .filter(|name| {
                    name.split('.')
                        .try_fold(&tree, |v, k| v.get(k))
                        .is_some_and(|v| !v.is_null())
                })
                .collect();
            (cfg, present)
        }
        None => (
            Config {
                api: ApiConfig::default(),
                rules: Vec::new(),
                state_dir: PathBuf::new(),
                listen: default_listen(),
                poll: PollConfig::default(),
                webhook: None,
                limits: LimitsConfig::default(),
                dry_run: false,
            },
            Vec::new(),
        ),
    };
    for name in SETTINGS {
        let origin = match file {
            Some(f) if present.contains(name) => format!("file {}", f.display()),
            _ => "default".to_string(),
        };
        origins.insert(name, origin);
    }
    // An origin is known exactly for each setting given by flag or variable.
    for (name, origin) in &o.origins {
        origins.insert(name, origin.clone());
    }
    if let Some(v) = &o.api_url {
        cfg.api.url = Some(v.clone());
    }
    if let Some(v) = &o.api_key_file {
        cfg.api.key_file = Some(v.clone());
    }
    if let Some(v) = o.create_rate {
        cfg.api.create_rate = Some(v);
    }
    if !o.rules.is_empty() {
        cfg.rules = o.rules.clone();
    }
    if let Some(v) = &o.state_dir {
        cfg.state_dir = v.clone();
    }
    if let Some(v) = &o.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = o.poll_metrics {
        cfg.poll.metrics = v;
    }
    if let Some(v) = o.poll_events {
        cfg.poll.events = v;
    }
    let any_webhook = o.webhook == Some(true)
        || o.webhook_secret_file.is_some()
        || o.webhook_public_url.is_some()
        || o.webhook_name.is_some();
    if any_webhook && cfg.webhook.is_none() {
        cfg.webhook = Some(WebhookSettings {
            secret_file: None,
            public_url: None,
            name: default_webhook_name(),
        });
        if o.webhook != Some(true)
            && let Some(by) = ["webhook.secret_file", "webhook.public_url", "webhook.name"]
                .iter()
                .find_map(|n| o.origins.get(n))
        {
            origins.insert("webhook", format!("on, implied by {by}"));
        }
    }
    if let Some(w) = &mut cfg.webhook {
        if let Some(v) = &o.webhook_secret_file {
            w.secret_file = Some(v.clone());
        }
        if let Some(v) = &o.webhook_public_url {
            w.public_url = Some(v.clone());
        }
        if let Some(v) = &o.webhook_name {
            w.name = v.clone();
        }
    }
    if o.webhook == Some(false) {
        cfg.webhook = None;
    }
    if let Some(d) = o.dry_run {
        cfg.dry_run = d;
    }
    if cfg.api.url.is_none() {
        match env("E2B_API_URL").filter(|v| !v.trim().is_empty()) {
            Some(u) => {
                cfg.api.url = Some(u);
                origins.insert("api.url", "env E2B_API_URL".into());
            }
            None => cfg.api.url = Some(crate::e2b::client::DEFAULT_API_URL.to_string()),
        }
    }
    if cfg.api.create_rate.is_none() {
        cfg.api.create_rate = Some(DEFAULT_CREATE_RATE);
    }
    cfg.check(file)?;
    // Absolute paths: the same meaning wherever the output of `config print` is saved.
    let abs = |p: &mut PathBuf| {
        if let Ok(a) = std::path::absolute(&*p) {
            *p = a;
        }
    };
    cfg.rules.iter_mut().for_each(abs);
    abs(&mut cfg.state_dir);
    if let Some(k) = &mut cfg.api.key_file {
        abs(k);
    }
    if let Some(w) = &mut cfg.webhook
        && let Some(f) = &mut w.secret_file
    {
        abs(f);
    }
    let api_key = secret_source(
        cfg.api.key_file.as_deref(),
        "e2b-api-key",
        "E2B_API_KEY",
        env,
    );
    let webhook_secret = cfg.webhook.as_ref().map(|w| {
        secret_source(
            w.secret_file.as_deref(),
            "webhook-secret",
            "POOLPILOT_WEBHOOK_SECRET",
            env,
        )
    });
    Ok(Effective {
        config: cfg,
        origins,
        api_key,
        webhook_secret,
    })
}

/// Creates per second when none is set (E2B's Pro tier).
pub const DEFAULT_CREATE_RATE: f64 = 5.0;

/// A YAML string: JSON's quoting is valid YAML and escapes everything that needs it.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

impl Effective {
    /// The effective configuration as a config file, each setting commented with its origin.
    /// Secrets appear only as where they are read from. The output loads back as a config
    /// file that gives the same configuration.
    pub fn to_yaml(&self) -> String {
        let c = &self.config;
        let o = |name: &str| self.origins.get(name).cloned().unwrap_or_default();
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |line: String, comment: String| rows.push((line, comment));
        row("api:".into(), String::new());
        row(
            format!("  url: {}", q(c.api.url.as_deref().unwrap_or_default())),
            o("api.url"),
        );
        row(
            match &c.api.key_file {
                Some(p) => format!("  key_file: {}", qp(p)),
                None => "  key_file: null".into(),
            },
            format!("{}; the API key is {}", o("api.key_file"), self.api_key),
        );
        row(
            format!(
                "  create_rate: {}",
                c.api.create_rate.unwrap_or(DEFAULT_CREATE_RATE)
            ),
            o("api.create_rate"),
        );
        row("rules:".into(), o("rules"));
        for r in &c.rules {
            row(format!("  - {}", qp(r)), String::new());
        }
        row(format!("state_dir: {}", qp(&c.state_dir)), o("state_dir"));
        row(format!("listen: {}", q(&c.listen)), o("listen"));
        row("poll:".into(), String::new());
        row(
            format!("  metrics: {}", q(&c.poll.metrics.to_string())),
            o("poll.metrics"),
        );
        row(
            format!("  events: {}", q(&c.poll.events.to_string())),
            o("poll.events"),
        );
        match (&c.webhook, &self.webhook_secret) {
            (Some(w), secret) => {
                row("webhook:".into(), o("webhook"));
                row(
                    match &w.secret_file {
                        Some(p) => format!("  secret_file: {}", qp(p)),
                        None => "  secret_file: null".into(),
                    },
                    format!(
                        "{}; the signature secret is {}",
                        o("webhook.secret_file"),
                        secret.as_ref().map(ToString::to_string).unwrap_or_default()
                    ),
                );
                row(
                    match &w.public_url {
                        Some(u) => format!("  public_url: {}", q(u)),
                        None => "  public_url: null".into(),
                    },
                    o("webhook.public_url"),
                );
                row(format!("  name: {}", q(&w.name)), o("webhook.name"));
            }
            (None, _) => row("webhook: null".into(), "off: no POST /webhooks/e2b".into()),
        }
        row("limits:".into(), String::new());
        let l = &c.limits;
        row(
            format!("  max_connections: {}", l.max_connections),
            o("limits.max_connections"),
        );
        for (name, d) in [
            ("header_timeout", l.header_timeout),
            ("body_timeout", l.body_timeout),
        ] {
            row(
                format!("  {name}: {}", q(&d.to_string())),
                o(&format!("limits.{name}")),
            );
        }
        row(format!("  seen_ids: {}", l.seen_ids), o("limits.seen_ids"));
        row(
            format!("  seen_bytes: {}", l.seen_bytes),
            o("limits.seen_bytes"),
        );
        row(format!("dry_run: {}", c.dry_run), o("dry_run"));
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = String::from("# poolpilot: the effective configuration (secrets redacted)\n");
        for (line, comment) in rows {
            if comment.is_empty() {
                out.push_str(&line);
            } else {
                out.push_str(&format!("{line:width$}  # {comment}"));
            }
            out.push('\n');
        }
        out
    }
}
