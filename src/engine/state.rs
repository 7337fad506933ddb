//! The engine's state: everything that must survive a restart, serializable as JSON.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Clamp;

/// All engine state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub pools: BTreeMap<String, PoolState>,
    /// Alert name -> subject -> state.
    pub alerts: BTreeMap<String, BTreeMap<String, AlertState>>,
    /// Sandbox id -> the pool it was last observed in, so that a lifecycle event without
    /// metadata can be attributed. Bounded in time and count (see `engine::triggers`); absent
    /// from state saved by older versions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, Membership>,
}

/// A sandbox's pool, and when it was last observed there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub pool: String,
    pub last_seen: DateTime<Utc>,
}

/// One pool's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    pub last_eval: Option<DateTime<Utc>>,
    /// The first evaluation: scale-in waits until a whole stabilization window was observed.
    pub first_eval: Option<DateTime<Utc>>,
    pub cooldown_up_until: Option<DateTime<Utc>>,
    pub cooldown_down_until: Option<DateTime<Utc>>,
    /// Recommended changes (raw recommendation minus size) with their time, for stabilization.
    pub window: VecDeque<(DateTime<Utc>, i64)>,
    /// The last evaluation, for status pages ("scale-in held by stabilization until ...").
    pub status: Option<PoolStatus>,
    /// Each recent evaluation's size before and after its decision, oldest first, for rate
    /// policies (the size at the start of a policy's period). Kept only for pools with
    /// policies, bounded by their longest period (see `engine::pools::rate`); absent from state
    /// saved by older versions.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub sizes: VecDeque<SizeRecord>,
    /// The demand the target tracked (members' worth, `size * metric / target`), downsampled
    /// and bounded by the pool's `predict` window, oldest first, for forecasts (see
    /// `engine::pools::predict`). Absent from state saved by older versions.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub demand: VecDeque<DemandPoint>,
    /// Since when the pool has had idle members beyond `idle.min` without a break, for the
    /// warm tier's `after` (see `engine::pools::warm`). Absent from state saved by older
    /// versions, and when there is no excess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_excess_since: Option<DateTime<Utc>>,
    /// The fewest idle members beyond `idle.min` seen since `idle_excess_since`: what has been
    /// in excess for the whole time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_excess_floor: u32,
    /// Retiring members (past `max_age`) whose replacement has been created, so that the
    /// replacement and the member it replaces are counted once (see `engine::pools::lifetime`).
    /// Absent from state saved by older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The demand the target tracked at one evaluation, in members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DemandPoint {
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// One evaluation's size before its decision (`from`) and the size it settled on (`to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeRecord {
    pub at: DateTime<Utc>,
    pub from: u32,
    pub to: u32,
}

/// The outcome of a pool's last evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub at: DateTime<Utc>,
    pub size: u32,
    pub min: u32,
    pub max: u32,
    pub raw: u32,
    pub desired: u32,
    pub clamps: Vec<Clamp>,
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    Pending,
    Firing,
}

/// One alert instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub phase: AlertPhase,
    /// When the condition became true.
    pub active_since: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub last_notified: Option<DateTime<Utc>>,
    /// When the condition last turned false while firing (for `keep_firing_for`).
    pub false_since: Option<DateTime<Utc>>,
    pub value: f64,
}
