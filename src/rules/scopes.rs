//! The variables each kind of rule can read. These lists are the rule language's contract and
//! are documented in docs/rules.md; the engine fills them in this order.

use crate::expr::{Scope, VarType};

use VarType::{Number as N, Text as T};

/// Per sandbox: `busy`, `protect`, and sandbox-scope alerts.
pub static SANDBOX: Scope = Scope {
    name: "sandbox",
    vars: &[
        ("cpu_used_pct", N),
        ("cpu_count", N),
        ("mem_used", N),
        ("mem_total", N),
        ("mem_used_pct", N),
        ("disk_used", N),
        ("disk_total", N),
        ("disk_used_pct", N),
        ("age_s", N),
        ("time_left_s", N),
        ("template", T),
        ("sandbox_id", T),
        ("pool", T),
    ],
    metadata: true,
};

/// Slots of [`SANDBOX`], in order.
pub mod sandbox {
    pub const CPU_USED_PCT: usize = 0;
    pub const CPU_COUNT: usize = 1;
    pub const MEM_USED: usize = 2;
    pub const MEM_TOTAL: usize = 3;
    pub const MEM_USED_PCT: usize = 4;
    pub const DISK_USED: usize = 5;
    pub const DISK_TOTAL: usize = 6;
    pub const DISK_USED_PCT: usize = 7;
    pub const AGE_S: usize = 8;
    pub const TIME_LEFT_S: usize = 9;
    pub const TEMPLATE: usize = 10;
    pub const SANDBOX_ID: usize = 11;
    pub const POOL: usize = 12;
}

/// The sandbox metrics aggregated per pool (and per team) as `avg_`, `min_` and `max_`.
pub const AGGREGATED: [&str; 6] = [
    "cpu_used_pct",
    "mem_used",
    "mem_used_pct",
    "disk_used",
    "disk_used_pct",
    "age_s",
];

/// Per pool: step `when`, target `metric`, pool-scope alerts.
pub static POOL: Scope = Scope {
    name: "pool",
    vars: &[
        ("size", N),
        ("running", N),
        ("pending_creates", N),
        ("min", N),
        ("max", N),
        ("busy_count", N),
        ("busy_ratio", N),
        ("with_data", N),
        ("avg_cpu_used_pct", N),
        ("avg_mem_used", N),
        ("avg_mem_used_pct", N),
        ("avg_disk_used", N),
        ("avg_disk_used_pct", N),
        ("avg_age_s", N),
        ("min_cpu_used_pct", N),
        ("min_mem_used", N),
        ("min_mem_used_pct", N),
        ("min_disk_used", N),
        ("min_disk_used_pct", N),
        ("min_age_s", N),
        ("max_cpu_used_pct", N),
        ("max_mem_used", N),
        ("max_mem_used_pct", N),
        ("max_disk_used", N),
        ("max_disk_used_pct", N),
        ("max_age_s", N),
        ("pool", T),
        ("template", T),
    ],
    metadata: false,
};

/// Slots of [`POOL`], in order; the aggregates start at `AVG`, `MIN` and `MAX` and follow
/// [`AGGREGATED`].
pub mod pool {
    pub const SIZE: usize = 0;
    pub const RUNNING: usize = 1;
    pub const PENDING_CREATES: usize = 2;
    pub const MIN: usize = 3;
    pub const MAX: usize = 4;
    pub const BUSY_COUNT: usize = 5;
    pub const BUSY_RATIO: usize = 6;
    pub const WITH_DATA: usize = 7;
    pub const AVG: usize = 8;
    pub const MIN_OF: usize = 14;
    pub const MAX_OF: usize = 20;
    pub const POOL: usize = 26;
    pub const TEMPLATE: usize = 27;
}

/// Across every sandbox the agent sees: team-scope alerts.
pub static TEAM: Scope = Scope {
    name: "team",
    vars: &[
        ("running", N),
        ("paused", N),
        ("with_data", N),
        ("avg_cpu_used_pct", N),
        ("avg_mem_used", N),
        ("avg_mem_used_pct", N),
        ("avg_disk_used", N),
        ("avg_disk_used_pct", N),
        ("avg_age_s", N),
        ("min_cpu_used_pct", N),
        ("min_mem_used", N),
        ("min_mem_used_pct", N),
        ("min_disk_used", N),
        ("min_disk_used_pct", N),
        ("min_age_s", N),
        ("max_cpu_used_pct", N),
        ("max_mem_used", N),
        ("max_mem_used_pct", N),
        ("max_disk_used", N),
        ("max_disk_used_pct", N),
        ("max_age_s", N),
    ],
    metadata: false,
};

/// Slots of [`TEAM`].
pub mod team {
    pub const RUNNING: usize = 0;
    pub const PAUSED: usize = 1;
    pub const WITH_DATA: usize = 2;
    pub const AVG: usize = 3;
    pub const MIN_OF: usize = 9;
    pub const MAX_OF: usize = 15;
}

/// Per lifecycle event: trigger `when`.
pub static EVENT: Scope = Scope {
    name: "event",
    vars: &[
        ("type", T),
        ("kill_reason", T),
        ("template", T),
        ("sandbox_id", T),
        ("pool", T),
        ("execution_time_s", N),
        ("vcpu_count", N),
        ("memory_mb", N),
    ],
    metadata: true,
};

/// Slots of [`EVENT`].
pub mod event {
    pub const TYPE: usize = 0;
    pub const KILL_REASON: usize = 1;
    pub const TEMPLATE: usize = 2;
    pub const SANDBOX_ID: usize = 3;
    pub const POOL: usize = 4;
    pub const EXECUTION_TIME_S: usize = 5;
    pub const VCPU_COUNT: usize = 6;
    pub const MEMORY_MB: usize = 7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_constants_match_the_lists() {
        assert_eq!(SANDBOX.slot("cpu_used_pct"), Some(sandbox::CPU_USED_PCT));
        assert_eq!(SANDBOX.slot("pool"), Some(sandbox::POOL));
        assert_eq!(SANDBOX.slot("time_left_s"), Some(sandbox::TIME_LEFT_S));
        for (i, m) in AGGREGATED.iter().enumerate() {
            assert_eq!(POOL.slot(&format!("avg_{m}")), Some(pool::AVG + i));
            assert_eq!(POOL.slot(&format!("min_{m}")), Some(pool::MIN_OF + i));
            assert_eq!(POOL.slot(&format!("max_{m}")), Some(pool::MAX_OF + i));
            assert_eq!(TEAM.slot(&format!("avg_{m}")), Some(team::AVG + i));
            assert_eq!(TEAM.slot(&format!("min_{m}")), Some(team::MIN_OF + i));
            assert_eq!(TEAM.slot(&format!("max_{m}")), Some(team::MAX_OF + i));
        }
        assert_eq!(POOL.slot("template"), Some(pool::TEMPLATE));
        assert_eq!(POOL.slot("with_data"), Some(pool::WITH_DATA));
        assert_eq!(TEAM.slot("with_data"), Some(team::WITH_DATA));
        assert_eq!(EVENT.slot("memory_mb"), Some(event::MEMORY_MB));
    }
}
