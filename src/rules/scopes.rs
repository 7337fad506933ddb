//! The variables each kind of rule can read. These lists are the rule language's contract and
//! are documented in docs/rules.md; the engine fills them in this order.
//!
//! Each scope is declared once, with the `scope!` macro below: every line names a slot constant, the
//! variable's name and its type, so the list a rule is checked against and the slots the
//! engine writes cannot drift apart. A line `AVG: aggregated "avg_"` stands for the
//! `avg_<metric>` variable of every [`AGGREGATED`] metric, in order, and names the first slot.
//! This module only declares: it never evaluates.

use crate::expr::{Scope, VarType};

use VarType::{Number as N, Text as T};

/// Declares a [`Scope`] static and a module of its slot constants from one table.
///
/// ```text
/// scope! {
///     /// docs of the static
///     static NAME = "name", metadata: true;
///     /// docs of the module
///     mod slots {
///         CONST: "variable" N,            // one variable, its slot
///         FIRST: aggregated "prefix_",    // the prefixed AGGREGATED metrics; the first slot
///     }
/// }
/// ```
macro_rules! scope {
    (
        $(#[$doc:meta])*
        static $scope:ident = $name:literal, metadata: $meta:literal;
        $(#[$mdoc:meta])*
        mod $module:ident { $($body:tt)* }
    ) => {
        scope! { @munch [$(#[$doc])* $scope $name $meta $(#[$mdoc])* $module]
            vars [] consts [] at (0); $($body)* }
    };
    // One variable.
    (@munch $head:tt vars [$($v:tt)*] consts [$($c:tt)*] at ($at:expr);
        $konst:ident: $var:literal $ty:ident, $($rest:tt)*) => {
        scope! { @munch $head vars [$($v)* ($var, $ty),] consts [$($c)* $konst = $at;]
            at ($at + 1); $($rest)* }
    };
    // The aggregates: fetch the metric names, then expand them.
    (@munch $head:tt vars $v:tt consts [$($c:tt)*] at ($at:expr);
        $konst:ident: aggregated $prefix:literal, $($rest:tt)*) => {
        with_aggregated! { @expand $head vars $v consts [$($c)* $konst = $at;]
            at ($at + AGGREGATED.len()) prefix $prefix; $($rest)* }
    };
    (@with [$($m:literal),*] @expand $head:tt vars [$($v:tt)*] consts $c:tt at $at:tt
        prefix $prefix:literal; $($rest:tt)*) => {
        scope! { @munch $head vars [$($v)* $((concat!($prefix, $m), N),)*] consts $c at $at;
            $($rest)* }
    };
    (@with [$($m:literal),*] list) => {
        [$($m),*]
    };
    // The table is read: declare the static and the slots.
    (@munch [$(#[$doc:meta])* $scope:ident $name:literal $meta:literal $(#[$mdoc:meta])* $module:ident]
        vars [$($v:tt)*] consts [$($konst:ident = $at:expr;)*] at ($end:expr);) => {
        $(#[$doc])*
        pub static $scope: Scope = Scope {
            name: $name,
            vars: &[$($v)*],
            metadata: $meta,
        };

        $(#[$mdoc])*
        pub mod $module {
            #[allow(unused_imports)]
            use super::AGGREGATED;
            $(pub const $konst: usize = $at;)*
        }
    };
}

/// The aggregated sandbox metrics, named once: calls `scope!` with them in front.
macro_rules! with_aggregated {
    ($($args:tt)*) => {
        scope! { @with [
            "cpu_used_pct",
            "mem_used",
            "mem_used_pct",
            "disk_used",
            "disk_used_pct",
            "age_s"
        ] $($args)* }
    };
}

/// The sandbox metrics aggregated per pool (and per team) as `avg_`, `min_` and `max_`.
pub const AGGREGATED: [&str; 6] = with_aggregated! { list };

scope! {
    /// Per sandbox: `busy`, `protect`, and sandbox-scope alerts.
    static SANDBOX = "sandbox", metadata: true;
    /// Slots of [`SANDBOX`], in order.
    mod sandbox {
        CPU_USED_PCT: "cpu_used_pct" N,
        CPU_COUNT: "cpu_count" N,
        MEM_USED: "mem_used" N,
        MEM_TOTAL: "mem_total" N,
        MEM_USED_PCT: "mem_used_pct" N,
        DISK_USED: "disk_used" N,
        DISK_TOTAL: "disk_total" N,
        DISK_USED_PCT: "disk_used_pct" N,
        AGE_S: "age_s" N,
        TIME_LEFT_S: "time_left_s" N,
        TEMPLATE: "template" T,
        SANDBOX_ID: "sandbox_id" T,
        POOL: "pool" T,
    }
}

/// The [`SANDBOX`] slots of the [`AGGREGATED`] metrics, in order: what the aggregates are
/// summed from. A metric missing from [`SANDBOX`] fails the build.
pub(crate) const AGGREGATED_SLOTS: [usize; AGGREGATED.len()] = {
    let mut slots = [0; AGGREGATED.len()];
    let mut i = 0;
    while i < AGGREGATED.len() {
        slots[i] = slot_of(SANDBOX.vars, AGGREGATED[i]);
        i += 1;
    }
    slots
};

/// The slot of `name` among `vars`, at compile time.
const fn slot_of(vars: &[(&str, VarType)], name: &str) -> usize {
    let mut i = 0;
    while i < vars.len() {
        if same(vars[i].0, name) {
            return i;
        }
        i += 1;
    }
    panic!("an aggregated metric is not a sandbox variable");
}

/// `a == b`, at compile time.
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

scope! {
    /// Per pool: step `when`, target `metric`, pool-scope alerts.
    static POOL = "pool", metadata: false;
    /// Slots of [`POOL`], in order; the aggregates start at `AVG`, `MIN_OF` and `MAX_OF` and
    /// follow [`AGGREGATED`].
    mod pool {
        SIZE: "size" N,
        RUNNING: "running" N,
        PENDING_CREATES: "pending_creates" N,
        MIN: "min" N,
        MAX: "max" N,
        BUSY_COUNT: "busy_count" N,
        BUSY_RATIO: "busy_ratio" N,
        WITH_DATA: "with_data" N,
        BUSY_CORES: "busy_cores" N,
        CAPACITY_CORES: "capacity_cores" N,
        CLAIMED: "claimed" N,
        IDLE: "idle" N,
        PAUSED: "paused" N,
        CLAIM_RATE: "claim_rate" N,
        AVG: aggregated "avg_",
        MIN_OF: aggregated "min_",
        MAX_OF: aggregated "max_",
        POOL: "pool" T,
        TEMPLATE: "template" T,
    }
}

scope! {
    /// Across every sandbox the agent sees: team-scope alerts.
    static TEAM = "team", metadata: false;
    /// Slots of [`TEAM`].
    mod team {
        RUNNING: "running" N,
        PAUSED: "paused" N,
        WITH_DATA: "with_data" N,
        AVG: aggregated "avg_",
        MIN_OF: aggregated "min_",
        MAX_OF: aggregated "max_",
    }
}

scope! {
    /// Per lifecycle event: trigger `when`.
    static EVENT = "event", metadata: true;
    /// Slots of [`EVENT`].
    mod event {
        TYPE: "type" T,
        KILL_REASON: "kill_reason" T,
        TEMPLATE: "template" T,
        SANDBOX_ID: "sandbox_id" T,
        POOL: "pool" T,
        EXECUTION_TIME_S: "execution_time_s" N,
        VCPU_COUNT: "vcpu_count" N,
        MEMORY_MB: "memory_mb" N,
    }
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
        assert_eq!(POOL.slot("busy_cores"), Some(pool::BUSY_CORES));
        assert_eq!(POOL.slot("capacity_cores"), Some(pool::CAPACITY_CORES));
        assert_eq!(POOL.slot("claimed"), Some(pool::CLAIMED));
        assert_eq!(POOL.slot("idle"), Some(pool::IDLE));
        assert_eq!(POOL.slot("paused"), Some(pool::PAUSED));
        assert_eq!(POOL.slot("claim_rate"), Some(pool::CLAIM_RATE));
        assert_eq!(TEAM.slot("with_data"), Some(team::WITH_DATA));
        assert_eq!(EVENT.slot("memory_mb"), Some(event::MEMORY_MB));
    }
}
