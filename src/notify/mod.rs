//! Notifiers: deliver alert notices to Slack (incoming webhook), a generic JSON webhook,
//! Alertmanager (`POST /api/v2/alerts`), or the log.
//!
//! Each notifier has its own worker and bounded queue, so notices to one receiver keep their
//! order (firing before resolved) and a slow receiver cannot hold up the others. Deliveries are
//! retried with capped exponential backoff, honouring Retry-After (Slack's 429s). Nothing is
//! dropped silently: a full queue refuses the notice with an error and counts it; a delivery
//! that finally fails is logged with its notice and counted.
//!
//! Alertmanager gets `endsAt` in the future while an alert fires (the caller re-sends firing
//! alerts before it passes), so alerts expire by themselves if poolpilot dies; a resolve sends
//! `endsAt` = now.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::e2b::retry::RetryPolicy;
use crate::engine::{AlertNotice, AlertStatus};
use crate::rules::{Notifier, NotifierKind};

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Notices waiting per notifier before new ones are refused.
    pub queue: usize,
    pub retry: RetryPolicy,
    /// Limit of one delivery request.
    pub timeout: Duration,
    /// How far ahead of now a firing alert's `endsAt` is set for Alertmanager.
    pub alertmanager_ends_after: Duration,
    /// Shown as `generatorURL` in Alertmanager.
    pub generator_url: Option<String>,
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
            alertmanager_ends_after: Duration::from_secs(5 * 60),
            generator_url: None,
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let worker = Worker {
            notifier: n.clone(),
            cfg: self.inner.cfg.clone(),
            http: self.inner.http.clone(),
            stats: self.inner.stats.clone(),
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
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            self.deliver(&n).await;
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
                let s = &n.notice;
                match s.status {
                    AlertStatus::Firing => {
                        tracing::warn!(notifier = %self.notifier.name, alert = %s.alert, subject = %s.subject, severity = %s.severity, repeat = s.repeat, "{}", s.message)
                    }
                    AlertStatus::Resolved => {
                        tracing::info!(notifier = %self.notifier.name, alert = %s.alert, subject = %s.subject, severity = %s.severity, "{}", s.message)
                    }
                }
                return Try::Done;
            }
            NotifierKind::Slack => slack_payload(&n.notice),
            NotifierKind::Webhook => webhook_payload(n),
            NotifierKind::Alertmanager => alertmanager_payload(n, &self.cfg),
        };
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

/// Alertmanager `POST /api/v2/alerts` body.
pub fn alertmanager_payload(n: &Notification, cfg: &NotifyConfig) -> serde_json::Value {
    let mut labels = n.notice.labels.clone();
    labels.insert("alertname".into(), n.notice.alert.clone());
    labels.insert("subject".into(), n.notice.subject.clone());
    labels.insert("severity".into(), n.notice.severity.clone());
    labels.insert("source".into(), "poolpilot".into());
    // Alertmanager judges endsAt by its own clock, at the moment it receives the alert. A
    // firing alert therefore lives `alertmanager_ends_after` past the later of the decision
    // and the delivery (which may come after retries); a resolve is stamped no later than
    // now, so it resolves at once even when poolpilot's clock runs ahead.
    let sent = Utc::now();
    let ends = match n.notice.status {
        AlertStatus::Firing => {
            n.at.max(sent)
                + TimeDelta::from_std(cfg.alertmanager_ends_after).unwrap_or(TimeDelta::minutes(5))
        }
        AlertStatus::Resolved => n.at.min(sent).max(n.notice.started_at),
    };
    let mut alert = json!({
        "labels": labels,
        "annotations": { "summary": n.notice.message },
        "startsAt": n.notice.started_at,
        "endsAt": ends,
    });
    if let Some(u) = &cfg.generator_url {
        alert["generatorURL"] = json!(u);
    }
    json!([alert])
}
