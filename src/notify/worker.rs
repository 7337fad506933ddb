//! One notifier's worker: takes notices from its bounded queue in order and delivers each,
//! retrying with capped exponential backoff (honouring Retry-After); an Alertmanager worker also
//! re-sends its firing alerts on its own cadence. A worker never drops a notice silently: a
//! delivery that finally fails is counted and logged with the notice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::alertmanager::{self, Firing};
use super::payload::{log_notice, slack_payload, webhook_payload};
use super::{Notification, NotifierStats, NotifyConfig};
use crate::rules::{Notifier, NotifierKind};
use crate::sync::lock;

pub(super) struct Worker {
    pub(super) notifier: Notifier,
    pub(super) cfg: NotifyConfig,
    pub(super) http: reqwest::Client,
    pub(super) stats: Arc<Mutex<BTreeMap<String, NotifierStats>>>,
    /// For an Alertmanager notifier: its firing alerts, to re-send on the cadence.
    pub(super) firing: Option<Arc<Mutex<Firing>>>,
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
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Notification>) {
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
