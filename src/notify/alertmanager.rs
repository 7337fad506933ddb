//! Alertmanager: the `POST /api/v2/alerts` body, and the firing alerts a notifier keeps alive.
//!
//! Alertmanager resolves an alert by itself once its `endsAt` has passed, so a firing alert
//! must be re-sent before that happens, however long the rule's human-facing
//! `repeat_interval` is. As Prometheus does, every Alertmanager worker re-sends all of its
//! firing alerts on a short cadence ([`super::NotifyConfig::alertmanager_resend`], a minute by
//! default) with `endsAt` a few cadences ahead
//! ([`super::NotifyConfig::alertmanager_ends_after`]). A resolve is sent once, with `endsAt`
//! at the moment it resolved, and the alert is no longer re-sent. If poolpilot stops, its
//! alerts expire by themselves.
//!
//! This module builds bodies and keeps the set; it never sends anything itself.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::{Notification, NotifyConfig};
use crate::engine::AlertStatus;

/// Alerts per request when firing alerts are re-sent, so that one body stays small.
pub(crate) const RESEND_BATCH: usize = 500;

/// The firing alerts of one Alertmanager notifier, by (alert, subject): the last notice of
/// each. Shared by the successive workers of a notifier, so that a reload that changes its
/// URL keeps re-sending what fires.
#[derive(Debug, Default)]
pub(crate) struct Firing {
    alerts: BTreeMap<(String, String), Notification>,
}

impl Firing {
    /// Takes a notice: a firing one is kept (replacing an older notice of the same alert and
    /// subject), a resolve forgets its alert.
    pub(crate) fn track(&mut self, n: &Notification) {
        let key = (n.notice.alert.clone(), n.notice.subject.clone());
        match n.notice.status {
            AlertStatus::Firing => {
                self.alerts.insert(key, n.clone());
            }
            AlertStatus::Resolved => {
                self.alerts.remove(&key);
            }
        }
    }

    /// Every alert still firing, in a stable order.
    pub(crate) fn all(&self) -> Vec<Notification> {
        self.alerts.values().cloned().collect()
    }
}

/// When Alertmanager should consider a notice over, if it is sent at `sent`.
///
/// Alertmanager judges `endsAt` by its own clock, at the moment it receives the alert. A
/// firing alert therefore lives `alertmanager_ends_after` past the later of the decision and
/// the sending (which may come after retries, or be a re-send); a resolve is stamped no later
/// than `sent` (and no earlier than the start), so it resolves at once even when poolpilot's
/// clock runs ahead.
pub fn ends_at(n: &Notification, cfg: &NotifyConfig, sent: DateTime<Utc>) -> DateTime<Utc> {
    match n.notice.status {
        AlertStatus::Firing => {
            let ahead = TimeDelta::from_std(cfg.alertmanager_ends_after)
                .unwrap_or(TimeDelta::MAX)
                .max(TimeDelta::zero());
            n.at.max(sent)
                .checked_add_signed(ahead)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        }
        AlertStatus::Resolved => n.at.min(sent).max(n.notice.started_at),
    }
}

/// One alert of an Alertmanager `POST /api/v2/alerts` body, as sent at `sent`.
pub fn alert(n: &Notification, cfg: &NotifyConfig, sent: DateTime<Utc>) -> serde_json::Value {
    let mut labels = n.notice.labels.clone();
    labels.insert("alertname".into(), n.notice.alert.clone());
    labels.insert("subject".into(), n.notice.subject.clone());
    labels.insert("severity".into(), n.notice.severity.clone());
    labels.insert("source".into(), "poolpilot".into());
    let mut alert = json!({
        "labels": labels,
        "annotations": { "summary": n.notice.message },
        "startsAt": n.notice.started_at,
        "endsAt": ends_at(n, cfg, sent),
    });
    if let Some(u) = &cfg.generator_url {
        alert["generatorURL"] = json!(u);
    }
    alert
}

/// An Alertmanager `POST /api/v2/alerts` body of several notices, as sent at `sent`.
pub fn payload(
    batch: &[Notification],
    cfg: &NotifyConfig,
    sent: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::Value::Array(batch.iter().map(|n| alert(n, cfg, sent)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AlertNotice;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::minutes(min)
    }

    fn note(subject: &str, status: AlertStatus, when: DateTime<Utc>) -> Notification {
        Notification {
            notice: AlertNotice {
                alert: "hot".into(),
                subject: subject.into(),
                status,
                repeat: false,
                severity: "warning".into(),
                labels: BTreeMap::from([("team".into(), "ml".into())]),
                message: "m".into(),
                notify: vec!["am".into()],
                started_at: at(0),
            },
            at: when,
        }
    }

    #[test]
    fn firing_alerts_are_kept_until_they_resolve() {
        let mut f = Firing::default();
        f.track(&note("a", AlertStatus::Firing, at(0)));
        f.track(&note("b", AlertStatus::Firing, at(0)));
        f.track(&note("a", AlertStatus::Firing, at(240)));
        let all = f.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].at, at(240), "a repeat replaces the older notice");
        f.track(&note("a", AlertStatus::Resolved, at(241)));
        assert_eq!(f.all().len(), 1);
        f.track(&note("b", AlertStatus::Resolved, at(241)));
        assert!(f.all().is_empty());
    }

    #[test]
    fn ends_at_is_ahead_of_the_sending_while_firing_and_the_resolve_time_after() {
        let cfg = NotifyConfig::default();
        let firing = note("a", AlertStatus::Firing, at(0));
        // A re-send an hour in: endsAt moves with the sending, not with the decision.
        assert_eq!(ends_at(&firing, &cfg, at(60)), at(64));
        let resolved = note("a", AlertStatus::Resolved, at(61));
        assert_eq!(ends_at(&resolved, &cfg, at(62)), at(61));
        // Delivered before the decision time (a clock ahead): never later than the sending.
        assert_eq!(ends_at(&resolved, &cfg, at(30)), at(30));
    }

    #[test]
    fn ends_at_saturates_instead_of_overflowing() {
        let cfg = NotifyConfig {
            alertmanager_ends_after: std::time::Duration::MAX,
            ..NotifyConfig::default()
        };
        let n = note("a", AlertStatus::Firing, DateTime::<Utc>::MAX_UTC);
        assert_eq!(ends_at(&n, &cfg, at(0)), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn the_body_names_the_alert_and_keeps_the_rules_labels() {
        let cfg = NotifyConfig::default();
        let body = payload(&[note("a", AlertStatus::Firing, at(0))], &cfg, at(0));
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "hot");
        assert_eq!(a["labels"]["subject"], "a");
        assert_eq!(a["labels"]["source"], "poolpilot");
        assert_eq!(a["labels"]["team"], "ml");
        assert_eq!(a["annotations"]["summary"], "m");
        assert_eq!(a["endsAt"], json!(at(4)));
    }
}
