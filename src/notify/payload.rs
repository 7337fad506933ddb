//! What each kind of notifier says: the log line, Slack's incoming-webhook text, and the
//! generic webhook's JSON. Alertmanager's body is in [`super::alertmanager`]. Pure functions of
//! a notice; no I/O besides the log notifier's log line.

use serde_json::json;

use super::Notification;
use crate::engine::{AlertNotice, AlertStatus};

/// The log notifier: a firing notice at warn, a resolve at info.
pub(super) fn log_notice(notifier: &str, s: &AlertNotice) {
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
pub(super) fn slack_payload(n: &AlertNotice) -> serde_json::Value {
    let icon = match n.status {
        AlertStatus::Firing => ":rotating_light:",
        AlertStatus::Resolved => ":white_check_mark:",
    };
    json!({ "text": format!("{icon} [{}] {} ({}, {}): {}", status_word(n), n.alert, n.subject, n.severity, n.message) })
}

/// Generic webhook payload: the notice as JSON.
pub(super) fn webhook_payload(n: &Notification) -> serde_json::Value {
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
