//! What the control loop tells the history store ([`crate::store`]): the lifecycle events it
//! takes (with where they came from and the pool they belong to), each decision as it is
//! logged and again with its final outcome, alert transitions, every pool's sizes and demand
//! when they change (and at least every [`POOL_EVERY`] of the agent's time), and every
//! member's metric sample at most every [`MEMBER_EVERY`].
//!
//! Recording only queues ([`History::record`]); nothing here waits for the database, and
//! nothing here changes what the agent decides.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::act;
use super::control::LoggedDecision;
use crate::e2b::{LifecycleEvent, SandboxState};
use crate::engine::{Action, EngineState, ObservedSandbox, PoolClaims};
use crate::store::{DecisionRow, History, PoolSample, Record, SandboxSample, Source};

/// A pool whose sizes do not change is sampled this often (of the agent's time).
const POOL_EVERY: TimeDelta = TimeDelta::seconds(10);
/// Members' samples are kept at most this often.
const MEMBER_EVERY: TimeDelta = TimeDelta::seconds(30);

/// The agent's side of the history store.
pub(crate) struct Recorder {
    history: History,
    /// Each pool's last sample kept, to keep the next only when it differs or is due.
    last_pools: BTreeMap<String, PoolSample>,
    last_members: Option<DateTime<Utc>>,
}

/// What a turn knows of each pool, for its sample.
pub(crate) struct PoolsNow<'a> {
    pub(crate) engine: &'a EngineState,
    pub(crate) observed: &'a [ObservedSandbox],
    pub(crate) pending: &'a BTreeMap<String, u32>,
    pub(crate) claims: &'a BTreeMap<String, PoolClaims>,
    pub(crate) counts: &'a BTreeMap<String, super::claims::ledger::Counts>,
}

impl Recorder {
    pub(crate) fn new(history: History) -> Recorder {
        Recorder {
            history,
            last_pools: BTreeMap::new(),
            last_members: None,
        }
    }

    pub(crate) fn history(&self) -> &History {
        &self.history
    }

    /// Events the engine takes; `pool_of` finds a sandbox's pool when its metadata lacks one.
    pub(crate) fn events<'a>(
        &self,
        events: &[LifecycleEvent],
        source: Source,
        pool_of: impl Fn(&str) -> Option<&'a str>,
    ) {
        for e in events {
            let pool = e
                .metadata()
                .and_then(|m| m.get(crate::rules::POOL_KEY).cloned())
                .or_else(|| pool_of(&e.sandbox_id).map(str::to_string));
            self.history.record(Record::Event {
                event: Box::new(e.clone()),
                pool,
                source,
            });
        }
    }

    /// A decision as logged (again with its final outcome, for a create), and the alert
    /// transition it carries, if any.
    pub(crate) fn decision(&self, entry: &LoggedDecision, first: bool) {
        let d = &entry.decision;
        if first
            && let Action::Alert(n) = &d.action
            && !n.repeat
            && !d.dry_run
        {
            self.history.record(Record::Alert {
                notice: Box::new(n.clone()),
                at: d.at,
            });
        }
        self.history.record(Record::Decision(Box::new(DecisionRow {
            seq: entry.seq,
            at: d.at,
            rule: d.rule.clone(),
            kind: act::kind(&d.action).to_string(),
            result: entry.result.as_str().to_string(),
            summary: d.cause.summary.clone(),
            outcome: entry.outcome.clone(),
            sandbox_ids: decision_sandboxes(entry),
            body: serde_json::to_value(entry).unwrap_or_default(),
        })));
    }

    /// Every pool's sizes and demand that changed or are due, and every member's sample when
    /// their time has come.
    pub(crate) fn sample(&mut self, now: DateTime<Utc>, pools: &PoolsNow<'_>) {
        let changed: Vec<PoolSample> = pool_samples(now, pools)
            .into_iter()
            .filter(|s| match self.last_pools.get(&s.pool) {
                Some(last) => now - last.at >= POOL_EVERY || !same_sizes(last, s),
                None => true,
            })
            .collect();
        if !changed.is_empty() {
            for s in &changed {
                self.last_pools.insert(s.pool.clone(), s.clone());
            }
            self.history.record(Record::PoolSamples(changed));
        }
        if self.last_members.is_none_or(|t| now - t >= MEMBER_EVERY) {
            self.last_members = Some(now);
            let samples = member_samples(pools.observed);
            if !samples.is_empty() {
                self.history.record(Record::SandboxSamples(samples));
            }
        }
    }
}

/// Whether two samples of a pool show the same sizes (demand in busy cores aside: it moves
/// with every sample).
fn same_sizes(a: &PoolSample, b: &PoolSample) -> bool {
    (a.desired, a.actual, a.pending, a.min, a.max) == (b.desired, b.actual, b.pending, b.min, b.max)
        && (a.claimed, a.idle, a.paused, a.waiting) == (b.claimed, b.idle, b.paused, b.waiting)
}

/// The sandboxes a decision created or touched: its outcome's, and a kill's or keep-alive's
/// targets.
fn decision_sandboxes(entry: &LoggedDecision) -> Vec<String> {
    let mut ids = entry.sandbox_ids.clone();
    match &entry.decision.action {
        Action::Kill { sandbox_ids, .. }
        | Action::KeepAlive { sandbox_ids, .. }
        | Action::Note { sandbox_ids, .. } => ids.extend(sandbox_ids.iter().cloned()),
        Action::Pause { sandbox_id, .. } | Action::SetTimeout { sandbox_id, .. } => {
            ids.push(sandbox_id.clone())
        }
        Action::Create { .. } | Action::Alert(_) => {}
    }
    ids.sort();
    ids.dedup();
    ids
}

/// One sample per pool the engine knows.
fn pool_samples(now: DateTime<Utc>, p: &PoolsNow<'_>) -> Vec<PoolSample> {
    let mut actual: BTreeMap<&str, (u32, f64)> = BTreeMap::new();
    for s in p.observed {
        if s.state != SandboxState::Running {
            continue;
        }
        let Some(pool) = s.pool() else { continue };
        let e = actual.entry(pool).or_default();
        e.0 += 1;
        if let Some(m) = &s.metric
            && m.cpu_used_pct.is_finite()
        {
            e.1 += m.cpu_used_pct * f64::from(m.cpu_count) / 100.0;
        }
    }
    p.engine
        .pools
        .iter()
        .map(|(name, state)| {
            let (running, busy) = actual.get(name.as_str()).copied().unwrap_or_default();
            let counts = p.counts.get(name);
            PoolSample {
                pool: name.clone(),
                at: now,
                desired: state.status.as_ref().map(|s| s.desired),
                actual: running,
                pending: p.pending.get(name).copied().unwrap_or(0),
                min: state.status.as_ref().map(|s| s.min),
                max: state.status.as_ref().map(|s| s.max),
                claimed: counts.map_or(0, |c| c.claimed as u32),
                idle: counts.map_or(0, |c| c.idle as u32),
                paused: counts.map_or(0, |c| c.paused as u32),
                waiting: p.claims.get(name).map_or(0, |c| c.waiting),
                busy_cores: busy,
            }
        })
        .collect()
}

/// Each observed sandbox's latest sample, once per sample time.
fn member_samples(observed: &[ObservedSandbox]) -> Vec<SandboxSample> {
    observed
        .iter()
        .filter_map(|s| {
            let m = s.metric.as_ref()?;
            Some(SandboxSample {
                sandbox_id: s.id.clone(),
                at: m.timestamp,
                pool: s.pool().map(str::to_string),
                cpu_pct: m.cpu_used_pct,
                cpu_count: m.cpu_count,
                mem_used: m.mem_used,
                mem_total: m.mem_total,
                disk_used: m.disk_used,
                disk_total: m.disk_total,
            })
        })
        .collect()
}
