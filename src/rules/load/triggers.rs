//! The `triggers` section: rules run on lifecycle events, which alert or act on the event's
//! sandbox (replace, set_timeout, kill, pause).
//!
//! A trigger that acts on sandboxes must name its `pool`: poolpilot only touches sandboxes it
//! owns, and this check is where that promise starts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::messages::{check_labels, check_template};
use super::pools::MAX_SANDBOX_TIMEOUT;
use super::values::{SECOND, duration};
use super::{Checker, Names, check_refs};
use crate::duration::HumanDuration;
use crate::e2b::EventType;
use crate::expr::Kind;
use crate::rules::scopes::EVENT;
use crate::rules::{Trigger, TriggerAction};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    Alert,
    Replace,
    SetTimeout,
    Kill,
    Pause,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub(super) name: Spanned<String>,
    on: Spanned<String>,
    #[serde(default)]
    pool: Option<Spanned<String>>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    action: Spanned<RawAction>,
    #[serde(default)]
    timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
}

/// A trigger, or `None` after reporting every problem it has.
pub(super) fn check_trigger(c: &mut Checker, t: &RawTrigger, names: &Names) -> Option<Trigger> {
    let ctx = format!("trigger {:?}", t.name.value);
    let before = c.diags.len();
    let on = check_on(c, &ctx, &t.on);
    check_refs(c, &ctx, &t.pool, &t.notify, names);
    let when = t
        .when
        .as_ref()
        .and_then(|w| c.expr(w, &EVENT, Kind::Bool, &format!("{ctx}: when")));
    let action = check_action(c, &ctx, t);
    let message = check_template(
        c,
        &ctx,
        &t.message,
        "{rule}: {type} for sandbox {sandbox_id}",
        &EVENT,
    );
    let (severity, labels) = check_labels(c, &ctx, &t.name, &t.severity, &t.labels);
    if c.diags.len() > before {
        return None;
    }
    Some(Trigger {
        name: t.name.value.clone(),
        on,
        pool: t.pool.as_ref().map(|p| p.value.clone()),
        when,
        action,
        severity,
        labels,
        message: message?,
        notify: t.notify.iter().map(|n| n.value.clone()).collect(),
    })
}

/// The event type `on` names; the `sandbox.lifecycle.` prefix may be left out.
fn check_on(c: &mut Checker, ctx: &str, on: &Spanned<String>) -> EventType {
    let on_text = on.value.trim();
    let full = if on_text.contains('.') {
        on_text.to_string()
    } else {
        format!("sandbox.lifecycle.{on_text}")
    };
    let event_type = EventType::parse(&full);
    if let EventType::Other(_) = event_type {
        let known: Vec<&str> = EventType::KNOWN
            .iter()
            .map(|e| e.as_str().trim_start_matches("sandbox.lifecycle."))
            .collect();
        c.at(on.referenced, format!("{ctx}: unknown event type {:?}; valid: {} (or their full sandbox.lifecycle.* names)", on.value, known.join(", ")));
    }
    event_type
}

/// The action, with what it needs: `timeout` for set_timeout, `pool` for any action on
/// sandboxes, `notify` for alert.
fn check_action(c: &mut Checker, ctx: &str, t: &RawTrigger) -> TriggerAction {
    let action = match t.action.value {
        RawAction::Alert => TriggerAction::Alert,
        RawAction::Replace => TriggerAction::Replace,
        RawAction::SetTimeout => match t.timeout {
            Some(_) => TriggerAction::SetTimeout(duration(
                c,
                ctx,
                "timeout",
                &t.timeout,
                Duration::ZERO,
                (SECOND, MAX_SANDBOX_TIMEOUT),
            )),
            None => {
                c.at(
                    t.action.referenced,
                    format!("{ctx}: action set_timeout needs `timeout`, e.g. timeout: 10m"),
                );
                TriggerAction::SetTimeout(Duration::ZERO)
            }
        },
        RawAction::Kill => TriggerAction::Kill,
        RawAction::Pause => TriggerAction::Pause,
    };
    if !matches!(action, TriggerAction::Alert) && t.pool.is_none() {
        c.at(t.action.referenced, format!("{ctx}: action {:?} acts on sandboxes and needs `pool`: poolpilot only touches sandboxes it owns", t.action.value));
    }
    if matches!(action, TriggerAction::Alert) && t.notify.is_empty() {
        c.at(
            t.action.referenced,
            format!("{ctx}: action alert needs `notify` with at least one notifier"),
        );
    }
    action
}
