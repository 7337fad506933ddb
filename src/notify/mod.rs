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
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::e2b::retry::RetryPolicy;
use crate::engine::{AlertNotice, AlertStatus};
use crate::rules::{Notifier, NotifierKind};

pub mod alertmanager;

use alertmanager::Firing;

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

struct Worker {
    notifier: Notifier,
    cfg: NotifyConfig,
    http: reqwest::Client,
    stats: Arc<Mutex<BTreeMap<String, NotifierStats>>>,
    /// For an Alertmanager notifier: its firing alerts, to re-send on the cadence.
    firing: Option<Arc<Mutex<Firing>>>,
}

/// The outcome of one try.
enum Try {
    Done,
    Retry {
        after: Option<Duration>,
        why: String,
    },
    Fail(String),
}

impl Worker {
    /// Delivers queued notices in order until the queue closes; an Alertmanager worker also
    /// re-sends its firing alerts on the cadence.
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        let mut resend = self.firing.as_ref().map(|_| {
            let every = self.cfg.alertmanager_resend.max(MIN_RESEND);
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            // Not biased: a queue that never empties must not starve the re-sends.
            tokio::select! {
                n = rx.recv() => {
                    let Some(n) = n else { return };
                    if let Some(f) = &self.firing {
                        lock(f).track(&n);
                    }
                    self.deliver(&n).await;
                }
                () = next_tick(&mut resend) => self.resend_firing().await,
            }
        }
    }

    /// Re-sends every firing alert to Alertmanager, in batches, once each: a failure is
    /// counted and logged, and the next cadence tries again well before `endsAt`.
    async fn resend_firing(&self) {
        let Some(f) = &self.firing else { return };
        let all = lock(f).all();
        for batch in all.chunks(alertmanager::RESEND_BATCH) {
            let body = alertmanager::payload(batch, &self.cfg, self.cfg.clock.now());
            let n = batch.len() as u64;
            match self.post(body).await {
                Try::Done => self.bump(|s| s.resent += n),
                Try::Retry { why, .. } | Try::Fail(why) => {
                    self.bump(|s| s.failed += n);
                    tracing::error!(notifier = %self.notifier.name, alerts = n, error = %why, "re-sending firing alerts to Alertmanager failed; trying again next cadence");
                }
            }
        }
    }

    fn bump(&self, f: impl FnOnce(&mut NotifierStats)) {
        if let Some(s) = lock(&self.stats).get_mut(&self.notifier.name) {
            f(s);
        }
    }

    async fn deliver(&self, n: &Notification) {
        let mut retry = 0u32;
        loop {
            let outcome = self.try_once(n).await;
            match outcome {
                Try::Done => {
                    self.bump(|s| s.sent += 1);
                    return;
                }
                Try::Fail(why) => {
                    self.give_up(n, &why);
                    return;
                }
                Try::Retry { after, why } => {
                    let policy = &self.cfg.retry;
                    let delay = policy.delay(retry, after, fastrand::f64());
                    match delay {
                        Some(d) if retry + 1 < policy.max_attempts => {
                            tracing::warn!(notifier = %self.notifier.name, alert = %n.notice.alert, error = %why, retry = retry + 1, delay_ms = d.as_millis() as u64, "notification failed, retrying");
                            self.bump(|s| s.retries += 1);
                            tokio::time::sleep(d).await;
                            retry += 1;
                        }
                        _ => {
                            self.give_up(n, &why);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn give_up(&self, n: &Notification, why: &str) {
        self.bump(|s| s.failed += 1);
        tracing::error!(
            notifier = %self.notifier.name,
            alert = %n.notice.alert,
            subject = %n.notice.subject,
            status = ?n.notice.status,
            message = %n.notice.message,
            error = %why,
            "notification failed for good"
        );
    }

    async fn try_once(&self, n: &Notification) -> Try {
        let body = match self.notifier.kind {
            NotifierKind::Log => {
                log_notice(&self.notifier.name, &n.notice);
                return Try::Done;
            }
            NotifierKind::Slack => slack_payload(&n.notice),
            NotifierKind::Webhook => webhook_payload(n),
            NotifierKind::Alertmanager => {
                alertmanager::payload(std::slice::from_ref(n), &self.cfg, self.cfg.clock.now())
            }
        };
        self.post(body).await
    }

    /// POSTs a body to the notifier's receiver once and says what came of it.
    async fn post(&self, body: serde_json::Value) -> Try {
        let Some(base) = &self.notifier.url else {
            return Try::Fail("no url".into());
        };
        let url = match self.notifier.kind {
            NotifierKind::Alertmanager => format!("{}/api/v2/alerts", base.trim_end_matches('/')),
            _ => base.clone(),
        };
        match self.http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => Try::Done,
            Ok(r) => {
                let status = r.status().as_u16();
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text: String = r
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                let why = format!("HTTP {status}: {text}");
                if status == 429 || status >= 500 || status == 408 {
                    Try::Retry { after, why }
                } else {
                    Try::Fail(why)
                }
            }
            // Without the URL: a Slack incoming-webhook URL is itself the credential.
            Err(e) => Try::Retry {
                after: None,
                why: format!("request failed: {}", e.without_url()),
            },
        }
    }
}

/// The shortest re-send cadence: a zero would make tokio's interval panic.
const MIN_RESEND: Duration = Duration::from_millis(10);

/// Completes at the interval's next tick, or never without one.
async fn next_tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The log notifier: a firing notice at warn, a resolve at info.
fn log_notice(notifier: &str, s: &AlertNotice) {
    match s.status {
        AlertStatus::Firing => {
            tracing::warn!(notifier, alert = %s.alert, subject = %s.subject, severity = %s.severity, repeat = s.repeat, "{}", s.message)
        }
        AlertStatus::Resolved => {
            tracing::info!(notifier, alert = %s.alert, subject = %s.subject, severity = %s.severity, "{}", s.message)
        }
    }
}

fn status_word(n: &AlertNotice) -> &'static str {
    match n.status {
        AlertStatus::Firing => "FIRING",
        AlertStatus::Resolved => "RESOLVED",
    }
}

/// Slack incoming-webhook payload.
pub fn slack_payload(n: &AlertNotice) -> serde_json::Value {
    let icon = match n.status {
        AlertStatus::Firing => ":rotating_light:",
        AlertStatus::Resolved => ":white_check_mark:",
    };
    json!({ "text": format!("{icon} [{}] {} ({}, {}): {}", status_word(n), n.alert, n.subject, n.severity, n.message) })
}

/// Generic webhook payload: the notice as JSON.
pub fn webhook_payload(n: &Notification) -> serde_json::Value {
    json!({
        "version": "1",
        "status": match n.notice.status { AlertStatus::Firing => "firing", AlertStatus::Resolved => "resolved" },
        "alert": n.notice.alert,
        "subject": n.notice.subject,
        "severity": n.notice.severity,
        "labels": n.notice.labels,
        "message": n.notice.message,
        "repeat": n.notice.repeat,
        "startsAt": n.notice.started_at,
        "at": n.at,
    })
}

/// Alertmanager `POST /api/v2/alerts` body of one notice, sent now by `cfg.clock`.
pub fn alertmanager_payload(n: &Notification, cfg: &NotifyConfig) -> serde_json::Value {
    alertmanager::payload(std::slice::from_ref(n), cfg, cfg.clock.now())
}
