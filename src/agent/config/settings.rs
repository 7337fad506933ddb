//! Every setting of `poolpilot run`, declared once in [`SETTINGS`]: its name in the config
//! file, its flag and `POOLPILOT_*` variable with their help, its type and place in
//! [`Config`], and its bounds. From that one table come the flags of `run` and `config print`
//! ([`Flags`]), the overrides they make with each error naming its source ([`Overrides`]),
//! the checks ([`problems`]), the paths made absolute ([`map_paths`]) and `config print`'s
//! YAML ([`rows`]).
//!
//! A new setting is a field of [`Config`] (its type, its default and the file format) and one
//! entry here. The table's order is the order of `--help` and of `config print`; it must
//! never hold a secret's value: a secret has a file setting, whose entry names where else it
//! may be read ([`Secret`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};

use super::{
    CREATE_RATE_RANGE, Config, ConfigError, DEFAULT_CREATE_RATE, DEFAULT_MAX_CONCURRENT, Effective,
    MAX_CONCURRENT_RANGE, Origin, SPEED_RANGE, WebhookSettings, check_create_rate, check_duration,
    check_listen, check_max_concurrent, check_speed, check_url, check_webhook_name, q, qp,
};
use crate::duration::HumanDuration;

/// One setting: everything the file, the flags, the checks and `config print` know about it.
pub(crate) struct Setting {
    /// Its key in the config file, in `config print` and in messages; a dot nests it in a
    /// section: `poll.metrics`.
    pub(crate) name: &'static str,
    /// The flag and variable that win over the file; None for a setting only the file gives.
    pub(crate) flag: Option<Flag>,
    /// Its type, where it lives in [`Config`], and what it must be.
    pub(crate) value: Value,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A setting's flag and `POOLPILOT_*` variable.
pub(crate) struct Flag {
    /// `--listen`.
    pub(crate) long: &'static str,
    /// `POOLPILOT_LISTEN`.
    pub(crate) env: &'static str,
    /// What `--help` calls the value: `HOST:PORT`.
    pub(crate) value_name: &'static str,
    /// The `--help` line, ending with the file key and default: `[file: listen; default ...]`.
    pub(crate) help: &'static str,
}

/// A secret that a file setting points to, read from that file, else the systemd credential,
/// else the variable. Only where it is read from is ever shown.
pub(crate) struct Secret {
    /// How `config print` calls it: "the API key".
    pub(crate) what: &'static str,
    /// The systemd credential (`$CREDENTIALS_DIRECTORY/<credential>`).
    pub(crate) credential: &'static str,
    /// The variable holding it when there is no file and no credential.
    pub(crate) env: &'static str,
    /// For a secret `run` can do without: what its absence means. `None`: it is required.
    pub(crate) without: Option<&'static str>,
}

/// The E2B API key: `api.key_file`, else the credential `e2b-api-key`, else `E2B_API_KEY`.
pub(crate) const API_KEY: Secret = Secret {
    what: "the API key",
    credential: "e2b-api-key",
    env: "E2B_API_KEY",
    without: None,
};

/// The webhook signature secret: `webhook.secret_file`, else the credential `webhook-secret`,
/// else `POOLPILOT_WEBHOOK_SECRET`.
pub(crate) const WEBHOOK_SECRET: Secret = Secret {
    what: "the signature secret",
    credential: "webhook-secret",
    env: "POOLPILOT_WEBHOOK_SECRET",
    without: None,
};

/// The token that claim endpoints require: `token_file`, else the credential `api-token`,
/// else `POOLPILOT_API_TOKEN`; none of them is no token (claims then only on loopback).
pub(crate) const API_TOKEN: Secret = Secret {
    what: "the API token",
    credential: "api-token",
    env: "POOLPILOT_API_TOKEN",
    without: Some("claims are served on loopback only, without a token"),
};

/// The password of a PostgreSQL store: `store_password_file`, else the credential
/// `store-password`, else `POOLPILOT_STORE_PASSWORD`; none of them is no password (trust or
/// peer authentication).
pub(crate) const STORE_PASSWORD: Secret = Secret {
    what: "the store's password",
    credential: "store-password",
    env: "POOLPILOT_STORE_PASSWORD",
    without: Some("the store is reached without a password"),
};

/// A setting's type, with how to read and write it in a [`Config`] and what it must be.
pub(crate) enum Value {
    /// Text: a URL, an address, a name; `check` says what a valid one is.
    Text {
        get: fn(&Config) -> Option<&str>,
        set: fn(&mut Config, String),
        check: fn(&str) -> Result<(), String>,
    },
    /// A file or folder. In the file it is taken from the file's folder; by flag or
    /// variable, from the working directory.
    Path {
        get: fn(&Config) -> Option<&Path>,
        set: fn(&mut Config, PathBuf),
        /// When it must be given: what to give, for the message.
        required: Option<&'static str>,
        /// The secret this file holds, if it does.
        secret: Option<Secret>,
    },
    /// Files and folders; given by flag or variable, they replace the file's list.
    Paths {
        get: fn(&Config) -> &[PathBuf],
        set: fn(&mut Config, Vec<PathBuf>),
        /// What to give, for the message when there is none.
        required: &'static str,
    },
    /// A duration within `range`.
    Duration {
        get: fn(&Config) -> HumanDuration,
        set: fn(&mut Config, HumanDuration),
        range: (Duration, Duration),
    },
    /// Creates per second, within [`CREATE_RATE_RANGE`].
    Rate {
        get: fn(&Config) -> Option<f64>,
        set: fn(&mut Config, f64),
    },
    /// The team's concurrent sandboxes, within [`MAX_CONCURRENT_RANGE`].
    Cap {
        get: fn(&Config) -> Option<u32>,
        set: fn(&mut Config, u32),
    },
    /// A count within `range`; only the file gives one.
    Count {
        get: fn(&Config) -> usize,
        range: (usize, usize),
    },
    /// Virtual seconds per wall-clock second, within [`SPEED_RANGE`].
    Speed {
        get: fn(&Config) -> f64,
        set: fn(&mut Config, f64),
    },
    /// True or false.
    Bool {
        get: fn(&Config) -> bool,
        set: fn(&mut Config, bool),
    },
    /// A section that is on or off as a whole (the webhook receiver). Any of its settings
    /// (`<name>.*`) given by flag or variable turns it on; off, its settings are not shown.
    Switch {
        on: fn(&Config) -> bool,
        set: fn(&mut Config, bool),
        /// What being off means, for `config print`.
        off: &'static str,
    },
}

/// The webhook section, created with its defaults when a webhook setting turns it on.
fn webhook(c: &mut Config) -> &mut WebhookSettings {
    c.webhook.get_or_insert_with(WebhookSettings::default)
}

/// A duration of whole seconds, for the bounds below.
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every setting, in the order of `--help` and `config print`.
pub(crate) static SETTINGS: &[Setting] = &[
    Setting {
        name: "api.url",
        flag: Some(Flag {
            long: "--api-url",
            env: "POOLPILOT_API_URL",
            value_name: "URL",
            help: "E2B's API base URL [file: api.url; else E2B_API_URL, else https://api.e2b.app]",
        }),
        value: Value::Text {
            get: |c| c.api.url.as_deref(),
            set: |c, v| c.api.url = Some(v),
            check: check_url,
        },
    },
    Setting {
        name: "api.key_file",
        flag: Some(Flag {
            long: "--api-key-file",
            env: "POOLPILOT_API_KEY_FILE",
            value_name: "FILE",
            help: "File holding the API key [file: api.key_file]",
        }),
        value: Value::Path {
            get: |c| c.api.key_file.as_deref(),
            set: |c, v| c.api.key_file = Some(v),
            required: None,
            secret: Some(API_KEY),
        },
    },
    Setting {
        name: "api.create_rate",
        flag: Some(Flag {
            long: "--create-rate",
            env: "POOLPILOT_CREATE_RATE",
            value_name: "PER_SECOND",
            help: "Sandbox creates per second, at most [file: api.create_rate; default 5]",
        }),
        value: Value::Rate {
            get: |c| c.api.create_rate,
            set: |c, v| c.api.create_rate = Some(v),
        },
    },
    Setting {
        name: "api.max_concurrent",
        flag: Some(Flag {
            long: "--max-concurrent",
            env: "POOLPILOT_MAX_CONCURRENT",
            value_name: "SANDBOXES",
            help: "The team's concurrent sandboxes, at most; creates past it are refused [file: api.max_concurrent; default 100]",
        }),
        value: Value::Cap {
            get: |c| c.api.max_concurrent,
            set: |c, v| c.api.max_concurrent = Some(v),
        },
    },
    Setting {
        name: "rules",
        flag: Some(Flag {
            long: "--rules",
            env: "POOLPILOT_RULES",
            value_name: "PATH",
            help: "Rule file or directory; repeat, or separate with commas [file: rules]",
        }),
        value: Value::Paths {
            get: |c| &c.rules,
            set: |c, v| c.rules = v,
            required: "name at least one rule file or directory",
        },
    },
    Setting {
        name: "state_dir",
        flag: Some(Flag {
            long: "--state-dir",
            env: "POOLPILOT_STATE_DIR",
            value_name: "DIR",
            help: "State and decision log folder [file: state_dir]",
        }),
        value: Value::Path {
            get: |c| Some(&c.state_dir),
            set: |c, v| c.state_dir = v,
            required: Some("give a folder"),
            secret: None,
        },
    },
    Setting {
        name: "token_file",
        flag: Some(Flag {
            long: "--token-file",
            env: "POOLPILOT_TOKEN_FILE",
            value_name: "FILE",
            help: "File holding the bearer token that claim endpoints require [file: token_file]",
        }),
        value: Value::Path {
            get: |c| c.token_file.as_deref(),
            set: |c, v| c.token_file = Some(v),
            required: None,
            secret: Some(API_TOKEN),
        },
    },
    Setting {
        name: "listen",
        flag: Some(Flag {
            long: "--listen",
            env: "POOLPILOT_LISTEN",
            value_name: "HOST:PORT",
            help: "Address of the HTTP server [file: listen; default 127.0.0.1:9477]",
        }),
        value: Value::Text {
            get: |c| Some(&c.listen),
            set: |c, v| c.listen = v,
            check: check_listen,
        },
    },
    Setting {
        name: "poll.metrics",
        flag: Some(Flag {
            long: "--poll-metrics",
            env: "POOLPILOT_POLL_METRICS",
            value_name: "DURATION",
            help: "Control loop interval [file: poll.metrics; default 5s]",
        }),
        // The loop's turn, from 100 ms to an hour.
        value: Value::Duration {
            get: |c| c.poll.metrics,
            set: |c, v| c.poll.metrics = v,
            range: (Duration::from_millis(100), secs(3600)),
        },
    },
    Setting {
        name: "poll.events",
        flag: Some(Flag {
            long: "--poll-events",
            env: "POOLPILOT_POLL_EVENTS",
            value_name: "DURATION",
            help: "Events API poll interval [file: poll.events; default 10s]",
        }),
        // From 1 s (E2B's API is not a stream) to an hour.
        value: Value::Duration {
            get: |c| c.poll.events,
            set: |c, v| c.poll.events = v,
            range: (secs(1), secs(3600)),
        },
    },
    Setting {
        name: "history.retention",
        flag: Some(Flag {
            long: "--history-retention",
            env: "POOLPILOT_HISTORY_RETENTION",
            value_name: "DURATION",
            help: "How long the history store keeps events, decisions, alerts, claims and pool sizes [file: history.retention; default 30d]",
        }),
        // From an hour to ten years.
        value: Value::Duration {
            get: |c| c.history.retention,
            set: |c, v| c.history.retention = v,
            range: (secs(3600), secs(3650 * 86_400)),
        },
    },
    Setting {
        name: "history.samples",
        flag: None,
        // Members' metric samples: from 10 minutes to 30 days.
        value: Value::Duration {
            get: |c| c.history.samples,
            set: |c, v| c.history.samples = v,
            range: (secs(600), secs(30 * 86_400)),
        },
    },
    Setting {
        name: "store",
        flag: Some(Flag {
            long: "--store",
            env: "POOLPILOT_STORE",
            value_name: "URL",
            help: "postgres://user@host/db shared by replicas, one leading (HA); absent, SQLite in the state dir [file: store]",
        }),
        value: Value::Text {
            get: |c| c.store.as_deref(),
            set: |c, v| c.store = Some(v),
            check: super::check_store,
        },
    },
    Setting {
        name: "store_password_file",
        flag: Some(Flag {
            long: "--store-password-file",
            env: "POOLPILOT_STORE_PASSWORD_FILE",
            value_name: "FILE",
            help: "File holding the PostgreSQL store's password [file: store_password_file]",
        }),
        value: Value::Path {
            get: |c| c.store_password_file.as_deref(),
            set: |c, v| c.store_password_file = Some(v),
            required: None,
            secret: Some(STORE_PASSWORD),
        },
    },
    Setting {
        name: "lease",
        flag: Some(Flag {
            long: "--lease",
            env: "POOLPILOT_LEASE",
            value_name: "DURATION",
            help: "With a PostgreSQL store: how long the leader's lease holds; a standby takes over within about 1.4 times it [file: lease; default 10s]",
        }),
        // From 2 s (a renewal every ~0.7 s) to 5 minutes.
        value: Value::Duration {
            get: |c| c.lease,
            set: |c, v| c.lease = v,
            range: (secs(2), secs(300)),
        },
    },
    Setting {
        name: "advertise",
        flag: Some(Flag {
            long: "--advertise",
            env: "POOLPILOT_ADVERTISE",
            value_name: "URL",
            help: "With a PostgreSQL store: the URL other replicas reach this one at, to forward claims to the leader [file: advertise; default http://<listen>]",
        }),
        value: Value::Text {
            get: |c| c.advertise.as_deref(),
            set: |c, v| c.advertise = Some(v),
            check: super::check_advertise,
        },
    },
    Setting {
        name: "decision_log",
        flag: Some(Flag {
            long: "--decision-log",
            env: "POOLPILOT_DECISION_LOG",
            value_name: "BOOL",
            help: "Also append each decision to state_dir/decisions.jsonl [file: decision_log; default true]",
        }),
        value: Value::Bool {
            get: |c| c.decision_log,
            set: |c, v| c.decision_log = v,
        },
    },
    Setting {
        name: "webhook",
        flag: Some(Flag {
            long: "--webhook",
            env: "POOLPILOT_WEBHOOK",
            value_name: "BOOL",
            help: "Serve POST /webhooks/e2b [file: webhook; implied by the other --webhook-* flags]",
        }),
        value: Value::Switch {
            on: |c| c.webhook.is_some(),
            set: |c, on| {
                if on {
                    webhook(c);
                } else {
                    c.webhook = None;
                }
            },
            off: "no POST /webhooks/e2b",
        },
    },
    Setting {
        name: "webhook.secret_file",
        flag: Some(Flag {
            long: "--webhook-secret-file",
            env: "POOLPILOT_WEBHOOK_SECRET_FILE",
            value_name: "FILE",
            help: "File holding the webhook signature secret [file: webhook.secret_file]",
        }),
        value: Value::Path {
            get: |c| c.webhook.as_ref().and_then(|w| w.secret_file.as_deref()),
            set: |c, v| webhook(c).secret_file = Some(v),
            required: None,
            secret: Some(WEBHOOK_SECRET),
        },
    },
    Setting {
        name: "webhook.public_url",
        flag: Some(Flag {
            long: "--webhook-public-url",
            env: "POOLPILOT_WEBHOOK_PUBLIC_URL",
            value_name: "URL",
            help: "URL E2B delivers to; registers the webhook at start [file: webhook.public_url]",
        }),
        value: Value::Text {
            get: |c| c.webhook.as_ref().and_then(|w| w.public_url.as_deref()),
            set: |c, v| webhook(c).public_url = Some(v),
            check: check_url,
        },
    },
    Setting {
        name: "webhook.name",
        flag: Some(Flag {
            long: "--webhook-name",
            env: "POOLPILOT_WEBHOOK_NAME",
            value_name: "NAME",
            help: "Name of the registered webhook [file: webhook.name; default poolpilot]",
        }),
        value: Value::Text {
            get: |c| c.webhook.as_ref().map(|w| w.name.as_str()),
            set: |c, v| webhook(c).name = v,
            check: check_webhook_name,
        },
    },
    Setting {
        name: "limits.max_connections",
        flag: None,
        value: Value::Count {
            get: |c| c.limits.max_connections,
            range: (1, 1_000_000),
        },
    },
    Setting {
        name: "limits.header_timeout",
        flag: None,
        value: Value::Duration {
            get: |c| c.limits.header_timeout,
            set: |c, v| c.limits.header_timeout = v,
            range: (Duration::from_millis(10), secs(3600)),
        },
    },
    Setting {
        name: "limits.body_timeout",
        flag: None,
        value: Value::Duration {
            get: |c| c.limits.body_timeout,
            set: |c, v| c.limits.body_timeout = v,
            range: (Duration::from_millis(10), secs(3600)),
        },
    },
    Setting {
        name: "limits.seen_ids",
        flag: None,
        value: Value::Count {
            get: |c| c.limits.seen_ids,
            range: (1, 100_000_000),
        },
    },
    Setting {
        name: "limits.seen_bytes",
        flag: None,
        value: Value::Count {
            get: |c| c.limits.seen_bytes,
            range: (1024, 1 << 36),
        },
    },
    Setting {
        name: "dry_run",
        flag: Some(Flag {
            long: "--dry-run",
            env: "POOLPILOT_DRY_RUN",
            value_name: "BOOL",
            help: "Decide and log; change nothing [file: dry_run]",
        }),
        value: Value::Bool {
            get: |c| c.dry_run,
            set: |c, v| c.dry_run = v,
        },
    },
    Setting {
        name: "speed",
        flag: Some(Flag {
            long: "--speed",
            env: "POOLPILOT_SPEED",
            value_name: "FACTOR",
            help: "Virtual seconds per second, only for running against `poolpilot emulator --speed N` [file: speed; default 1]",
        }),
        value: Value::Speed {
            get: |c| c.speed,
            set: |c, v| c.speed = v,
        },
    },
];

/// The order problems have always been reported in (docs and scripts compare the output). A
/// setting not named here reports after these, in table order.
const REPORT_ORDER: [&str; 14] = [
    "rules",
    "state_dir",
    "api.create_rate",
    "poll.metrics",
    "poll.events",
    "listen",
    "api.url",
    "webhook.public_url",
    "webhook.name",
    "limits.max_connections",
    "limits.seen_ids",
    "limits.seen_bytes",
    "limits.header_timeout",
    "limits.body_timeout",
];

impl Setting {
    /// The section this setting is in, when the section is itself a setting (a switch).
    fn switch(&self) -> Option<&'static Setting> {
        let (section, _) = self.name.split_once('.')?;
        SETTINGS
            .iter()
            .find(|s| s.name == section && matches!(s.value, Value::Switch { .. }))
    }

    /// False when the setting's section is switched off: then it has no value.
    fn in_force(&self, c: &Config) -> bool {
        match self.switch().map(|s| &s.value) {
            Some(Value::Switch { on, .. }) => on(c),
            _ => true,
        }
    }

    /// What is wrong with this setting's value in `c`, if anything.
    fn problem(&self, c: &Config) -> Option<String> {
        let required = |what: &str| {
            let f = self.flag.as_ref();
            format!(
                "is required: {what} in the config file (`{}:`), by {}, or by {}",
                self.name,
                f.map_or("", |f| f.long),
                f.map_or("", |f| f.env)
            )
        };
        match &self.value {
            Value::Text { get, check, .. } => get(c).and_then(|v| check(v).err()),
            Value::Path {
                get,
                required: Some(what),
                ..
            } => get(c)
                .is_none_or(|p| p.as_os_str().is_empty())
                .then(|| required(what)),
            Value::Paths {
                get,
                required: what,
                ..
            } => get(c).is_empty().then(|| required(what)),
            Value::Duration { get, range, .. } => check_duration(get(c).0, *range).err(),
            Value::Rate { get, .. } => get(c).and_then(|r| check_create_rate(r).err()),
            Value::Cap { get, .. } => get(c).and_then(|n| check_max_concurrent(n).err()),
            Value::Speed { get, .. } => check_speed(get(c)).err(),
            Value::Count {
                get,
                range: (lo, hi),
            } => {
                let v = get(c);
                (!(lo..=hi).contains(&&v)).then(|| format!("must be from {lo} to {hi}, got {v}"))
            }
            Value::Path { .. } | Value::Bool { .. } | Value::Switch { .. } => None,
        }
    }
}

/// One setting's problem, before it is blamed on where the value came from.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) setting: &'static str,
    pub(crate) message: String,
}

/// Every problem the file format cannot catch: required settings, values in range, in
/// [`REPORT_ORDER`].
pub(crate) fn problems(c: &Config) -> Vec<Problem> {
    let mut out: Vec<Problem> = SETTINGS
        .iter()
        .filter(|s| s.in_force(c))
        .filter_map(|s| {
            s.problem(c).map(|message| Problem {
                setting: s.name,
                message,
            })
        })
        .collect();
    let rank = |p: &Problem| {
        REPORT_ORDER
            .iter()
            .position(|n| *n == p.setting)
            .unwrap_or(REPORT_ORDER.len())
    };
    out.sort_by_key(rank);
    out
}

/// Rewrites every path setting that has a value with `f`: relative paths made absolute.
pub(crate) fn map_paths(c: &mut Config, f: impl Fn(&Path) -> PathBuf) {
    for s in SETTINGS {
        match &s.value {
            Value::Path { get, set, .. } => {
                if let Some(p) = get(c).map(&f) {
                    set(c, p);
                }
            }
            Value::Paths { get, set, .. } => {
                let ps = get(c).iter().map(|p| f(p)).collect();
                set(c, ps);
            }
            _ => {}
        }
    }
}

/// Each secret in force, by the name of the setting that names its file: that file, the
/// credential and the variable, in the order `run` reads them.
pub(crate) fn secrets(c: &Config) -> impl Iterator<Item = (&'static str, Option<&Path>, &Secret)> {
    SETTINGS
        .iter()
        .filter(|s| s.in_force(c))
        .filter_map(|s| match &s.value {
            Value::Path {
                get,
                secret: Some(secret),
                ..
            } => Some((s.name, get(c), secret)),
            _ => None,
        })
}

/// A setting given by flag or variable, as clap read it, before it is parsed.
#[derive(Debug, Clone)]
enum Raw {
    Text(String),
    Path(PathBuf),
    Paths(Vec<PathBuf>),
}

/// The settings given by flag or variable, as text, each with where it came from: the flags
/// of `run` and `config print`, made from [`SETTINGS`]. [`Flags::overrides`] parses them, so
/// that an error names its flag or variable.
#[derive(Debug, Clone, Default)]
pub(crate) struct Flags {
    given: Vec<(&'static Setting, Raw, Origin)>,
}

impl Flag {
    /// The clap argument, by the setting's name.
    fn arg(&self, s: &Setting) -> Arg {
        let arg = Arg::new(s.name)
            .long(self.long.trim_start_matches('-'))
            .env(self.env)
            .value_name(self.value_name)
            .help(self.help)
            .required(false);
        match s.value {
            Value::Paths { .. } => arg
                .value_parser(clap::value_parser!(PathBuf))
                .action(ArgAction::Append)
                .value_delimiter(','),
            Value::Path { .. } => arg
                .value_parser(clap::value_parser!(PathBuf))
                .action(ArgAction::Set),
            // `--dry-run` alone means true.
            Value::Bool { .. } | Value::Switch { .. } => arg
                .value_parser(clap::value_parser!(String))
                .action(ArgAction::Set)
                .num_args(0..=1)
                .default_missing_value("true"),
            _ => arg
                .value_parser(clap::value_parser!(String))
                .action(ArgAction::Set),
        }
    }
}

impl clap::Args for Flags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        SETTINGS.iter().fold(cmd, |cmd, s| match &s.flag {
            Some(f) => cmd.arg(f.arg(s)),
            None => cmd,
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for Flags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for s in SETTINGS {
            let Some(f) = &s.flag else { continue };
            let origin = match m.value_source(s.name) {
                Some(ValueSource::CommandLine) => Origin::Flag(f.long),
                Some(ValueSource::EnvVariable) => Origin::Env(f.env),
                _ => continue,
            };
            let raw = match s.value {
                Value::Paths { .. } => Raw::Paths(
                    m.get_many::<PathBuf>(s.name)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect(),
                ),
                Value::Path { .. } => match m.get_one::<PathBuf>(s.name) {
                    Some(p) => Raw::Path(p.clone()),
                    None => continue,
                },
                _ => match m.get_one::<String>(s.name) {
                    Some(t) => Raw::Text(t.clone()),
                    None => continue,
                },
            };
            given.push((s, raw, origin));
        }
        Ok(Flags { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// A setting's value given by flag or variable, parsed.
#[derive(Debug, Clone)]
enum Given {
    Text(String),
    Path(PathBuf),
    Paths(Vec<PathBuf>),
    Duration(HumanDuration),
    Rate(f64),
    Cap(u32),
    Speed(f64),
    Bool(bool),
}

/// Settings given by flag or environment variable, parsed; each wins over the config file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// In table order, so a switch comes before the settings in its section.
    given: Vec<(&'static Setting, Given, Origin)>,
}

impl Flags {
    /// The overrides, each parsed with its flag or variable named in any error.
    pub(crate) fn overrides(&self) -> Result<Overrides, ConfigError> {
        let mut given = Vec::new();
        for (s, raw, origin) in &self.given {
            let source = match origin {
                Origin::Flag(n) | Origin::Env(n) => *n,
                _ => s.name,
            };
            given.push((*s, parse(&s.value, raw.clone(), source)?, origin.clone()));
        }
        Ok(Overrides { given })
    }
}

/// Parses a value given by flag or variable; `source` (`--flag` or `POOLPILOT_X`) is named in
/// the error, which is a usage error.
fn parse(value: &Value, raw: Raw, source: &str) -> Result<Given, ConfigError> {
    let usage = |m: String| ConfigError::Usage(format!("{source}: {m}"));
    Ok(match (value, raw) {
        (_, Raw::Path(p)) => Given::Path(p),
        (_, Raw::Paths(ps)) => Given::Paths(ps),
        (Value::Duration { .. }, Raw::Text(t)) => Given::Duration(t.parse().map_err(usage)?),
        (Value::Rate { .. }, Raw::Text(t)) => {
            let (lo, hi) = CREATE_RATE_RANGE;
            Given::Rate(t.trim().parse().map_err(|_| {
                usage(format!(
                    "invalid value {t:?}: expected creates per second, a number from {lo} to {hi} such as 5"
                ))
            })?)
        }
        (Value::Cap { .. }, Raw::Text(t)) => {
            let (lo, hi) = MAX_CONCURRENT_RANGE;
            Given::Cap(t.trim().parse().map_err(|_| {
                usage(format!(
                    "invalid value {t:?}: expected sandboxes running at once, a whole number from {lo} to {hi} such as 100"
                ))
            })?)
        }
        (Value::Speed { .. }, Raw::Text(t)) => {
            let (lo, hi) = SPEED_RANGE;
            Given::Speed(t.trim().parse().map_err(|_| {
                usage(format!(
                    "invalid value {t:?}: expected virtual seconds per second, a number from {lo} to {hi} such as 10"
                ))
            })?)
        }
        // As clap's boolish values: true, yes, on, 1, y, t and false, no, off, 0, n, f.
        (Value::Bool { .. } | Value::Switch { .. }, Raw::Text(t)) => {
            match t.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" | "y" | "t" => Given::Bool(true),
                "false" | "no" | "off" | "0" | "n" | "f" => Given::Bool(false),
                _ => {
                    return Err(usage(format!(
                        "invalid value {t:?}: expected true or false (also 1/0, yes/no, on/off)"
                    )));
                }
            }
        }
        (_, Raw::Text(t)) => Given::Text(t),
    })
}

impl Overrides {
    /// Where each given setting came from.
    pub(crate) fn origins(&self) -> impl Iterator<Item = (&'static str, &Origin)> {
        self.given.iter().map(|(s, _, o)| (s.name, o))
    }

    /// Puts each flag and variable over the file's value. A setting in a switched-off
    /// section turns it on, and the switch is then blamed on it; a switch turned off stays
    /// off whatever its settings say.
    pub(crate) fn apply(&self, c: &mut Config, origins: &mut BTreeMap<&'static str, Origin>) {
        let mut off = Vec::new();
        for (s, given, origin) in &self.given {
            if let (Value::Switch { set, .. }, Given::Bool(false)) = (&s.value, given) {
                off.push(*set);
                continue;
            }
            if let Some(switch) = s.switch()
                && !s.in_force(c)
            {
                origins.insert(switch.name, Origin::ImpliedBy(Box::new(origin.clone())));
            }
            put(&s.value, c, given.clone());
        }
        for set in off {
            set(c, false);
        }
    }
}

/// Writes a parsed value into its place in the config. [`parse`] gives each type of setting
/// its own kind of value, so other pairs do not occur.
fn put(value: &Value, c: &mut Config, given: Given) {
    match (value, given) {
        (Value::Text { set, .. }, Given::Text(v)) => set(c, v),
        (Value::Path { set, .. }, Given::Path(v)) => set(c, v),
        // An empty list keeps the file's.
        (Value::Paths { set, .. }, Given::Paths(v)) if !v.is_empty() => set(c, v),
        (Value::Duration { set, .. }, Given::Duration(v)) => set(c, v),
        (Value::Rate { set, .. }, Given::Rate(v)) => set(c, v),
        (Value::Cap { set, .. }, Given::Cap(v)) => set(c, v),
        (Value::Speed { set, .. }, Given::Speed(v)) => set(c, v),
        (Value::Bool { set, .. } | Value::Switch { set, .. }, Given::Bool(v)) => set(c, v),
        _ => {}
    }
}

/// `config print`'s lines, each with its comment (empty for none): every setting in table
/// order, a section's name before its first setting, a switched-off section as `null`.
pub(crate) fn rows(eff: &Effective) -> Vec<(String, String)> {
    let c = &eff.config;
    let mut rows = Vec::new();
    let mut section = None;
    for s in SETTINGS {
        let (parent, key) = match s.name.split_once('.') {
            Some((p, k)) => (Some(p), k),
            None => (None, s.name),
        };
        if !s.in_force(c) {
            continue;
        }
        if let Some(p) = parent
            && s.switch().is_none()
            && section != parent
        {
            rows.push((format!("{p}:"), String::new()));
        }
        section = parent;
        let indent = if parent.is_some() { "  " } else { "" };
        let origin = eff
            .origins
            .get(s.name)
            .map(ToString::to_string)
            .unwrap_or_default();
        print(s, &format!("{indent}{key}"), origin, eff, &mut rows);
    }
    rows
}

/// One setting's rows in `config print`: `key: value  # origin`.
fn print(
    s: &Setting,
    key: &str,
    origin: String,
    eff: &Effective,
    rows: &mut Vec<(String, String)>,
) {
    let c = &eff.config;
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    let (value, comment) = match &s.value {
        Value::Text { get, .. } => (or_null(get(c).map(q)), origin),
        Value::Path { get, secret, .. } => {
            let comment = match secret {
                Some(secret) => format!(
                    "{origin}; {} is {}",
                    secret.what,
                    eff.secrets
                        .get(s.name)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                None => origin,
            };
            (or_null(get(c).map(qp)), comment)
        }
        Value::Paths { get, .. } => {
            rows.push((format!("{key}:"), origin));
            let indent = &key[..key.len() - key.trim_start().len()];
            for p in get(c) {
                rows.push((format!("{indent}  - {}", qp(p)), String::new()));
            }
            return;
        }
        Value::Duration { get, .. } => (q(&get(c).to_string()), origin),
        Value::Rate { get, .. } => (get(c).unwrap_or(DEFAULT_CREATE_RATE).to_string(), origin),
        Value::Cap { get, .. } => (get(c).unwrap_or(DEFAULT_MAX_CONCURRENT).to_string(), origin),
        Value::Speed { get, .. } => (get(c).to_string(), origin),
        Value::Count { get, .. } => (get(c).to_string(), origin),
        Value::Bool { get, .. } => (get(c).to_string(), origin),
        Value::Switch { on, off, .. } => {
            rows.push(match on(c) {
                true => (format!("{key}:"), origin),
                false => (format!("{key}: null"), format!("off: {off}")),
            });
            return;
        }
    };
    rows.push((format!("{key}: {value}"), comment));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_declared_once_with_its_own_flag_and_variable() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len(), "a setting is declared twice");
        for s in SETTINGS {
            if let Some(f) = &s.flag {
                assert!(f.long.starts_with("--"), "{}", s.name);
                assert!(f.env.starts_with("POOLPILOT_"), "{}", s.name);
                assert!(f.help.contains(&format!("[file: {}", s.name)), "{}", s.name);
            }
        }
        for n in REPORT_ORDER {
            assert!(SETTINGS.iter().any(|s| s.name == n), "{n} is not a setting");
        }
    }

    #[test]
    fn a_switch_comes_before_the_settings_it_holds() {
        for (i, s) in SETTINGS.iter().enumerate() {
            if let Some(switch) = s.switch() {
                let at = SETTINGS.iter().position(|x| x.name == switch.name);
                assert!(at.is_some_and(|at| at < i), "{}", s.name);
            }
        }
    }
}
