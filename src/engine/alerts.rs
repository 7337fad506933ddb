//! Alert evaluation: one state machine per (alert, subject), moved by [`transition`].
//!
//! ```text
//!  inactive ──true──► pending ──true for `for`──► firing ──repeat_interval──► firing (repeat)
//!     ▲                  │                           │
//!     │ false: dropped,  │                           │ false for `keep_firing_for`, or the
//!     │ nothing sent     │                           │ subject is gone: resolved
//!     └──────────────────┴───────────────────────────┘
//! ```
//!
//! With a zero `for`, a true condition goes from inactive straight to firing.
//!
//! Missing data never moves the machine: it keeps whatever state there is, so a silent
//! sandbox neither fires nor resolves.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::prepare::{Agg, PoolTexts, PoolView, Prepared, PreparedSandbox, bind_sandbox, bounds};
use super::time;
use super::{Action, AlertNotice, AlertPhase, AlertState, AlertStatus, Cause, Decision};
use crate::e2b::SandboxState;
use crate::expr::{Bindings, format_number};
use crate::rules::scopes::{POOL, SANDBOX, TEAM, team as ts};
use crate::rules::{Alert, AlertScope, RuleSet};

/// Samples older than this do not count for sandbox and team alerts.
pub(crate) const ALERT_STALE_AFTER: Duration = Duration::from_secs(30);

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

/// Evaluates every alert over its subjects at `now`, then resolves the subjects that are gone.
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
        let mut at = Subjects {
            alert,
            st,
            now,
            seen: &mut seen,
            out,
        };
        match alert.scope {
            AlertScope::Sandbox => each_sandbox(&mut at, prepared),
            AlertScope::Pool => each_pool(&mut at, rules, prepared),
            AlertScope::Team => the_team(&mut at, prepared),
        }
        resolve_gone(alert, st, now, &seen, out);
    }
}

/// One alert's evaluation over its subjects at one step.
struct Subjects<'s, 'a> {
    alert: &'s Alert,
    st: &'s mut BTreeMap<String, AlertState>,
    now: DateTime<Utc>,
    seen: &'s mut HashSet<&'a str>,
    out: &'s mut Vec<Decision>,
}

impl<'a> Subjects<'_, 'a> {
    /// Evaluates the alert for one subject and moves its state machine.
    fn evaluate(&mut self, subject: &'a str, b: &Bindings<'_>, has_data: bool) {
        let o = evaluate(self.alert, b, has_data);
        self.seen.insert(subject);
        transition(self.alert, self.st, self.now, subject, o, b, self.out);
    }
}

/// Sandbox scope: every running sandbox (of the alert's pool, when it names one). A sandbox
/// without a sample newer than [`ALERT_STALE_AFTER`] has no data.
fn each_sandbox<'a>(at: &mut Subjects<'_, 'a>, prepared: &'a Prepared<'_>) {
    let mut b = Bindings::new(&SANDBOX);
    let mut one = |at: &mut Subjects<'_, 'a>, s: &'a PreparedSandbox<'_>| {
        let fresh = bind_sandbox(&mut b, s, at.now, ALERT_STALE_AFTER);
        at.evaluate(&s.obs.id, &b, fresh);
    };
    match at.alert.pool.as_deref() {
        // A pool's alert reads only its running members, already indexed: not every sandbox.
        Some(pool) => {
            for &i in prepared.members(pool) {
                one(at, &prepared.sandboxes[i]);
            }
        }
        None => {
            for s in prepared
                .sandboxes
                .iter()
                .filter(|s| s.obs.state == SandboxState::Running)
            {
                one(at, s);
            }
        }
    }
}

/// Pool scope: every pool (or the alert's one), over its running members. Unlike pool
/// evaluation, pending creates are not counted and a member whose `busy` has no value counts
/// as not busy. A pool with members but none reporting has no data.
fn each_pool<'a>(at: &mut Subjects<'_, 'a>, rules: &'a RuleSet, prepared: &Prepared<'_>) {
    let alert = at.alert;
    for pool in rules
        .pools
        .iter()
        .filter(|p| alert.pool.as_ref().is_none_or(|a| a == &p.name))
    {
        let members = prepared.members(&pool.name);
        let mut sb = Bindings::new(&SANDBOX);
        let mut agg = Agg::new();
        let mut busy = 0usize;
        for &i in members {
            if bind_sandbox(&mut sb, &prepared.sandboxes[i], at.now, pool.stale_after) {
                agg.add(&sb);
                busy += usize::from(pool.busy.eval_bool(&sb).unwrap_or(false));
            }
        }
        let bounds = bounds(pool, at.now);
        let view = PoolView {
            running: u32::try_from(members.len()).unwrap_or(u32::MAX),
            pending_creates: 0,
            bounds: &bounds,
            busy,
            agg: &agg,
            claims: prepared.claim_view(&pool.name),
        };
        let texts = PoolTexts::of(pool);
        let mut b = Bindings::new(&POOL);
        view.bind(&mut b, &texts);
        let has_data = members.is_empty() || agg.n > 0;
        at.evaluate(&pool.name, &b, has_data);
    }
}

/// Team scope: one subject, `team`, over every sandbox; paused ones are counted, not
/// aggregated.
fn the_team(at: &mut Subjects<'_, '_>, prepared: &Prepared<'_>) {
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
        if bind_sandbox(&mut sb, s, at.now, ALERT_STALE_AFTER) {
            agg.add(&sb);
        }
    }
    let mut b = Bindings::new(&TEAM);
    b.set_num(ts::RUNNING, running as f64);
    b.set_num(ts::PAUSED, paused as f64);
    b.set_num(ts::WITH_DATA, agg.n as f64);
    agg.write(&mut b, ts::AVG, ts::MIN_OF, ts::MAX_OF);
    at.evaluate("team", &b, true);
}

/// Subjects that are gone: a firing alert resolves, a pending one is dropped.
fn resolve_gone(
    alert: &Alert,
    st: &mut BTreeMap<String, AlertState>,
    now: DateTime<Utc>,
    seen: &HashSet<&str>,
    out: &mut Vec<Decision>,
) {
    if st.len() <= seen.len() && st.keys().all(|k| seen.contains(k.as_str())) {
        return;
    }
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

/// Moves one subject's state machine: inactive -> pending -> firing -> resolved.
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
    let seen = Seen {
        alert,
        now,
        subject,
        value: o.value,
        b,
    };
    match (st.get_mut(subject), active) {
        (None, false) => {}
        (None, true) => {
            let s = seen.became_true(out);
            st.insert(subject.to_string(), s);
        }
        (Some(s), true) => seen.still_true(s, out),
        (Some(s), false) => {
            if seen.false_long_enough(s) {
                let gone = st.remove(subject);
                if let Some(s) = gone.filter(|s| s.phase == AlertPhase::Firing) {
                    out.push(seen.resolve(s));
                }
            }
        }
    }
}

/// What one evaluation saw of one subject, for the transitions it may cause.
struct Seen<'s> {
    alert: &'s Alert,
    now: DateTime<Utc>,
    subject: &'s str,
    value: f64,
    b: &'s Bindings<'s>,
}

impl Seen<'_> {
    /// Inactive -> pending, or straight to firing (and notifying) when `for` is zero.
    fn became_true(&self, out: &mut Vec<Decision>) -> AlertState {
        let mut s = AlertState {
            phase: AlertPhase::Pending,
            active_since: self.now,
            fired_at: None,
            last_notified: None,
            false_since: None,
            value: self.value,
        };
        if self.alert.for_.is_zero() {
            s.phase = AlertPhase::Firing;
            s.fired_at = Some(self.now);
            s.last_notified = Some(self.now);
            out.push(self.firing(&s, false, "condition true"));
        }
        s
    }

    /// Pending -> firing once true for `for`; a firing alert repeats after `repeat_interval`.
    fn still_true(&self, s: &mut AlertState, out: &mut Vec<Decision>) {
        let (alert, now) = (self.alert, self.now);
        s.value = self.value;
        s.false_since = None;
        match s.phase {
            AlertPhase::Pending if now >= time::after(s.active_since, alert.for_) => {
                s.phase = AlertPhase::Firing;
                s.fired_at = Some(now);
                s.last_notified = Some(now);
                let why = format!("true for {}", humantime::format_duration(alert.for_));
                out.push(self.firing(s, false, &why));
            }
            AlertPhase::Firing
                if s.last_notified
                    .is_none_or(|t| now >= time::after(t, alert.repeat_interval)) =>
            {
                s.last_notified = Some(now);
                out.push(self.firing(s, true, "repeat_interval passed"));
            }
            _ => {}
        }
    }

    /// Whether a subject whose condition is false leaves its state now: a pending one at once
    /// (sending nothing), a firing one once false for `keep_firing_for`.
    fn false_long_enough(&self, s: &mut AlertState) -> bool {
        match s.phase {
            AlertPhase::Pending => true,
            AlertPhase::Firing => {
                let since = *s.false_since.get_or_insert(self.now);
                self.now >= time::after(since, self.alert.keep_firing_for)
            }
        }
    }

    /// The resolve of a firing alert that has been false long enough.
    fn resolve(&self, mut s: AlertState) -> Decision {
        let alert = self.alert;
        // The resolve reports the value that made it resolve, not the last one that kept it
        // firing.
        s.value = self.value;
        let why = if alert.keep_firing_for.is_zero() {
            "condition false".to_string()
        } else {
            format!(
                "false for {}",
                humantime::format_duration(alert.keep_firing_for)
            )
        };
        let message = format!("{} resolved: {}", alert.name, self.render());
        notice(
            alert,
            self.now,
            self.subject,
            AlertStatus::Resolved,
            false,
            message,
            &s,
            &why,
        )
    }

    fn firing(&self, s: &AlertState, repeat: bool, why: &str) -> Decision {
        let message = self.render();
        notice(
            self.alert,
            self.now,
            self.subject,
            AlertStatus::Firing,
            repeat,
            message,
            s,
            why,
        )
    }

    fn render(&self) -> String {
        render(self.alert, self.b, self.subject, self.value)
    }
}
