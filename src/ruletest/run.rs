//! Running one checked case through the engine, step by step in virtual time, and comparing
//! what happened with the case's expectations.
//!
//! The runner plays E2B: it keeps the pools' members, applies the input events and the
//! engine's (non-dry-run) decisions to them, and shows them to the engine with the case's CPU
//! series. It never performs I/O and never reads the clock; the same case always runs the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Expect, InputEvent, TestCase};
use crate::duration::HumanDuration;
use crate::e2b::{EventData, EventType, LifecycleEvent, Metadata, SandboxMetric, SandboxState};
use crate::engine::{
    Action, AlertPhase, AlertStatus, Decision, Engine, Observations, ObservedSandbox,
};
use crate::rules::{POOL_KEY, RuleSet};

/// Runs one case; returns the failure report, if any.
pub(crate) fn run_case(rules: &Arc<RuleSet>, case: &TestCase) -> Result<(), String> {
    let mut engine = Engine::new(rules.clone());
    let mut members = Members::starting(case);
    let steps = (case.duration.as_nanos() / case.interval.as_nanos()) as usize;
    let mut failures = String::new();
    for k in 0..=steps {
        let offset = case.interval * k as u32;
        let now = case.start + TimeDelta::from_std(offset).unwrap_or_default();
        // Events of this step: applied to the members, then shown to the engine.
        let events = members.apply_events(case, k, offset, now);
        let observed = members.observe(rules, case, k, now);
        let pending = BTreeMap::new();
        let decisions = engine.step(
            now,
            &Observations {
                sandboxes: &observed,
                events: &events,
                pending_creates: &pending,
                claims: &crate::engine::NO_CLAIMS,
            },
        );
        members.carry_out(&decisions, now);
        for x in case.expect.iter().filter(|x| x.at == offset) {
            let diff = compare(x, &decisions, &members, &engine);
            report(&mut failures, offset, &diff, &engine);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// One sandbox of a test pool, named `<pool>/<index>`.
struct Member {
    id: String,
    pool: String,
    index: usize,
    started_at: DateTime<Utc>,
    paused: bool,
}

/// The members of the test's pools, as the input events and the decisions leave them. Indexes
/// are never reused, so a replacement gets a new name.
struct Members {
    list: Vec<Member>,
    next_index: BTreeMap<String, usize>,
}

impl Members {
    /// The members each pool starts with, all started ten minutes before the test.
    fn starting(case: &TestCase) -> Members {
        let mut members = Members {
            list: Vec::new(),
            next_index: BTreeMap::new(),
        };
        for (pool, n) in &case.pools {
            for _ in 0..*n {
                members.add(pool, case.start - TimeDelta::minutes(10));
            }
        }
        members
    }

    fn add(&mut self, pool: &str, started_at: DateTime<Utc>) {
        let i = self.next_index.entry(pool.to_string()).or_default();
        self.list.push(Member {
            id: format!("{pool}/{i}"),
            pool: pool.to_string(),
            index: *i,
            started_at,
            paused: false,
        });
        *i += 1;
    }

    fn kill(&mut self, id: &str) {
        self.list.retain(|m| m.id != id);
    }

    fn pause(&mut self, id: &str) {
        self.list
            .iter_mut()
            .filter(|m| m.id == id)
            .for_each(|m| m.paused = true);
    }

    /// Running (not paused) members of `pool`.
    fn running_in(&self, pool: &str) -> u32 {
        self.list
            .iter()
            .filter(|m| m.pool == pool && !m.paused)
            .count() as u32
    }

    /// The input events of step `k` (those after the previous step, up to this one; at 0s in
    /// step 0), applied to the members and returned as E2B would deliver them.
    fn apply_events(
        &mut self,
        case: &TestCase,
        k: usize,
        offset: Duration,
        now: DateTime<Utc>,
    ) -> Vec<LifecycleEvent> {
        let mut events = Vec::new();
        for e in &case.events {
            let due = e.at > offset.saturating_sub(case.interval) && e.at <= offset
                || (e.at == Duration::ZERO && k == 0);
            if !due {
                continue;
            }
            if e.event_type == EventType::Killed {
                self.kill(&e.sandbox);
            }
            if e.event_type == EventType::Paused {
                self.pause(&e.sandbox);
            }
            events.push(lifecycle_event(e, k, now));
        }
        events
    }

    /// What the engine sees at step `k`: every member, with its sample of this step, if any.
    fn observe(
        &self,
        rules: &RuleSet,
        case: &TestCase,
        k: usize,
        now: DateTime<Utc>,
    ) -> Vec<ObservedSandbox> {
        self.list
            .iter()
            .map(|m| {
                let series = case
                    .cpu
                    .get(&format!("{}/{}", m.pool, m.index))
                    .or_else(|| case.cpu.get(&format!("{}/*", m.pool)));
                let cpu = series.and_then(|s| s.get(k).copied().flatten());
                observed_sandbox(rules, m, cpu, now)
            })
            .collect()
    }

    /// The decisions' effect on the members, as if E2B carried them out at once; dry runs
    /// change nothing.
    fn carry_out(&mut self, decisions: &[Decision], now: DateTime<Utc>) {
        for d in decisions.iter().filter(|d| !d.dry_run) {
            match &d.action {
                Action::Create { pool, count } => {
                    for _ in 0..*count {
                        self.add(pool, now);
                    }
                }
                Action::Kill { sandbox_ids, .. } => {
                    for id in sandbox_ids {
                        self.kill(id);
                    }
                }
                Action::Pause { sandbox_id, .. } => self.pause(sandbox_id),
                Action::SetTimeout { .. }
                | Action::KeepAlive { .. }
                | Action::Note { .. }
                | Action::Alert(_) => {}
            }
        }
    }
}

/// An input event as E2B would deliver it, owned by the pool its sandbox name starts with.
fn lifecycle_event(e: &InputEvent, k: usize, now: DateTime<Utc>) -> LifecycleEvent {
    let pool = e.sandbox.split('/').next().unwrap_or("").to_string();
    let mut meta = Metadata::new();
    meta.insert(POOL_KEY.into(), pool);
    LifecycleEvent {
        id: format!("test-{k}-{}", e.sandbox),
        version: Some("v2".into()),
        event_type: e.event_type.clone(),
        timestamp: now,
        event_data: Some(EventData {
            sandbox_metadata: Some(meta),
            kill_reason: e.kill_reason.clone(),
            ..Default::default()
        }),
        sandbox_id: e.sandbox.clone(),
        sandbox_build_id: None,
        sandbox_execution_id: None,
        sandbox_template_id: Some("base".into()),
        sandbox_team_id: None,
        extra: Default::default(),
    }
}

/// A member as E2B would list it, with `cpu` as its latest sample (none: no metrics yet).
fn observed_sandbox(
    rules: &RuleSet,
    m: &Member,
    cpu: Option<f64>,
    now: DateTime<Utc>,
) -> ObservedSandbox {
    let mut metadata = Metadata::new();
    metadata.insert(POOL_KEY.into(), m.pool.clone());
    ObservedSandbox {
        id: m.id.clone(),
        template: rules
            .pool(&m.pool)
            .map(|p| p.template.clone())
            .unwrap_or_default(),
        started_at: m.started_at,
        end_at: now + TimeDelta::hours(1),
        state: if m.paused {
            SandboxState::Paused
        } else {
            SandboxState::Running
        },
        metadata,
        metric: cpu.map(|c| SandboxMetric {
            timestamp: now,
            timestamp_unix: now.timestamp(),
            cpu_count: 2,
            cpu_used_pct: c,
            mem_used: 256 << 20,
            mem_total: 512 << 20,
            mem_cache: 0,
            disk_used: 1 << 30,
            disk_total: 2 << 30,
        }),
    }
}

/// The short form of a decision used in expectations, e.g. `workers +1`.
fn short_form(d: &Decision) -> String {
    let dry = if d.dry_run { " (dry run)" } else { "" };
    match &d.action {
        Action::Create { pool, count } => format!("{pool} +{count}{dry}"),
        Action::Kill { pool, sandbox_ids } => format!("{pool} -{}{dry}", sandbox_ids.len()),
        Action::SetTimeout {
            pool,
            sandbox_id,
            timeout_s,
        } => format!("{pool} set_timeout {sandbox_id} {timeout_s}s{dry}"),
        Action::Pause { pool, sandbox_id } => format!("{pool} pause {sandbox_id}{dry}"),
        Action::KeepAlive {
            pool,
            sandbox_ids,
            timeout_s,
        } => format!("{pool} keepalive {} {timeout_s}s{dry}", sandbox_ids.len()),
        Action::Note { pool, sandbox_ids } => format!("{pool} expired {}", sandbox_ids.len()),
        Action::Alert(n) => format!(
            "alert {} {}",
            n.alert,
            match (n.status, n.repeat) {
                (AlertStatus::Firing, false) => "firing",
                (AlertStatus::Firing, true) => "repeat",
                (AlertStatus::Resolved, _) => "resolved",
            }
        ),
    }
}

/// One expectation against this step: a line per mismatch, empty when all hold.
fn compare(x: &Expect, decisions: &[Decision], members: &Members, engine: &Engine) -> String {
    let mut diff = String::new();
    if let Some(want) = &x.decisions {
        diff_decisions(&mut diff, want, decisions);
    }
    for (pool, want) in &x.size {
        let got = members.running_in(pool);
        if got != *want {
            let _ = writeln!(diff, "    size {pool}: expected {want}, got {got}");
        }
    }
    if let Some(want) = &x.notified {
        diff_notified(&mut diff, want, decisions);
    }
    for (alert, want) in &x.alerts {
        let states = engine.state().alerts.get(alert);
        let got = match states {
            Some(s) if s.values().any(|a| a.phase == AlertPhase::Firing) => "firing",
            Some(s) if !s.is_empty() => "pending",
            _ => "inactive",
        };
        if got != want {
            let _ = writeln!(diff, "    alert {alert}: expected {want}, got {got}");
        }
    }
    diff
}

/// Decisions compare as sorted short forms; a mismatch lists every decision's cause. Notes
/// (`pool expired N`: members that died of their timeout) change nothing, so they count only
/// in a case that expects one.
fn diff_decisions(diff: &mut String, want: &[String], decisions: &[Decision]) {
    let notes_wanted = want.iter().any(|w| w.contains(" expired "));
    let mut got: Vec<String> = decisions
        .iter()
        .filter(|d| notes_wanted || !matches!(d.action, Action::Note { .. }))
        .map(short_form)
        .collect();
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    if got != want {
        let _ = writeln!(diff, "    decisions: expected {want:?}, got {got:?}");
        for d in decisions {
            let _ = writeln!(diff, "      {}", d.cause.summary);
        }
    }
}

/// Notifiers compare as sets: the ones any alert decision of this step names.
fn diff_notified(diff: &mut String, want: &[String], decisions: &[Decision]) {
    let mut got: Vec<String> = decisions
        .iter()
        .filter_map(|d| match &d.action {
            Action::Alert(n) => Some(n.notify.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    got.sort();
    got.dedup();
    let mut want = want.to_vec();
    want.sort();
    want.dedup();
    if got != want {
        let _ = writeln!(diff, "    notified: expected {want:?}, got {got:?}");
    }
}

/// Adds a failed expectation to the report, with each pool's last evaluation for context.
fn report(failures: &mut String, offset: Duration, diff: &str, engine: &Engine) {
    if diff.is_empty() {
        return;
    }
    let _ = writeln!(failures, "  at {}:", HumanDuration(offset));
    failures.push_str(diff);
    for (pool, st) in &engine.state().pools {
        if let Some(s) = &st.status {
            let _ = writeln!(failures, "    (last evaluation of {pool}: {})", s.summary);
        }
    }
}
