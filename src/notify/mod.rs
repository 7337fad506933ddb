//! Notifiers: deliver alert notices to Slack (incoming webhook), a generic JSON webhook,
//! Alertmanager (`POST /api/v2/alerts`), or the log.
//!
//! Each notifier has its own worker and bounded queue, so notices to one receiver keep their
//! order (firing before resolved) and a slow receiver cannot hold up the others. Deliveries are
//! retried with capped exponential backoff, honouring Retry-After (Slack's 429s). Nothing is
//! dropped silently: a full queue refuses the notice with an error and counts it; a delivery
//! that finally fails is logged with its notice and counted.
//!
//! Alertmanager gets `endsAt` in the future while an alert fires, and its worker re-sends every
//! firing alert on a short cadence of its own ([`alertmanager`]), independent of the rules'
//! `repeat_interval`; so a live alert never expires in Alertmanager, and alerts expire by
//! themselves if poolpilot dies. A resolve is sent once, with `endsAt` = the resolve time.
//!
//! Time: the timestamps in bodies come from [`NotifyConfig::clock`] and the cadence from
//! tokio's timers, so tests run on virtual time.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::e2b::retry::RetryPolicy;
use crate::engine::AlertNotice;
use crate::rules::{Notifier, NotifierKind};

pub mod alertmanager;
mod payload;
mod worker;

use alertmanager::Firing;
use worker::Worker;

/// Where the wall-clock time in payloads comes from: the system clock, or a test's.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl WallClock {
    /// The system clock.
    pub fn system() -> Self {
        WallClock(Arc::new(Utc::now))
    }

    /// A clock of the caller's, e.g. one that follows tokio's paused clock in tests.
    pub fn new(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        WallClock(Arc::new(now))
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::system()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Notices waiting per notifier before new ones are refused.
    pub queue: usize,
    pub retry: RetryPolicy,
    /// Limit of one delivery request.
    pub timeout: Duration,
    /// How often each Alertmanager notifier re-sends all of its firing alerts, whatever the
    /// rules' `repeat_interval` (which governs only the notices people read).
    pub alertmanager_resend: Duration,
    /// How far ahead of its sending a firing alert's `endsAt` is set for Alertmanager: a few
    /// re-send cadences, so that a re-send or two may fail before the alert expires.
    pub alertmanager_ends_after: Duration,
    /// Shown as `generatorURL` in Alertmanager.
    pub generator_url: Option<String>,
    /// The time written into payloads (`endsAt`, `at`).
    pub clock: WallClock,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            queue: 1000,
            retry: RetryPolicy {
                max_attempts: 6,
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                max_retry_after: Duration::from_secs(300),
            },
            timeout: Duration::from_secs(10),
            alertmanager_resend: Duration::from_secs(60),
            alertmanager_ends_after: Duration::from_secs(4 * 60),
            generator_url: None,
            clock: WallClock::system(),
        }
    }
}

/// One notice for one notifier.
#[derive(Debug, Clone)]
pub struct Notification {
    pub notice: AlertNotice,
    pub at: DateTime<Utc>,
}

/// Delivery outcomes per notifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    pub sent: u64,
    pub failed: u64,
    pub retries: u64,
    /// Firing alerts re-sent to Alertmanager to keep them alive (not counted in `sent`).
    pub resent: u64,
    /// Refused because the queue was full.
    pub queue_full: u64,
}

/// Why a notice was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("unknown notifier {0:?}")]
    UnknownNotifier(String),
    #[error("the queue of notifier {0:?} is full; the notice was not queued")]
    QueueFull(String),
    #[error("notifier {0:?} has stopped")]
    Stopped(String),
}

/// Queues notices to notifiers' workers.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NotifyConfig,
    http: reqwest::Client,
    /// Each notifier's definition and its worker's queue; replaced on reconfiguration.
    queues: Mutex<BTreeMap<String, (Notifier, mpsc::Sender<Notification>)>>,
    /// Shared with the workers on its own: a worker holding `Inner` would keep its own queue's
    /// sender alive, and so never stop.
    stats: Arc<Mutex<BTreeMap<String, NotifierStats>>>,
    /// The firing alerts of each Alertmanager notifier, shared with its workers like the
    /// stats, and kept across a reload that changes the notifier.
    firing: Mutex<BTreeMap<String, Arc<Mutex<Firing>>>>,
}

/// What [`Dispatcher::reconfigure`] changed, by notifier name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Dispatcher {
    /// Starts one worker per notifier; they stop when every clone of the dispatcher is dropped.
    pub fn start(notifiers: &[Notifier], cfg: NotifyConfig) -> (Dispatcher, Vec<JoinHandle<()>>) {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("poolpilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let d = Dispatcher {
            inner: Arc::new(Inner {
                cfg,
                http,
                queues: Mutex::new(BTreeMap::new()),
                stats: Arc::new(Mutex::new(BTreeMap::new())),
                firing: Mutex::new(BTreeMap::new()),
            }),
        };
        let handles = notifiers.iter().map(|n| d.spawn(n)).collect();
        (d, handles)
    }

    /// Starts a worker for `n`, replacing the queue of any worker of that name. The old worker
    /// still delivers what it has queued, with its old settings, then stops.
    fn spawn(&self, n: &Notifier) -> JoinHandle<()> {
        let (tx, rx) = mpsc::channel(self.inner.cfg.queue.max(1));
        lock(&self.inner.stats).entry(n.name.clone()).or_default();
        lock(&self.inner.queues).insert(n.name.clone(), (n.clone(), tx));
        let firing = {
            let mut all = lock(&self.inner.firing);
            if n.kind == NotifierKind::Alertmanager {
                Some(all.entry(n.name.clone()).or_default().clone())
            } else {
                all.remove(&n.name);
                None
            }
        };
        let worker = Worker {
            notifier: n.clone(),
            cfg: self.inner.cfg.clone(),
            http: self.inner.http.clone(),
            stats: self.inner.stats.clone(),
            firing,
        };
        tokio::spawn(worker.run(rx))
    }

    /// Brings the notifiers in line with a reloaded rule set: new ones start, changed ones get
    /// a new worker, removed ones stop taking notices. Notices already queued are delivered by
    /// the worker that took them, so a reload loses nothing. Unchanged notifiers are untouched.
    pub fn reconfigure(&self, notifiers: &[Notifier]) -> Reconfigured {
        let mut out = Reconfigured::default();
        let current: BTreeMap<String, Notifier> = lock(&self.inner.queues)
            .iter()
            .map(|(k, (n, _))| (k.clone(), n.clone()))
            .collect();
        for n in notifiers {
            match current.get(&n.name) {
                Some(old) if old == n => continue,
                Some(_) => out.changed.push(n.name.clone()),
                None => out.added.push(n.name.clone()),
            }
            self.spawn(n);
        }
        let mut queues = lock(&self.inner.queues);
        for name in current.keys() {
            if !notifiers.iter().any(|n| &n.name == name) {
                queues.remove(name);
                lock(&self.inner.firing).remove(name);
                out.removed.push(name.clone());
            }
        }
        out
    }

    /// Queues a notice for a notifier, without waiting.
    pub fn send(&self, notifier: &str, n: Notification) -> Result<(), SendError> {
        let q = lock(&self.inner.queues)
            .get(notifier)
            .map(|(_, q)| q.clone())
            .ok_or_else(|| SendError::UnknownNotifier(notifier.to_string()))?;
        match q.try_send(n) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(n)) => {
                if let Some(s) = lock(&self.inner.stats).get_mut(notifier) {
                    s.queue_full += 1;
                }
                tracing::error!(notifier, alert = %n.notice.alert, subject = %n.notice.subject, "notification queue full; notice refused");
                Err(SendError::QueueFull(notifier.to_string()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(SendError::Stopped(notifier.to_string()))
            }
        }
    }

    /// Queues a notice for each of its notifiers; returns the errors, if any.
    pub fn send_all(&self, notice: &AlertNotice, at: DateTime<Utc>) -> Vec<SendError> {
        notice
            .notify
            .iter()
            .filter_map(|name| {
                self.send(
                    name,
                    Notification {
                        notice: notice.clone(),
                        at,
                    },
                )
                .err()
            })
            .collect()
    }

    pub fn stats(&self) -> BTreeMap<String, NotifierStats> {
        lock(&self.inner.stats).clone()
    }
}
