//! The decision engine: pure. `step(now, observations) -> decisions`, with no I/O, no clock
//! reads and no tokio, so the agent, `simulate`, `test` and unit tests all run the same logic.
//!
//! ```text
//!  observations ──► prepare ──► triggers (events) ──► pools (due ones) ──► alerts ──► decisions
//!                                  │ replacements count as pending creates │
//! ```
//!
//! `prepare` converts what the rules read of each sandbox once per step; `pools/` is the pool
//! evaluation as named steps (see its module doc), `alerts` and `triggers` the other two rule
//! kinds, `state` what survives a restart and `time` checked instant arithmetic.
//!
//! Pools: a raw recommendation from target tracking and step rules (up beats none beats down;
//! within a direction the larger change wins), then clamps in this order, each recorded with
//! its effect: stabilization (HPA: the highest recommendation in the down window, the lowest in
//! the up window), max step, rate policies (HPA's `behavior` policies, against the size at the
//! start of each policy's period), cooldown, then min and max (which always hold, schedules
//! included). A saturated target reading (members at their ceiling) grows the pool by what the
//! up policies allow, or doubles it, and never shrinks it. Missing or stale metrics never read
//! as 0: under `hold` they stop metric-driven changes, under `up_only` they stop scale-down.
//!
//! Alerts: inactive -> pending (condition true) -> firing (true for `for`) -> resolved (false,
//! for `keep_firing_for`). A pending alert that clears sends nothing; missing data keeps the
//! state; a subject that disappears resolves.
//!
//! All state lives in [`EngineState`], which serializes, so a restart neither re-pages nor
//! forgets a cooldown.

mod alerts;
mod expired;
mod pools;
mod prepare;
mod state;
pub(crate) mod time;
mod triggers;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::e2b::{LifecycleEvent, Metadata, SandboxMetric, SandboxState};
use crate::rules::RuleSet;
pub use state::{
    AlertPhase, AlertState, DemandPoint, EngineState, Membership, PoolState, PoolStatus, SizeRecord,
};

/// One sandbox as the agent (or a simulation) sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSandbox {
    pub id: String,
    pub template: String,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub state: SandboxState,
    pub metadata: Metadata,
    /// The latest sample, if any.
    pub metric: Option<SandboxMetric>,
}

impl ObservedSandbox {
    /// The pool that owns this sandbox, from its metadata.
    pub fn pool(&self) -> Option<&str> {
        self.metadata
            .get(crate::rules::POOL_KEY)
            .map(String::as_str)
    }
}

/// What the engine is told at each step.
#[derive(Debug, Clone, Copy)]
pub struct Observations<'a> {
    pub sandboxes: &'a [ObservedSandbox],
    /// Lifecycle events not seen before (the caller deduplicates).
    pub events: &'a [LifecycleEvent],
    /// Creates sent but not yet visible as sandboxes, per pool.
    pub pending_creates: &'a BTreeMap<String, u32>,
    /// What the claims ledger says, per pool; a pool without claims may be absent.
    pub claims: &'a BTreeMap<String, PoolClaims>,
}

/// One pool's claims, as the agent's claims ledger tells the engine at each step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolClaims {
    /// Each claimed member and when its lease ends. A claimed member is never a scale-in
    /// victim, never paused, and keep-alive never shortens its life below its lease.
    pub leases: BTreeMap<String, DateTime<Utc>>,
    /// Claims granted per second, over the last minute.
    pub claim_rate: f64,
    /// Claim requests waiting for a member now: demand the idle band serves first.
    pub waiting: u32,
}

/// No claims at all: for callers without a claims ledger.
pub static NO_CLAIMS: std::sync::LazyLock<BTreeMap<String, PoolClaims>> =
    std::sync::LazyLock::new(BTreeMap::new);

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Create {
        pool: String,
        count: u32,
    },
    Kill {
        pool: String,
        sandbox_ids: Vec<String>,
    },
    SetTimeout {
        pool: String,
        sandbox_id: String,
        timeout_s: u64,
    },
    Pause {
        pool: String,
        sandbox_id: String,
    },
    /// Keep-alive: set each member's timeout to `timeout_s` from now; only members whose end
    /// comes sooner (it never shortens a life).
    KeepAlive {
        pool: String,
        sandbox_ids: Vec<String>,
        timeout_s: u64,
    },
    /// Nothing to do, only to say: these members of the pool died of their E2B timeout while
    /// the pool wanted them (the cause says why they were not kept alive).
    Note {
        pool: String,
        sandbox_ids: Vec<String>,
    },
    Alert(AlertNotice),
}

/// An alert transition to notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertNotice {
    pub alert: String,
    /// The sandbox id, pool name or `team`.
    pub subject: String,
    pub status: AlertStatus,
    /// A repeat of a firing notification after `repeat_interval`.
    pub repeat: bool,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub message: String,
    pub notify: Vec<String>,
    pub started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// A limit applied between the raw recommendation and the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clamp {
    pub kind: ClampKind,
    pub from: u32,
    pub to: u32,
    /// When the limit stops applying (cooldown, stabilization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClampKind {
    MissingData,
    Stabilization,
    MaxStep,
    /// An HPA-style rate policy (`scale.policies`).
    Policy,
    Cooldown,
    Min,
    Max,
    Victims,
}

/// Why a decision was taken: a sentence, and the same as fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cause {
    pub summary: String,
    /// The values the rule saw.
    pub values: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clamps: Vec<Clamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<u32>,
}

/// One decision with its cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    /// The pool, alert or trigger that decided.
    pub rule: String,
    pub action: Action,
    /// Decided but not to be carried out (the pool's `dry_run`).
    pub dry_run: bool,
    pub cause: Cause,
}

/// The engine: rules plus state.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Arc<RuleSet>,
    state: EngineState,
    /// Which sandbox texts the rules read, computed once per rule set.
    needs: prepare::Needs,
    /// Whether some trigger acts for a pool, and so needs to know which pool a sandbox that
    /// an event names was in; otherwise membership is not tracked (it costs a map update per
    /// observed sandbox per step).
    needs_membership: bool,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Engine::with_state(rules, EngineState::default())
    }

    /// Resumes from persisted state.
    pub(crate) fn with_state(rules: Arc<RuleSet>, state: EngineState) -> Self {
        Engine {
            needs: prepare::Needs::of(&rules),
            needs_membership: needs_membership(&rules),
            rules,
            state,
        }
    }

    pub(crate) fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub(crate) fn state(&self) -> &EngineState {
        &self.state
    }

    /// Swaps in a new rule set, keeping the state of pools and alerts that still exist.
    pub(crate) fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.state
            .pools
            .retain(|name, _| rules.pool(name).is_some());
        self.state
            .alerts
            .retain(|name, _| rules.alerts.iter().any(|a| &a.name == name));
        self.needs = prepare::Needs::of(&rules);
        self.needs_membership = needs_membership(&rules);
        if !self.needs_membership {
            self.state.members.clear();
        }
        self.rules = rules;
    }

    /// Makes `pool` due at the next step, whatever its interval (a claim found no member
    /// free). Its evaluations start a new grid from then; cooldowns, stabilization and rate
    /// policies hold as ever.
    pub(crate) fn expedite(&mut self, pool: &str) {
        if let Some(st) = self.state.pools.get_mut(pool) {
            st.last_eval = None;
        }
    }

    /// Decides what to do at `now` given what is observed.
    pub fn step(&mut self, now: DateTime<Utc>, obs: &Observations<'_>) -> Vec<Decision> {
        let prepared = prepare::prepare(obs.sandboxes, obs.claims, self.needs);
        let mut decisions = Vec::new();
        let mut pending = obs.pending_creates.clone();
        if self.needs_membership {
            triggers::remember_members(&mut self.state, obs.sandboxes, now);
        }
        expired::note(&self.rules, obs.events, now, &mut decisions);
        triggers::run(
            &self.rules,
            &self.state,
            now,
            obs,
            &prepared,
            &mut pending,
            &mut decisions,
        );
        for pool in &self.rules.pools {
            let st = self.state.pools.entry(pool.name.clone()).or_default();
            pools::run(pool, st, now, &prepared, &pending, &mut decisions);
        }
        alerts::run(
            &self.rules,
            &mut self.state.alerts,
            now,
            &prepared,
            &mut decisions,
        );
        decisions
    }
}

fn needs_membership(rules: &RuleSet) -> bool {
    rules.triggers.iter().any(|t| t.pool.is_some())
}

#[cfg(test)]
mod tests;
