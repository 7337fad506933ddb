//! The agent's configuration (`poolpilot run`), documented in docs/config.md.
//!
//! A setting's value comes from, in order: a flag, its `POOLPILOT_*` environment variable, the
//! config file, E2B's own variable (`E2B_API_URL`), the default. `resolve` applies that
//! order and remembers where each value came from, for `poolpilot config print`. Secrets come
//! from the environment or from files (systemd credentials), never from the config file or a
//! flag, and are never printed: `SecretSource` says where one would be read, not what it is.
//!
//! [`Config`] is the file format: each setting's type and default. Everything else about a
//! setting (its flag, variable, bounds, and how `config print` shows it) is its one entry in
//! `settings::SETTINGS`, from which resolution, checks and printing are derived.

pub(crate) mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

pub(crate) use self::settings::{Flags, Overrides};
use self::settings::{Problem, SETTINGS};

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
    /// File holding the bearer token claim endpoints require; see `API_TOKEN` for the
    /// credential and variable read when it is absent.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub poll: PollConfig,
    /// How long the history store (`state_dir/history.db`) keeps what it holds.
    #[serde(default)]
    pub history: HistoryConfig,
    /// A PostgreSQL store shared by replicas (`postgres://user@host/db`), one of which leads;
    /// absent, the single agent's SQLite store in the state dir.
    #[serde(default)]
    pub store: Option<String>,
    /// File holding the PostgreSQL store's password (see `STORE_PASSWORD`).
    #[serde(default)]
    pub store_password_file: Option<PathBuf>,
    /// How long the leader's lease holds, with a PostgreSQL store.
    #[serde(default = "ten_s")]
    pub lease: HumanDuration,
    /// With a PostgreSQL store: the URL other replicas reach this one's API at, to forward
    /// claims to it while it leads; absent, `http://` and `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Also append each decision to `state_dir/decisions.jsonl`, for log shippers.
    #[serde(default = "yes")]
    pub decision_log: bool,
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    /// Bounds that keep the agent answering under load or attack.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Decide and log; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Virtual seconds per wall-clock second, only for running against `poolpilot emulator
    /// --speed N`: the agent then keeps the emulator's time and polls N times as often.
    /// 1 (the default) is real time, the only sense against E2B.
    #[serde(default = "real_time")]
    pub speed: f64,
}

fn yes() -> bool {
    true
}

fn real_time() -> f64 {
    1.0
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
    /// The team's concurrent sandboxes at most (E2B: 20 on Hobby, 100 on Pro): a create that
    /// would go past it is refused before it is sent.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
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

/// Retention of the history store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events, decisions, alerts, claims and pool sizes (E2B's own events API keeps 7 days).
    #[serde(default = "thirty_days")]
    pub retention: HumanDuration,
    /// Members' metric samples, which are many.
    #[serde(default = "one_day")]
    pub samples: HumanDuration,
}

fn thirty_days() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 86_400))
}
fn one_day() -> HumanDuration {
    HumanDuration(Duration::from_secs(86_400))
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            retention: thirty_days(),
            samples: one_day(),
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

impl Default for WebhookSettings {
    /// What a webhook setting given by flag or variable starts from.
    fn default() -> Self {
        WebhookSettings {
            secret_file: None,
            public_url: None,
            name: default_webhook_name(),
        }
    }
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
    pub(crate) fn invalid(message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid(vec![message.into()])
    }

    /// Each problem, one line each.
    pub(crate) fn messages(&self) -> Vec<&str> {
        match self {
            ConfigError::Usage(m) => vec![m.as_str()],
            ConfigError::Invalid(ms) => ms.iter().map(String::as_str).collect(),
        }
    }

    /// The process exit code, as docs/operations.md documents: 2 for a usage error, else 1.
    pub(crate) fn exit_code(&self) -> u8 {
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
            token_file: None,
            poll: PollConfig::default(),
            history: HistoryConfig::default(),
            store: None,
            store_password_file: None,
            lease: ten_s(),
            advertise: None,
            decision_log: yes(),
            webhook: None,
            limits: LimitsConfig::default(),
            dry_run: false,
            speed: real_time(),
        }
    }

    /// Parses a config file's text without [`settings::problems`]: flags may still supply
    /// what it lacks.
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
        settings::map_paths(&mut cfg, |p| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        });
        Ok(cfg)
    }
}

/// Reads a secret, trimmed: from `file` when given; else from the systemd credential
/// `$CREDENTIALS_DIRECTORY/<credential>` when it exists (`LoadCredential=`); else from `env`.
/// Like [`secret`], for a secret that may be absent: `None` when there is no file, no
/// credential and no variable; an error when one is given but unreadable or empty.
pub(crate) fn optional_secret(
    file: Option<&Path>,
    credential: &str,
    env: &str,
) -> Result<Option<String>, ConfigError> {
    let credential_there = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|d| PathBuf::from(d).join(credential).exists());
    if file.is_none() && !credential_there && std::env::var_os(env).is_none() {
        return Ok(None);
    }
    secret(file, credential, env).map(Some)
}

pub(crate) fn secret(
    file: Option<&Path>,
    credential: &str,
    env: &str,
) -> Result<String, ConfigError> {
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

/// The configuration in force, with where each setting came from.
#[derive(Debug, Clone)]
pub(crate) struct Effective {
    pub(crate) config: Config,
    /// By setting name: "flag --x", "env POOLPILOT_X", "file <path>", "env E2B_API_URL" or
    /// "default".
    pub(crate) origins: BTreeMap<&'static str, Origin>,
    /// Where each secret in force would be read from, by the setting that names its file
    /// (`api.key_file`; `webhook.secret_file` while the webhook receiver is on).
    pub(crate) secrets: BTreeMap<&'static str, SecretSource>,
}

/// Where a secret would be read from; never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretSource {
    File(PathBuf),
    Env(String),
    /// No file, no credential and the variable unset: `run` will refuse to start.
    Missing(String),
    /// Not set, and `run` does without it: what that means.
    Absent(&'static str),
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
            SecretSource::Absent(means) => write!(f, "not set: {means}"),
        }
    }
}

/// Finds where a secret would come from, in the order [`secret`] reads it.
pub(crate) fn secret_source(
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
pub(crate) fn resolve(
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
    for (name, origin) in o.origins() {
        origins.insert(name, origin.clone());
    }
    o.apply(&mut cfg, &mut origins);
    fill_from_environment(&mut cfg, &mut origins, env);
    let problems = settings::problems(&cfg);
    if !problems.is_empty() {
        return Err(blamed(problems, &origins, &at));
    }
    make_paths_absolute(&mut cfg);
    let secrets = settings::secrets(&cfg)
        .map(|(name, file, s)| {
            let source = match (secret_source(file, s.credential, s.env, env), s.without) {
                (SecretSource::Missing(_), Some(means)) => SecretSource::Absent(means),
                (source, _) => source,
            };
            (name, source)
        })
        .collect();
    Ok(Effective {
        config: cfg,
        origins,
        secrets,
    })
}

/// The error for `problems`, each message starting with where its value came from.
fn blamed(
    problems: Vec<Problem>,
    origins: &BTreeMap<&'static str, Origin>,
    at: &BTreeMap<&'static str, (u64, u64)>,
) -> ConfigError {
    let messages = problems
        .into_iter()
        .map(|p| match blame(origins.get(p.setting), at.get(p.setting)) {
            Some(source) => format!("{source}: `{}` {}", p.setting, p.message),
            None => format!("`{}` {}", p.setting, p.message),
        })
        .collect();
    ConfigError::Invalid(messages)
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
        .map(|s| s.name)
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
        .map(|s| {
            let origin = match file {
                Some(f) if present.contains_key(s.name) => Origin::File(f.to_path_buf()),
                _ => Origin::Default,
            };
            (s.name, origin)
        })
        .collect()
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
    if cfg.api.max_concurrent.is_none() {
        cfg.api.max_concurrent = Some(DEFAULT_MAX_CONCURRENT);
    }
}

/// Absolute paths: the same meaning wherever the output of `config print` is saved.
fn make_paths_absolute(cfg: &mut Config) {
    settings::map_paths(cfg, |p| {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    });
}

/// Creates per second when none is set (E2B's Pro tier).
pub(crate) const DEFAULT_CREATE_RATE: f64 = 5.0;

/// The team's concurrent sandboxes when none is set (E2B's Pro tier, like the create rate).
pub(crate) const DEFAULT_MAX_CONCURRENT: u32 = 100;

/// What `api.max_concurrent` accepts: E2B's Pro add-on goes to 1,100; the bound leaves room
/// for enterprise plans.
pub(crate) const MAX_CONCURRENT_RANGE: (u32, u32) = (1, 100_000);

/// Creates per second that `api.create_rate` accepts: one create every 100 s up to 1,000 a
/// second. Outside it the pacer's interval would be absurd (or overflow).
pub(crate) const CREATE_RATE_RANGE: (f64, f64) = (0.01, 1000.0);

/// What `speed` accepts: real time up to 1,000 times faster. Faster, the agent's poll interval
/// (5 s / 1000 = 5 ms) is shorter than a round trip to the emulator.
pub(crate) const SPEED_RANGE: (f64, f64) = (1.0, 1000.0);
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
pub(crate) fn check_create_rate(r: f64) -> Result<(), String> {
    check_number(
        r,
        CREATE_RATE_RANGE,
        "creates per second (E2B allows 1 on Hobby, 5 on Pro)",
    )
}

/// Checks a concurrency cap against [`MAX_CONCURRENT_RANGE`]; the error says what is valid.
pub(crate) fn check_max_concurrent(n: u32) -> Result<(), String> {
    let (lo, hi) = MAX_CONCURRENT_RANGE;
    if (lo..=hi).contains(&n) {
        return Ok(());
    }
    Err(format!(
        "must be from {lo} to {hi} sandboxes running at once (E2B allows 20 on Hobby, 100 on Pro), got {n}"
    ))
}

/// Checks a speed against [`SPEED_RANGE`]; the error says what is valid.
pub(crate) fn check_speed(v: f64) -> Result<(), String> {
    check_number(
        v,
        SPEED_RANGE,
        "virtual seconds per second (the emulator's --speed; 1 against E2B)",
    )
}

/// Checks a finite number against an inclusive range; `what` names its unit for the error.
fn check_number(v: f64, (lo, hi): (f64, f64), what: &str) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        return Ok(());
    }
    Err(format!("must be from {lo} to {hi} {what}, got {v:?}"))
}

/// Checks a duration against an inclusive range; the error says what is valid.
pub(crate) fn check_duration(d: Duration, (lo, hi): (Duration, Duration)) -> Result<(), String> {
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
pub(crate) fn check_listen(listen: &str) -> Result<(), String> {
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

/// Checks a webhook's name: printable, 1 to 128 characters.
pub(crate) fn check_webhook_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err("must be 1 to 128 printable characters, such as \"poolpilot\"".into());
    }
    Ok(())
}

/// Checks a URL: http or https with a host. The value is not repeated, since a URL may carry
/// credentials.
/// A store URL: `postgres://` or `postgresql://` with a host and a database, and no password
/// (which belongs in `store_password_file`, never in a config or on a command line).
pub(crate) fn check_store(u: &str) -> Result<(), String> {
    let example = "such as \"postgres://poolpilot@db.internal:5432/poolpilot\"";
    let url = url::Url::parse(u).map_err(|e| format!("must be a PostgreSQL URL {example}: {e}"))?;
    if !crate::store::is_postgres(u) {
        return Err(format!(
            "must be a PostgreSQL URL {example} (leave it out for SQLite in the state dir); the scheme given is {:?}",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        return Err(
            "must not hold a password: put it in store_password_file, the systemd credential store-password, or POOLPILOT_STORE_PASSWORD".into(),
        );
    }
    if url.host().is_none() || url.path().trim_start_matches('/').is_empty() {
        return Err(format!("must name a host and a database, {example}"));
    }
    Ok(())
}

/// `advertise`: an http or https URL with a host, and no path.
pub(crate) fn check_advertise(u: &str) -> Result<(), String> {
    match url::Url::parse(u) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && url.query().is_none() =>
        {
            Ok(())
        }
        _ => Err(format!(
            "must be the URL other replicas reach this one at, such as \"http://10.0.0.5:9477\" (http or https, a host, no path); got {u:?}"
        )),
    }
}

impl Config {
    /// The URL other replicas reach this one's API at: `advertise`, else `http://` and
    /// `listen`.
    pub fn advertised(&self) -> String {
        match &self.advertise {
            Some(a) => a.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

pub(crate) fn check_url(u: &str) -> Result<(), String> {
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

/// Where each setting of a config file's text is written, as (line, column) of its value.
fn positions(text: &str) -> BTreeMap<&'static str, (u64, u64)> {
    let top: BTreeMap<String, Spanned<Section>> = serde_saphyr::from_str(text).unwrap_or_default();
    SETTINGS
        .iter()
        .filter_map(|s| {
            let at = match s.name.split_once('.') {
                None => &top.get(s.name)?.referenced,
                Some((section, key)) => &top.get(section)?.value.0.get(key)?.referenced,
            };
            Some((s.name, (at.line(), at.column())))
        })
        .collect()
}

/// A YAML value, kept only as where each value of a mapping is written: a section of the
/// config file, for [`positions`]. Anything but a mapping is read and forgotten.
#[derive(Default)]
struct Section(BTreeMap<String, Spanned<IgnoredAny>>);

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Section, D::Error> {
        d.deserialize_any(SectionVisitor)
    }
}

struct SectionVisitor;

/// The visitor methods of values that are not a mapping: each gives an empty section.
macro_rules! not_a_mapping {
    ($($method:ident($t:ty)),*) => {
        $(fn $method<E: serde::de::Error>(self, _: $t) -> Result<Section, E> {
            Ok(Section::default())
        })*
    };
}

impl<'de> serde::de::Visitor<'de> for SectionVisitor {
    type Value = Section;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Section, A::Error> {
        let mut at = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Spanned<IgnoredAny>>()? {
            at.insert(key, value);
        }
        Ok(Section(at))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Section, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Section::default())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Section, D::Error> {
        Section::deserialize(d)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Section, E> {
        Ok(Section::default())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Section, E> {
        Ok(Section::default())
    }

    not_a_mapping!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8])
    );
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
pub(crate) enum Origin {
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
    pub(crate) fn require_secrets(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (_, file, s) in settings::secrets(&self.config) {
            let read = match s.without {
                Some(_) => optional_secret(file, s.credential, s.env).map(|_| ()),
                None => secret(file, s.credential, s.env).map(|_| ()),
            };
            if let Err(e) = read {
                problems.extend(e.messages().into_iter().map(String::from));
            }
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
    pub(crate) fn to_yaml(&self) -> String {
        let rows = settings::rows(self);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_found_in_block_and_flow_sections_and_at_the_top() {
        let text = "rules: [r]\nstate_dir: s\npoll:\n  metrics: 7s\nlimits: { seen_ids: 5 }\nwebhook: null\n";
        let at = positions(text);
        assert_eq!(at.get("rules"), Some(&(1, 8)));
        assert_eq!(at.get("poll.metrics"), Some(&(4, 12)));
        assert_eq!(at.get("limits.seen_ids"), Some(&(5, 21)));
        assert_eq!(at.get("poll.events"), None);
        assert_eq!(at.get("webhook.name"), None);
    }
}
