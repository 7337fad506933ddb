//! Alert evaluation: one state machine per (alert, subject).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::pools::{Agg, Prepared, bind_sandbox, bounds};
use super::time;
use super::{Action, AlertNotice, AlertPhase, AlertState, AlertStatus, Cause, Decision};
use crate::e2b::SandboxState;
use crate::expr::{Bindings, Text, format_number};
use crate::rules::scopes::{POOL, SANDBOX, TEAM, pool as ps, team as ts};
use crate::rules::{Alert, AlertScope, RuleSet};

/// Samples older than this do not count for sandbox and team alerts.
pub const ALERT_STALE_AFTER: Duration = Duration::from_secs(30);

/// One subject's evaluation: Some(condition) and the value it saw, or None without data.
struct Outcome {
    active: Option<bool>,
    value: f64,
}

fn evaluate(alert: &Alert, b: &Bindings<'_>, has_data: bool) -> Outcome {
    let value = alert.when.variables().find_map(|v| b.num(v)).unwrap_or(0.0);
    let active = if has_data {
        alert.when.eval_bool(b).ok()
    } else {
        None
    };
    Outcome { active, value }
}

/// Renders the alert's message for a subject; only called on transitions.
fn render(alert: &Alert, b: &Bindings<'_>, subject: &str, value: f64) -> String {
    alert.message.render(&|name| match name {
        "alert" | "rule" => Some(alert.name.clone()),
        "severity" => Some(alert.severity.clone()),
        "subject" => Some(subject.to_string()),
        "value" => Some(format_number(value)),
        other => b.render(other),
    })
}

pub(super) fn run(
    rules: &RuleSet,
    states: &mut BTreeMap<String, BTreeMap<String, AlertState>>,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    out: &mut Vec<Decision>,
) {
    for alert in &rules.alerts {
        let st = states.entry(alert.name.clone()).or_default();
        // Subjects seen this step, by reference: no allocation per sandbox.
        let mut seen: HashSet<&str> = HashSet::new();
        match alert.scope {
            AlertScope::Sandbox => {
                let mut b = Bindings::new(&SANDBOX);
                for s in &prepared.sandboxes {
                    if s.obs.state != SandboxState::Running {
                        continue;
                    }
                    if alert
                        .pool
                        .as_deref()
                        .is_some_and(|p| s.obs.pool() != Some(p))
                    {
                        continue;
                    }
                    let fresh = bind_sandbox(&mut b, s, now, ALERT_STALE_AFTER);
                    let o = evaluate(alert, &b, fresh);
                    seen.insert(&s.obs.id);
                    transition(alert, st, now, &s.obs.id, o, &b, out);
                }
            }
            AlertScope::Pool => {
                for pool in rules
                    .pools
                    .iter()
                    .filter(|p| alert.pool.as_ref().is_none_or(|a| a == &p.name))
                {
                    let members: &[usize] = prepared
                        .by_pool
                        .get(pool.name.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]);
                    let mut sb = Bindings::new(&SANDBOX);
                    let mut agg = Agg::new();
                    let mut busy = 0usize;
                    for &i in members {
                        if bind_sandbox(&mut sb, &prepared.sandboxes[i], now, pool.stale_after) {
                            agg.add(&sb);
                            busy += usize::from(pool.busy.eval_bool(&sb).unwrap_or(false));
                        }
                    }
                    let (min, max, _) = bounds(pool, now);
                    let (name, tpl) = (Text::new(&pool.name), Text::new(&pool.template));
                    let mut b = Bindings::new(&POOL);
                    b.set_num(ps::SIZE, members.len() as f64);
                    b.set_num(ps::RUNNING, members.len() as f64);
                    b.set_num(ps::PENDING_CREATES, 0.0);
                    b.set_num(ps::MIN, min as f64);
                    b.set_num(ps::MAX, max as f64);
                    b.set_num(ps::BUSY_COUNT, busy as f64);
                    b.set_num(
                        ps::BUSY_RATIO,
                        if agg.n == 0 {
                            0.0
                        } else {
                            busy as f64 / agg.n as f64
                        },
                    );
                    b.set_num(ps::WITH_DATA, agg.n as f64);
                    agg.write(&mut b, ps::AVG, ps::MIN_OF, ps::MAX_OF);
                    b.set_text(ps::POOL, &name);
                    b.set_text(ps::TEMPLATE, &tpl);
                    // A pool with members but none reporting has no data.
                    let has_data = members.is_empty() || agg.n > 0;
                    let o = evaluate(alert, &b, has_data);
                    seen.insert(&pool.name);
                    transition(alert, st, now, &pool.name, o, &b, out);
                }
            }
            AlertScope::Team => {
                let mut sb = Bindings::new(&SANDBOX);
                let mut agg = Agg::new();
                let (mut running, mut paused) = (0usize, 0usize);
                for s in &prepared.sandboxes {
                    match s.obs.state {
                        SandboxState::Running => running += 1,
                        SandboxState::Paused => {
                            paused += 1;
                            continue;
                        }
                    }
                    if bind_sandbox(&mut sb, s, now, ALERT_STALE_AFTER) {
                        agg.add(&sb);
                    }
                }
                let mut b = Bindings::new(&TEAM);
                b.set_num(ts::RUNNING, running as f64);
                b.set_num(ts::PAUSED, paused as f64);
                b.set_num(ts::WITH_DATA, agg.n as f64);
                agg.write(&mut b, ts::AVG, ts::MIN_OF, ts::MAX_OF);
                let o = evaluate(alert, &b, true);
                seen.insert("team");
                transition(alert, st, now, "team", o, &b, out);
            }
        }
        // Subjects that are gone: a firing alert resolves, a pending one is dropped.
        if st.len() > seen.len() || st.keys().any(|k| !seen.contains(k.as_str())) {
            let gone: Vec<String> = st
                .keys()
                .filter(|k| !seen.contains(k.as_str()))
                .cloned()
                .collect();
            for subject in gone {
                if let Some(s) = st.remove(&subject)
                    && s.phase == AlertPhase::Firing
                {
                    let message = format!("{} resolved: {subject} is gone", alert.name);
                    out.push(notice(
                        alert,
                        now,
                        &subject,
                        AlertStatus::Resolved,
                        false,
                        message,
                        &s,
                        "the subject disappeared",
                    ));
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn notice(
    alert: &Alert,
    now: DateTime<Utc>,
    subject: &str,
    status: AlertStatus,
    repeat: bool,
    message: String,
    s: &AlertState,
    why: &str,
) -> Decision {
    let mut values = BTreeMap::new();
    values.insert("value".to_string(), s.value);
    let verb = match (status, repeat) {
        (AlertStatus::Firing, false) => "firing",
        (AlertStatus::Firing, true) => "still firing",
        (AlertStatus::Resolved, _) => "resolved",
    };
    Decision {
        at: now,
        rule: alert.name.clone(),
        action: Action::Alert(AlertNotice {
            alert: alert.name.clone(),
            subject: subject.to_string(),
            status,
            repeat,
            severity: alert.severity.clone(),
            labels: alert.labels.clone(),
            message,
            notify: alert.notify.clone(),
            started_at: s.fired_at.unwrap_or(s.active_since),
        }),
        dry_run: false,
        cause: Cause {
            summary: format!(
                "alert {} {verb} for {subject}: {} ({why}, value {})",
                alert.name,
                alert.when,
                format_number(s.value)
            ),
            values,
            ..Cause::default()
        },
    }
}

fn transition(
    alert: &Alert,
    st: &mut BTreeMap<String, AlertState>,
    now: DateTime<Utc>,
    subject: &str,
    o: Outcome,
    b: &Bindings<'_>,
    out: &mut Vec<Decision>,
) {
    let Some(active) = o.active else {
        return; // No data: keep whatever state there is; missing data never resolves.
    };
    match (st.get_mut(subject), active) {
        (None, false) => {}
        (None, true) => {
            let mut s = AlertState {
                phase: AlertPhase::Pending,
                active_since: now,
                fired_at: None,
                last_notified: None,
                false_since: None,
                value: o.value,
            };
            if alert.for_.is_zero() {
                s.phase = AlertPhase::Firing;
                s.fired_at = Some(now);
                s.last_notified = Some(now);
                out.push(notice(
                    alert,
                    now,
                    subject,
                    AlertStatus::Firing,
                    false,
                    render(alert, b, subject, o.value),
                    &s,
                    "condition true",
                ));
            }
            st.insert(subject.to_string(), s);
        }
        (Some(s), true) => {
            s.value = o.value;
            s.false_since = None;
            match s.phase {
                AlertPhase::Pending if now >= time::after(s.active_since, alert.for_) => {
                    s.phase = AlertPhase::Firing;
                    s.fired_at = Some(now);
                    s.last_notified = Some(now);
                    let why = format!("true for {}", humantime::format_duration(alert.for_));
                    out.push(notice(
                        alert,
                        now,
                        subject,
                        AlertStatus::Firing,
                        false,
                        render(alert, b, subject, o.value),
                        s,
                        &why,
                    ));
                }
                AlertPhase::Firing
                    if s.last_notified
                        .is_none_or(|t| now >= time::after(t, alert.repeat_interval)) =>
                {
                    s.last_notified = Some(now);
                    out.push(notice(
                        alert,
                        now,
                        subject,
                        AlertStatus::Firing,
                        true,
                        render(alert, b, subject, o.value),
                        s,
                        "repeat_interval passed",
                    ));
                }
                _ => {}
            }
        }
        (Some(s), false) => match s.phase {
            AlertPhase::Pending => {
                st.remove(subject);
            }
            AlertPhase::Firing => {
                let since = *s.false_since.get_or_insert(now);
                if now >= time::after(since, alert.keep_firing_for)
                    && let Some(mut s) = st.remove(subject)
                {
                    // The resolve reports the value that made it resolve, not the last one
                    // that kept it firing.
                    s.value = o.value;
                    let why = if alert.keep_firing_for.is_zero() {
                        "condition false".to_string()
                    } else {
                        format!(
                            "false for {}",
                            humantime::format_duration(alert.keep_firing_for)
                        )
                    };
                    out.push(notice(
                        alert,
                        now,
                        subject,
                        AlertStatus::Resolved,
                        false,
                        format!(
                            "{} resolved: {}",
                            alert.name,
                            render(alert, b, subject, o.value)
                        ),
                        &s,
                        &why,
                    ));
                }
            }
        },
    }
}
