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
    /// Each bound out of its range, named by its setting.
    fn problems(&self, bad: &mut impl FnMut(&'static str, String)) {
        let counts: [(&'static str, usize, usize, usize); 3] = [
            ("limits.max_connections", self.max_connections, 1, 1_000_000),
            ("limits.seen_ids", self.seen_ids, 1, 100_000_000),
            ("limits.seen_bytes", self.seen_bytes, 1024, 1 << 36),
        ];
        for (name, v, lo, hi) in counts {
            if !(lo..=hi).contains(&v) {
                bad(name, format!("must be from {lo} to {hi}, got {v}"));
            }
        }
        let range = (Duration::from_millis(10), Duration::from_secs(3600));
        for (name, d) in [
            ("limits.header_timeout", self.header_timeout),
            ("limits.body_timeout", self.body_timeout),
        ] {
            if let Err(e) = check_duration(d.0, range) {
                bad(name, e);
            }
        }
    }
}

/// A configuration problem. Each message names where the bad value came from: `--flag`,
/// `POOLPILOT_X`, or `file:line:col`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value given by flag or variable does not parse: a usage error (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Settings that are missing, out of range or unreadable, one message each (exit 1).
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// One problem.
    pub fn invalid(message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(vec![message.into()])
    }

    /// Each problem, one line each.
    pub fn messages(&self) -> Vec<&str> {
        match self {
            ConfigError::Usage(m) => vec![m.as_str()],
            ConfigError::Invalid(ms) => ms.iter().map(String::as_str).collect(),
        }
    }

    /// The process exit code, as docs/operations.md documents: 2 for a usage error, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Usage(_) => 2,
            ConfigError::Invalid(_) => 1,
        }
    }
}

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

    /// A configuration with nothing set: what flags and variables start from without a file.
    fn empty() -> Config {
        Config {
            api: ApiConfig::default(),
            rules: Vec::new(),
            state_dir: PathBuf::new(),
            listen: default_listen(),
            poll: PollConfig::default(),
            webhook: None,
            limits: LimitsConfig::default(),
            dry_run: false,
        }
    }

    /// Every problem that the file format cannot catch: required settings, values in range.
    /// Each problem names the setting it is about, for [`blame`] to say where it was given.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad =
            |setting: &'static str, message: String| out.push(Problem { setting, message });
        if self.rules.is_empty() {
            bad("rules", "is required: name at least one rule file or directory in the config file (`rules:`), by --rules, or by POOLPILOT_RULES".into());
        }
        if self.state_dir.as_os_str().is_empty() {
            bad("state_dir", "is required: give a folder in the config file (`state_dir:`), by --state-dir, or by POOLPILOT_STATE_DIR".into());
        }
        if let Some(r) = self.api.create_rate
            && let Err(e) = check_create_rate(r)
        {
            bad("api.create_rate", e);
        }
        if let Err(e) = check_duration(self.poll.metrics.0, POLL_METRICS_RANGE) {
            bad("poll.metrics", e);
        }
        if let Err(e) = check_duration(self.poll.events.0, POLL_EVENTS_RANGE) {
            bad("poll.events", e);
        }
        if let Err(e) = check_listen(&self.listen) {
            bad("listen", e);
        }
        if let Some(u) = &self.api.url
            && let Err(e) = check_url(u)
        {
            bad("api.url", e);
        }
        if let Some(w) = &self.webhook {
            if let Some(u) = &w.public_url
                && let Err(e) = check_url(u)
            {
                bad("webhook.public_url", e);
            }
            if w.name.trim().is_empty()
                || w.name.len() > 128
                || w.name.chars().any(char::is_control)
            {
                bad(
                    "webhook.name",
                    "must be 1 to 128 printable characters, such as \"poolpilot\"".into(),
                );
            }
        }
        self.limits.problems(&mut bad);
        out
    }

    /// Parses a config file's text without [`Config::problems`]: flags may still supply what it
    /// lacks.
    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| {
            let (l, c) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::invalid(format!(
                "{}:{l}:{c}: {}",
                path.display(),
                explain_number(crate::rules::yaml_message(&e, text), text, l)
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
            crate::files::read_regular(&f, 64 << 10).map_err(|e| ConfigError::invalid(format!("cannot read secret file {}: {e}", f.display())))?,
            f.display().to_string(),
        ),
        None => (
            std::env::var(env).map_err(|_| ConfigError::invalid(format!("no secret: {env} is not set and there is no secret file or systemd credential {credential:?}; set {env}, give a file, or load the credential (docs/config.md)")))?,
            env.to_string(),
        ),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(ConfigError::invalid(format!(
            "the secret from {source} is empty"
        )));
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
    pub origins: BTreeMap<&'static str, Origin>,
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
    pub origins: BTreeMap<&'static str, Origin>,
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
/// working directory. Every invalid setting is reported, each blamed on where it was given.
pub fn resolve(
    file: Option<&Path>,
    o: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Effective, ConfigError> {
    let (mut cfg, mut origins, at) = match file {
        Some(path) => read_file(path)?,
        None => (
            Config::empty(),
            default_origins(None, &BTreeMap::new()),
            BTreeMap::new(),
        ),
    };
    // An origin is known exactly for each setting given by flag or variable.
    for (name, origin) in &o.origins {
        origins.insert(name, origin.clone());
    }
    apply_overrides(&mut cfg, o, &mut origins);
    fill_from_environment(&mut cfg, &mut origins, env);
    let problems = cfg.problems();
    if !problems.is_empty() {
        let messages = problems
            .into_iter()
            .map(|p| match blame(origins.get(p.setting), at.get(p.setting)) {
                Some(source) => format!("{source}: `{}` {}", p.setting, p.message),
                None => format!("`{}` {}", p.setting, p.message),
            })
            .collect();
        return Err(ConfigError::Invalid(messages));
    }
    make_paths_absolute(&mut cfg);
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

/// Reads and parses a config file: the config, each setting's origin, and where in the file
/// each setting is written.
#[allow(clippy::type_complexity)]
fn read_file(
    path: &Path,
) -> Result<
    (
        Config,
        BTreeMap<&'static str, Origin>,
        BTreeMap<&'static str, (u64, u64)>,
    ),
    ConfigError,
> {
    let text = crate::files::read_regular(path, crate::files::MAX_TEXT_FILE)
        .map_err(|e| ConfigError::invalid(format!("{}: cannot read: {e}", path.display())))?;
    let cfg = Config::parse(path, &text)?;
    let at = positions(&text);
    let tree: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
    let present: BTreeMap<&'static str, ()> = SETTINGS
        .iter()
        .copied()
        .filter(|name| {
            name.split('.')
                .try_fold(&tree, |v, k| v.get(k))
                .is_some_and(|v| !v.is_null())
        })
        .map(|n| (n, ()))
        .collect();
    Ok((cfg, default_origins(Some(path), &present), at))
}

/// Each setting's origin before flags and variables: the file where it sets it, else default.
fn default_origins(
    file: Option<&Path>,
    present: &BTreeMap<&'static str, ()>,
) -> BTreeMap<&'static str, Origin> {
    SETTINGS
        .iter()
        .map(|name| {
            let origin = match file {
                Some(f) if present.contains_key(name) => Origin::File(f.to_path_buf()),
                _ => Origin::Default,
            };
            (*name, origin)
        })
        .collect()
}

/// Puts each flag and variable over the file's value.
fn apply_overrides(cfg: &mut Config, o: &Overrides, origins: &mut BTreeMap<&'static str, Origin>) {
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
    apply_webhook_overrides(cfg, o, origins);
    if let Some(d) = o.dry_run {
        cfg.dry_run = d;
    }
}

/// The webhook receiver: on by `--webhook` or by any other webhook setting, off by
/// `--webhook false`.
fn apply_webhook_overrides(
    cfg: &mut Config,
    o: &Overrides,
    origins: &mut BTreeMap<&'static str, Origin>,
) {
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
            origins.insert("webhook", Origin::ImpliedBy(Box::new(by.clone())));
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
}

/// Fills what nothing set: the URL from E2B's own `E2B_API_URL`, else the default; the
/// default create rate.
fn fill_from_environment(
    cfg: &mut Config,
    origins: &mut BTreeMap<&'static str, Origin>,
    env: &dyn Fn(&str) -> Option<String>,
) {
    if cfg.api.url.is_none() {
        match env("E2B_API_URL").filter(|v| !v.trim().is_empty()) {
            Some(u) => {
                cfg.api.url = Some(u);
                origins.insert("api.url", Origin::E2bApiUrl);
            }
            None => cfg.api.url = Some(crate::e2b::client::DEFAULT_API_URL.to_string()),
        }
    }
    if cfg.api.create_rate.is_none() {
        cfg.api.create_rate = Some(DEFAULT_CREATE_RATE);
    }
}

/// Absolute paths: the same meaning wherever the output of `config print` is saved.
fn make_paths_absolute(cfg: &mut Config) {
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
}

/// Creates per second when none is set (E2B's Pro tier).
pub const DEFAULT_CREATE_RATE: f64 = 5.0;

/// Creates per second that `api.create_rate` accepts: one create every 100 s up to 1,000 a
/// second. Outside it the pacer's interval would be absurd (or overflow).
pub const CREATE_RATE_RANGE: (f64, f64) = (0.01, 1000.0);
/// What `poll.metrics` accepts: the loop's turn, from 100 ms to an hour.
pub const POLL_METRICS_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// What `poll.events` accepts: from 1 s (E2B's API is not a stream) to an hour.
pub const POLL_EVENTS_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// One setting's problem, before it is blamed on where the value came from.
#[derive(Debug)]
struct Problem {
    setting: &'static str,
    message: String,
}

/// Says which setting a bare "invalid u64" (a number the field's type cannot hold) is about,
/// from the key on that line; docs/config.md gives every setting's range.
fn explain_number(message: String, text: &str, line: u64) -> String {
    let typed = ["invalid u", "invalid i", "invalid floating point"];
    if !typed.iter().any(|t| message.starts_with(t)) {
        return message;
    }
    let entry = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().trim_start_matches("- "), v.trim()));
    match entry {
        Some((key, value)) if !key.is_empty() => format!(
            "`{key}`: {value} is not a number this setting can hold; see docs/config.md for its range"
        ),
        _ => format!("{message}: not a number this setting can hold"),
    }
}

/// Checks a create rate against [`CREATE_RATE_RANGE`]; the error says what is valid.
pub fn check_create_rate(r: f64) -> Result<(), String> {
    let (lo, hi) = CREATE_RATE_RANGE;
    if r.is_finite() && (lo..=hi).contains(&r) {
        return Ok(());
    }
    Err(format!(
        "must be from {lo} to {hi} creates per second (E2B allows 1 on Hobby, 5 on Pro), got {r:?}"
    ))
}

/// Checks a duration against an inclusive range; the error says what is valid.
pub fn check_duration(d: Duration, (lo, hi): (Duration, Duration)) -> Result<(), String> {
    if (lo..=hi).contains(&d) {
        return Ok(());
    }
    Err(format!(
        "must be from {} to {}, such as \"5s\", got {:?}",
        HumanDuration(lo),
        HumanDuration(hi),
        HumanDuration(d).to_string()
    ))
}

/// Checks a listen address: `HOST:PORT` with an IP address, a bracketed IPv6 address or a
/// host name, and a port from 0 to 65535.
pub fn check_listen(listen: &str) -> Result<(), String> {
    let valid = listen.parse::<std::net::SocketAddr>().is_ok()
        || listen.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok()
                && !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        });
    if valid {
        return Ok(());
    }
    Err(format!(
        "must be HOST:PORT with a port from 0 to 65535, such as \"127.0.0.1:9477\", \"[::1]:9477\" or \"localhost:9477\", got {listen:?}"
    ))
}

/// Checks a URL: http or https with a host. The value is not repeated, since a URL may carry
/// credentials.
pub fn check_url(u: &str) -> Result<(), String> {
    match url::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(url) => Err(format!(
            "must be an http or https URL with a host, such as \"https://api.e2b.app\"; the scheme given is {:?}",
            url.scheme()
        )),
        Err(e) => Err(format!(
            "must be an http or https URL such as \"https://api.e2b.app\": {e}"
        )),
    }
}

/// Parses a duration given by flag or variable; `source` (`--flag` or `POOLPILOT_X`) is named
/// in the error, which is a usage error.
pub fn parse_duration_override(raw: &str, source: &str) -> Result<HumanDuration, ConfigError> {
    raw.parse()
        .map_err(|e| ConfigError::Usage(format!("{source}: {e}")))
}

/// Parses a create rate given by flag or variable, naming `source` in the usage error.
pub fn parse_rate_override(raw: &str, source: &str) -> Result<f64, ConfigError> {
    let (lo, hi) = CREATE_RATE_RANGE;
    raw.trim().parse().map_err(|_| {
        ConfigError::Usage(format!(
            "{source}: invalid value {raw:?}: expected creates per second, a number from {lo} to {hi} such as 5"
        ))
    })
}

/// Parses a boolean given by flag or variable, as clap's boolish values: true, yes, on, 1, y,
/// t and false, no, off, 0, n, f, in any case.
pub fn parse_bool_override(raw: &str, source: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" | "t" => Ok(true),
        "false" | "no" | "off" | "0" | "n" | "f" => Ok(false),
        _ => Err(ConfigError::Usage(format!(
            "{source}: invalid value {raw:?}: expected true or false (also 1/0, yes/no, on/off)"
        ))),
    }
}

/// Where each setting of a config file's text is written, as (line, column) of its value.
fn positions(text: &str) -> BTreeMap<&'static str, (u64, u64)> {
    use serde::de::IgnoredAny;
    use serde_saphyr::Spanned;
    type At = Option<Spanned<IgnoredAny>>;
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct ApiAt {
        url: At,
        key_file: At,
        create_rate: At,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct PollAt {
        metrics: At,
        events: At,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct WebhookAt {
        secret_file: At,
        public_url: At,
        name: At,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct LimitsAt {
        max_connections: At,
        header_timeout: At,
        body_timeout: At,
        seen_ids: At,
        seen_bytes: At,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct FileAt {
        api: Option<ApiAt>,
        limits: Option<LimitsAt>,
        rules: At,
        state_dir: At,
        listen: At,
        poll: Option<PollAt>,
        webhook: Option<WebhookAt>,
        dry_run: At,
    }
    let f: FileAt = serde_saphyr::from_str(text).unwrap_or_default();
    let (api, poll, hook, limits) = (
        f.api.unwrap_or_default(),
        f.poll.unwrap_or_default(),
        f.webhook.unwrap_or_default(),
        f.limits.unwrap_or_default(),
    );
    [
        ("api.url", api.url),
        ("api.key_file", api.key_file),
        ("api.create_rate", api.create_rate),
        ("rules", f.rules),
        ("state_dir", f.state_dir),
        ("listen", f.listen),
        ("poll.metrics", poll.metrics),
        ("poll.events", poll.events),
        ("webhook.secret_file", hook.secret_file),
        ("webhook.public_url", hook.public_url),
        ("webhook.name", hook.name),
        ("dry_run", f.dry_run),
        ("limits.max_connections", limits.max_connections),
        ("limits.header_timeout", limits.header_timeout),
        ("limits.body_timeout", limits.body_timeout),
        ("limits.seen_ids", limits.seen_ids),
        ("limits.seen_bytes", limits.seen_bytes),
    ]
    .into_iter()
    .filter_map(|(name, at)| at.map(|s| (name, (s.referenced.line(), s.referenced.column()))))
    .collect()
}

/// Where a setting's value came from, as a message prefix: `--flag`, `POOLPILOT_X`,
/// `file:line:col`; None for a default or a missing setting.
fn blame(origin: Option<&Origin>, at: Option<&(u64, u64)>) -> Option<String> {
    match origin? {
        Origin::Flag(f) => Some((*f).to_string()),
        Origin::Env(v) => Some((*v).to_string()),
        Origin::E2bApiUrl => Some("E2B_API_URL".into()),
        Origin::File(p) => Some(match at {
            Some((l, c)) => format!("{}:{l}:{c}", p.display()),
            None => p.display().to_string(),
        }),
        Origin::Default | Origin::ImpliedBy(_) => None,
    }
}

/// Where a setting's value came from; `config print` shows it, errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, such as `--listen`.
    Flag(&'static str),
    /// A `POOLPILOT_*` variable.
    Env(&'static str),
    /// The config file.
    File(PathBuf),
    /// E2B's own `E2B_API_URL`.
    E2bApiUrl,
    /// The default.
    Default,
    /// Turned on by another setting (the webhook, by any `webhook.*` flag or variable).
    ImpliedBy(Box<Origin>),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(x) => write!(f, "flag {x}"),
            Origin::Env(x) => write!(f, "env {x}"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::E2bApiUrl => write!(f, "env E2B_API_URL"),
            Origin::Default => write!(f, "default"),
            Origin::ImpliedBy(by) => write!(f, "on, implied by {by}"),
        }
    }
}

/// A YAML string: JSON's quoting is valid YAML and escapes everything that needs it.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

impl Effective {
    /// Reads every secret `run` needs, as `run` does, and forgets it: Ok when `run` would find
    /// them all. The messages are `run`'s own.
    pub fn require_secrets(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let c = &self.config;
        let mut need = |file: Option<&Path>, credential: &str, env: &str| {
            if let Err(e) = secret(file, credential, env) {
                problems.extend(e.messages().into_iter().map(String::from));
            }
        };
        need(c.api.key_file.as_deref(), "e2b-api-key", "E2B_API_KEY");
        if let Some(w) = &c.webhook {
            need(
                w.secret_file.as_deref(),
                "webhook-secret",
                "POOLPILOT_WEBHOOK_SECRET",
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as a config file, each setting commented with its origin.
    /// Secrets appear only as where they are read from. The output loads back as a config
    /// file that gives the same configuration.
    pub fn to_yaml(&self) -> String {
        let c = &self.config;
        let o = |name: &str| {
            self.origins
                .get(name)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
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
