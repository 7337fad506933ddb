//! Lifecycle triggers: match events, evaluate `when`, and act. A trigger with a pool acts only
//! on events about sandboxes that pool owns: the owner is the event's `poolpilot_pool`
//! metadata when it carries one, else the pool the engine last saw the sandbox in
//! ([`EngineState::members`], remembered for [`MEMBER_MEMORY`]). Events whose timestamp is
//! implausible (older than [`EVENT_MAX_AGE`], or later than now plus [`EVENT_MAX_SKEW`]) are
//! ignored with a debug log saying why: a replay from 1970 or a clock from 2999 must not
//! create sandboxes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::prepare::{Prepared, bounds};
use super::state::Membership;
use super::{
    Action, AlertNotice, AlertStatus, Cause, Decision, EngineState, Observations, ObservedSandbox,
    time,
};
use crate::e2b::LifecycleEvent;
use crate::expr::{Bindings, Meta, Text};
use crate::rules::scopes::{EVENT, event as es};
use crate::rules::{POOL_KEY, RuleSet, Trigger, TriggerAction};

/// Events older than this are not acted on: far beyond the agent's event look-back (a minute
/// before its cursor), so only a replay or a broken clock produces them.
pub(crate) const EVENT_MAX_AGE: Duration = Duration::from_secs(3600);
/// How far in the future an event may be stamped (clock skew between E2B and the agent).
pub(crate) const EVENT_MAX_SKEW: Duration = Duration::from_secs(120);
/// How long a sandbox's pool is remembered after it was last observed, to attribute events
/// that carry no metadata. Events older than [`EVENT_MAX_AGE`] are ignored anyway.
pub(crate) const MEMBER_MEMORY: Duration = EVENT_MAX_AGE;
/// At most this many sandboxes are remembered; the least recently seen go first.
pub(crate) const MAX_REMEMBERED: usize = 100_000;

/// Why an event was not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Ignored {
    #[error("event {id} of {sandbox} is stamped {at}, more than {max} before now ({now}); ignored")]
    TooOld {
        id: String,
        sandbox: String,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        max: String,
    },
    #[error("event {id} of {sandbox} is stamped {at}, more than {max} after now ({now}); ignored")]
    InFuture {
        id: String,
        sandbox: String,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        max: String,
    },
}

/// Checks that an event's timestamp is plausible at `now`.
pub(crate) fn plausible(ev: &LifecycleEvent, now: DateTime<Utc>) -> Result<(), Ignored> {
    if ev.timestamp < time::before(now, EVENT_MAX_AGE) {
        return Err(Ignored::TooOld {
            id: ev.id.clone(),
            sandbox: ev.sandbox_id.clone(),
            at: ev.timestamp,
            now,
            max: humantime::format_duration(EVENT_MAX_AGE).to_string(),
        });
    }
    if ev.timestamp > time::after(now, EVENT_MAX_SKEW) {
        return Err(Ignored::InFuture {
            id: ev.id.clone(),
            sandbox: ev.sandbox_id.clone(),
            at: ev.timestamp,
            now,
            max: humantime::format_duration(EVENT_MAX_SKEW).to_string(),
        });
    }
    Ok(())
}

/// Records which pool each observed sandbox belongs to, and forgets what is too old to
/// matter or beyond [`MAX_REMEMBERED`].
pub(super) fn remember_members(
    state: &mut EngineState,
    sandboxes: &[ObservedSandbox],
    now: DateTime<Utc>,
) {
    for s in sandboxes {
        let Some(pool) = s.pool() else { continue };
        match state.members.get_mut(&s.id) {
            Some(m) if m.pool == pool => m.last_seen = now,
            _ => {
                state.members.insert(
                    s.id.clone(),
                    Membership {
                        pool: pool.to_string(),
                        last_seen: now,
                    },
                );
            }
        }
    }
    let oldest = time::before(now, MEMBER_MEMORY);
    state.members.retain(|_, m| m.last_seen >= oldest);
    if state.members.len() > MAX_REMEMBERED {
        let mut seen: Vec<DateTime<Utc>> = state.members.values().map(|m| m.last_seen).collect();
        seen.sort_unstable();
        let cut = seen[state.members.len() - MAX_REMEMBERED];
        state.members.retain(|_, m| m.last_seen >= cut);
        // Ties at the cut may leave a few too many: drop arbitrary ones among the oldest.
        while state.members.len() > MAX_REMEMBERED {
            let Some(k) = state
                .members
                .iter()
                .find(|(_, m)| m.last_seen == cut)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            state.members.remove(&k);
        }
    }
}

/// The pool that owns an event's sandbox: its metadata mark, else the remembered membership.
pub(crate) fn owner<'a>(
    ev: &'a LifecycleEvent,
    members: &'a BTreeMap<String, Membership>,
) -> Option<&'a str> {
    ev.metadata()
        .and_then(|m| m.get(POOL_KEY))
        .map(String::as_str)
        .or_else(|| members.get(&ev.sandbox_id).map(|m| m.pool.as_str()))
}

/// Acts on each new event that some trigger matches: plausible events only, each matching
/// trigger whose pool owns the sandbox and whose `when` holds.
pub(super) fn run(
    rules: &RuleSet,
    state: &EngineState,
    now: DateTime<Utc>,
    obs: &Observations<'_>,
    prepared: &Prepared<'_>,
    pending: &mut BTreeMap<String, u32>,
    out: &mut Vec<Decision>,
) {
    for ev in obs.events {
        let triggers: Vec<&Trigger> = rules
            .triggers
            .iter()
            .filter(|t| t.on == ev.event_type)
            .collect();
        if triggers.is_empty() {
            continue;
        }
        if let Err(why) = plausible(ev, now) {
            tracing::debug!(event = %ev.id, sandbox = %ev.sandbox_id, "{why}");
            continue;
        }
        let owner = owner(ev, &state.members);
        let ctx = EventContext::new(ev, owner);
        let b = ctx.bindings();
        for t in triggers {
            if applies(t, ev, owner, &b)
                && let Some(d) = decide(rules, t, ev, &b, now, prepared, pending)
            {
                out.push(d);
            }
        }
    }
}

/// Whether a trigger acts on an event it matches: the event's sandbox belongs to the trigger's
/// pool (when it names one), and `when` (if any) holds. Each "no" is logged at debug.
fn applies(t: &Trigger, ev: &LifecycleEvent, owner: Option<&str>, b: &Bindings<'_>) -> bool {
    if let Some(p) = &t.pool
        && owner != Some(p.as_str())
    {
        tracing::debug!(
            trigger = %t.name,
            event = %ev.id,
            "event of {} ignored: the sandbox is not a member of pool {p} (owner: {})",
            ev.sandbox_id,
            owner.unwrap_or("none known")
        );
        return false;
    }
    match t.when.as_ref().map(|w| w.eval_bool(b)) {
        None | Some(Ok(true)) => true,
        Some(Ok(false)) => false,
        Some(Err(e)) => {
            tracing::debug!(trigger = %t.name, event = %ev.id, "no value, not acted on: {e}");
            false
        }
    }
}

/// An event's values, converted once for every trigger that matches it.
struct EventContext<'e> {
    texts: [Text; 5],
    meta: Meta,
    ev: &'e LifecycleEvent,
}

impl<'e> EventContext<'e> {
    fn new(ev: &'e LifecycleEvent, owner: Option<&str>) -> Self {
        EventContext {
            texts: [
                Text::new(ev.event_type.as_str()),
                Text::new(ev.kill_reason().unwrap_or("")),
                Text::new(ev.sandbox_template_id.as_deref().unwrap_or("")),
                Text::new(&ev.sandbox_id),
                Text::new(owner.unwrap_or("")),
            ],
            meta: ev.metadata().map(Meta::new).unwrap_or_default(),
            ev,
        }
    }

    fn bindings(&self) -> Bindings<'_> {
        let exec = self
            .ev
            .event_data
            .as_ref()
            .and_then(|d| d.execution.as_ref());
        let mut b = Bindings::new(&EVENT);
        b.set_text(es::TYPE, &self.texts[0]);
        b.set_text(es::KILL_REASON, &self.texts[1]);
        b.set_text(es::TEMPLATE, &self.texts[2]);
        b.set_text(es::SANDBOX_ID, &self.texts[3]);
        b.set_text(es::POOL, &self.texts[4]);
        b.set_num(
            es::EXECUTION_TIME_S,
            exec.and_then(|e| e.execution_time).unwrap_or(0) as f64 / 1000.0,
        );
        b.set_num(
            es::VCPU_COUNT,
            exec.and_then(|e| e.vcpu_count).unwrap_or(0) as f64,
        );
        b.set_num(
            es::MEMORY_MB,
            exec.and_then(|e| e.memory_mb).unwrap_or(0) as f64,
        );
        b.set_meta(&self.meta);
        b
    }
}

/// The decision a matching trigger makes, if any (a replacement into a full pool makes none).
fn decide(
    rules: &RuleSet,
    t: &Trigger,
    ev: &LifecycleEvent,
    b: &Bindings<'_>,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    pending: &mut BTreeMap<String, u32>,
) -> Option<Decision> {
    let pool = t.pool.clone().unwrap_or_default();
    let action = match &t.action {
        TriggerAction::Alert => Action::Alert(alert_notice(t, ev, b)),
        TriggerAction::Replace => replace(rules, &pool, &ev.sandbox_id, now, prepared, pending)?,
        TriggerAction::SetTimeout(d) => Action::SetTimeout {
            pool: pool.clone(),
            sandbox_id: ev.sandbox_id.clone(),
            timeout_s: d.as_secs(),
        },
        TriggerAction::Kill => Action::Kill {
            pool: pool.clone(),
            sandbox_ids: vec![ev.sandbox_id.clone()],
        },
        TriggerAction::Pause => Action::Pause {
            pool: pool.clone(),
            sandbox_id: ev.sandbox_id.clone(),
        },
    };
    let verb = verb(&action, &pool, ev);
    Some(Decision {
        at: now,
        rule: t.name.clone(),
        action,
        dry_run: rules.pool(&pool).is_some_and(|p| p.dry_run),
        cause: Cause {
            summary: format!("trigger {}: {}: {verb}", t.name, describe(ev)),
            ..Cause::default()
        },
    })
}

/// One create in the pool, counted as pending so later triggers and the pool's evaluation at
/// this step see it; none when the pool is full (members plus pending creates at max).
fn replace(
    rules: &RuleSet,
    pool: &str,
    gone: &str,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    pending: &mut BTreeMap<String, u32>,
) -> Option<Action> {
    let def = rules.pool(pool)?;
    // The sandbox the event says is gone is not a member, even when the observation the
    // reaction works from (taken before it died) still lists it: counted, it would make a
    // full pool of a pool that just lost one.
    let alive = prepared
        .members(pool)
        .iter()
        .filter(|&&i| prepared.sandboxes[i].obs.id != gone)
        .count();
    let members = u32::try_from(alive).unwrap_or(u32::MAX);
    let queued = pending.entry(pool.to_string()).or_default();
    if members.saturating_add(*queued) >= bounds(def, now).max {
        // The pool is full: a replacement would break max.
        return None;
    }
    *queued += 1;
    Some(Action::Create {
        pool: pool.to_string(),
        count: 1,
    })
}

/// What the action does, for the cause's sentence.
fn verb(action: &Action, pool: &str, ev: &LifecycleEvent) -> String {
    match action {
        Action::Create { .. } => format!("create 1 in pool {pool}"),
        Action::Kill { .. } => format!("kill {}", ev.sandbox_id),
        Action::SetTimeout { timeout_s, .. } => {
            format!("set the timeout of {} to {timeout_s}s", ev.sandbox_id)
        }
        Action::Pause { .. } => format!("pause {}", ev.sandbox_id),
        Action::KeepAlive { .. } => format!("keep {} alive", ev.sandbox_id),
        Action::Note { .. } => format!("note {}", ev.sandbox_id),
        Action::Alert(_) => "alert".to_string(),
    }
}

fn alert_notice(t: &Trigger, ev: &LifecycleEvent, b: &Bindings<'_>) -> AlertNotice {
    let message = t.message.render(&|n| match n {
        "alert" | "rule" => Some(t.name.clone()),
        "severity" => Some(t.severity.clone()),
        "subject" => Some(ev.sandbox_id.clone()),
        "value" => Some(String::new()),
        other => b.render(other),
    });
    AlertNotice {
        alert: t.name.clone(),
        subject: ev.sandbox_id.clone(),
        status: AlertStatus::Firing,
        repeat: false,
        severity: t.severity.clone(),
        labels: t.labels.clone(),
        message,
        notify: t.notify.clone(),
        started_at: ev.timestamp,
    }
}

fn describe(ev: &LifecycleEvent) -> String {
    let mut s = format!("{} of {}", ev.event_type, ev.sandbox_id);
    if let Some(r) = ev.kill_reason() {
        s.push_str(&format!(" (kill_reason {r})"));
    }
    s
}
