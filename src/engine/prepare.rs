//! The per-step preparation shared by pools, alerts and triggers: each observed sandbox's text
//! values converted once (not once per rule), members indexed by pool, and the helpers that
//! fill a rule's variables: [`bind_sandbox`], [`Agg`] for the aggregates, [`PoolView`] for the
//! pool scope, and a pool's effective [`bounds`] at `now`.
//!
//! Nothing here decides: it only turns observations into bindings. Like the rest of the engine
//! it does no I/O and reads no clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{ObservedSandbox, PoolClaims, time};
use crate::e2b::SandboxState;
use crate::expr::{Bindings, Meta, Text};
use crate::rules::scopes::{AGGREGATED, AGGREGATED_SLOTS, pool as ps, sandbox as ss};
use crate::rules::{AlertScope, Pool, RuleSet};

pub(crate) struct PreparedSandbox<'a> {
    pub obs: &'a ObservedSandbox,
    pub template: Text,
    pub id: Text,
    pub pool: Text,
    pub meta: Meta,
}

pub(crate) struct Prepared<'a> {
    pub sandboxes: Vec<PreparedSandbox<'a>>,
    /// Indexes of running sandboxes by owning pool.
    by_pool: BTreeMap<&'a str, Vec<usize>>,
    /// Indexes of paused sandboxes by owning pool (the warm tier).
    paused_by_pool: BTreeMap<&'a str, Vec<usize>>,
    /// What the claims ledger says, per pool.
    claims: &'a BTreeMap<String, PoolClaims>,
}

impl Prepared<'_> {
    /// The indexes (into `sandboxes`) of a pool's running members.
    pub fn members(&self, pool: &str) -> &[usize] {
        self.by_pool.get(pool).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The indexes (into `sandboxes`) of a pool's paused members.
    pub fn paused(&self, pool: &str) -> &[usize] {
        self.paused_by_pool
            .get(pool)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A pool's claims; `None` when the ledger has no entry for it.
    pub fn claims(&self, pool: &str) -> Option<&PoolClaims> {
        self.claims.get(pool)
    }

    /// Whether the member at `i` is claimed.
    pub fn is_claimed(&self, claims: Option<&PoolClaims>, i: usize) -> bool {
        claims.is_some_and(|c| {
            !c.leases.is_empty()
                && self
                    .sandboxes
                    .get(i)
                    .is_some_and(|s| c.leases.contains_key(&s.obs.id))
        })
    }

    /// The pool's claim counts: claimed and idle running members, paused members, the rate.
    /// A pool the ledger does not know has nothing claimed and a rate of 0.
    pub fn claim_view(&self, pool: &str) -> ClaimView {
        let members = self.members(pool);
        let claims = self.claims(pool);
        let claimed = match claims {
            Some(c) if !c.leases.is_empty() => members
                .iter()
                .filter(|&&i| self.is_claimed(claims, i))
                .count(),
            _ => 0,
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        ClaimView {
            claimed: count(claimed),
            idle: count(members.len() - claimed),
            paused: count(self.paused(pool).len()),
            claim_rate: claims
                .map(|c| c.claim_rate)
                .filter(|r| r.is_finite() && *r >= 0.0)
                .unwrap_or(0.0),
            waiting: claims.map_or(0, |c| c.waiting),
        }
    }
}

/// A pool's members as claims see them, at one step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClaimView {
    /// Running members with a lease.
    pub claimed: u32,
    /// Running members without one.
    pub idle: u32,
    /// Paused members carrying the pool's mark.
    pub paused: u32,
    /// Claims per second over the last minute (0 when unknown or not finite).
    pub claim_rate: f64,
    /// Claim requests waiting for a member.
    pub waiting: u32,
}

/// Which per-sandbox text values some sandbox-scope rule reads; the others are not converted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Needs {
    pub id: bool,
    pub template: bool,
    pub pool: bool,
    pub meta: bool,
}

impl Needs {
    pub fn of(rules: &RuleSet) -> Needs {
        let mut names: Vec<String> = Vec::new();
        for p in &rules.pools {
            names.extend(p.busy.variables().map(str::to_string));
            if let Some(e) = &p.protect {
                names.extend(e.variables().map(str::to_string));
            }
        }
        for a in rules
            .alerts
            .iter()
            .filter(|a| a.scope == AlertScope::Sandbox)
        {
            names.extend(a.when.variables().map(str::to_string));
            names.extend(a.message.placeholders());
        }
        let has = |n: &str| names.iter().any(|x| x == n);
        Needs {
            id: has("sandbox_id"),
            template: has("template"),
            pool: has("pool"),
            meta: names.iter().any(|x| x.starts_with("metadata.")),
        }
    }
}

/// Converts what the rules read of each sandbox once per step, and indexes members (running
/// and paused) by pool.
pub(crate) fn prepare<'a>(
    sandboxes: &'a [ObservedSandbox],
    claims: &'a BTreeMap<String, PoolClaims>,
    needs: Needs,
) -> Prepared<'a> {
    let text = |want: bool, s: &str| if want { Text::new(s) } else { Text::new("") };
    let mut by_pool: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut paused_by_pool: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let sandboxes: Vec<PreparedSandbox> = sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if let Some(p) = s.pool() {
                let index = match s.state {
                    SandboxState::Running => &mut by_pool,
                    SandboxState::Paused => &mut paused_by_pool,
                };
                index.entry(p).or_default().push(i);
            }
            PreparedSandbox {
                obs: s,
                template: text(needs.template, &s.template),
                id: text(needs.id, &s.id),
                pool: text(needs.pool, s.pool().unwrap_or("")),
                meta: if needs.meta {
                    Meta::new(&s.metadata)
                } else {
                    Meta::default()
                },
            }
        })
        .collect();
    Prepared {
        sandboxes,
        by_pool,
        paused_by_pool,
        claims,
    }
}

const METRIC_SLOTS: [usize; 8] = [
    ss::CPU_USED_PCT,
    ss::CPU_COUNT,
    ss::MEM_USED,
    ss::MEM_TOTAL,
    ss::MEM_USED_PCT,
    ss::DISK_USED,
    ss::DISK_TOTAL,
    ss::DISK_USED_PCT,
];

/// Fills sandbox bindings; returns false (and leaves metric slots unset) when the sandbox has
/// no sample newer than `stale_after`.
pub(crate) fn bind_sandbox<'b>(
    b: &mut Bindings<'b>,
    s: &'b PreparedSandbox<'_>,
    now: DateTime<Utc>,
    stale_after: std::time::Duration,
) -> bool {
    b.set_num(
        ss::AGE_S,
        time::seconds_between(s.obs.started_at, now).max(0.0),
    );
    b.set_num(
        ss::TIME_LEFT_S,
        time::seconds_between(now, s.obs.end_at).max(0.0),
    );
    b.set_text(ss::TEMPLATE, &s.template);
    b.set_text(ss::SANDBOX_ID, &s.id);
    b.set_text(ss::POOL, &s.pool);
    b.set_meta(&s.meta);
    let fresh = s
        .obs
        .metric
        .as_ref()
        .filter(|m| m.timestamp >= time::before(now, stale_after));
    let Some(m) = fresh else {
        // Bindings are reused across sandboxes: never leave another sandbox's metrics behind.
        for slot in METRIC_SLOTS {
            b.unset(slot);
        }
        return false;
    };
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64 * 100.0
        }
    };
    b.set_num(ss::CPU_USED_PCT, m.cpu_used_pct);
    b.set_num(ss::CPU_COUNT, m.cpu_count as f64);
    b.set_num(ss::MEM_USED, m.mem_used as f64);
    b.set_num(ss::MEM_TOTAL, m.mem_total as f64);
    b.set_num(ss::MEM_USED_PCT, pct(m.mem_used, m.mem_total));
    b.set_num(ss::DISK_USED, m.disk_used as f64);
    b.set_num(ss::DISK_TOTAL, m.disk_total as f64);
    b.set_num(ss::DISK_USED_PCT, pct(m.disk_used, m.disk_total));
    true
}

/// Running sums of the [`AGGREGATED`] sandbox metrics, in that order, and of the cores.
pub(crate) struct Agg {
    pub n: usize,
    /// Sum of `cpu_used_pct * cpu_count / 100`: the cores the members keep busy.
    pub busy_cores: f64,
    /// Sum of `cpu_count`: the cores the members have.
    pub capacity_cores: f64,
    sum: [f64; AGGREGATED.len()],
    min: [f64; AGGREGATED.len()],
    max: [f64; AGGREGATED.len()],
}

impl Agg {
    pub fn new() -> Self {
        Agg {
            n: 0,
            busy_cores: 0.0,
            capacity_cores: 0.0,
            sum: [0.0; AGGREGATED.len()],
            min: [f64::INFINITY; AGGREGATED.len()],
            max: [f64::NEG_INFINITY; AGGREGATED.len()],
        }
    }

    pub fn add(&mut self, b: &Bindings<'_>) {
        self.n += 1;
        let cores = b.num_at(ss::CPU_COUNT).unwrap_or(0.0);
        self.capacity_cores += cores;
        self.busy_cores += b.num_at(ss::CPU_USED_PCT).unwrap_or(0.0) * cores / 100.0;
        for (i, slot) in AGGREGATED_SLOTS.iter().enumerate() {
            let v = b.num_at(*slot).unwrap_or(0.0);
            self.sum[i] += v;
            self.min[i] = self.min[i].min(v);
            self.max[i] = self.max[i].max(v);
        }
    }

    /// Writes avg/min/max at the given slot offsets; all 0 over no data.
    pub fn write(&self, b: &mut Bindings<'_>, avg: usize, min: usize, max: usize) {
        for i in 0..AGGREGATED.len() {
            let (a, lo, hi) = if self.n == 0 {
                (0.0, 0.0, 0.0)
            } else {
                (self.sum[i] / self.n as f64, self.min[i], self.max[i])
            };
            b.set_num(avg + i, a);
            b.set_num(min + i, lo);
            b.set_num(max + i, hi);
        }
    }
}

/// A pool's effective size limits at one instant.
pub(crate) struct Bounds {
    pub min: u32,
    pub max: u32,
    /// The schedule that set them, for the cause; `None` when they are the pool's own.
    pub schedule: Option<String>,
}

/// The effective bounds at `now`: the pool's, overridden by the schedule that fired last.
pub(crate) fn bounds(pool: &Pool, now: DateTime<Utc>) -> Bounds {
    let latest = pool
        .schedules
        .iter()
        .filter_map(|s| s.cron.previous(now).map(|t| (t, s)))
        .max_by_key(|(t, _)| *t);
    match latest {
        Some((t, s)) => Bounds {
            min: s.min.unwrap_or(pool.min),
            max: s.max.unwrap_or(pool.max),
            schedule: Some(format!(
                "schedule {:?} since {}",
                s.name,
                t.format("%Y-%m-%d %H:%M UTC")
            )),
        },
        None => Bounds {
            min: pool.min,
            max: pool.max,
            schedule: None,
        },
    }
}

/// A pool's name and template as rule text, converted once per evaluation.
pub(crate) struct PoolTexts {
    name: Text,
    template: Text,
}

impl PoolTexts {
    pub fn of(pool: &Pool) -> Self {
        PoolTexts {
            name: Text::new(&pool.name),
            template: Text::new(&pool.template),
        }
    }
}

/// What the pool scope's variables say about one pool at this step. Pool evaluation and
/// pool-scope alerts count members differently, but bind what they counted the same way.
pub(crate) struct PoolView<'a> {
    pub running: u32,
    pub pending_creates: u32,
    pub bounds: &'a Bounds,
    /// Members with data for which `busy` holds.
    pub busy: usize,
    /// The aggregates over the members with data (`agg.n` of them).
    pub agg: &'a Agg,
    /// Claimed, idle and paused members, and the claim rate.
    pub claims: ClaimView,
}

impl PoolView<'_> {
    /// Running members plus creates in flight.
    pub fn size(&self) -> u32 {
        self.running.saturating_add(self.pending_creates)
    }

    /// The busy share of the members with data; 0 when none has data.
    pub fn busy_ratio(&self) -> f64 {
        if self.agg.n == 0 {
            0.0
        } else {
            self.busy as f64 / self.agg.n as f64
        }
    }

    /// Fills every variable of the pool scope.
    pub fn bind<'b>(&self, b: &mut Bindings<'b>, texts: &'b PoolTexts) {
        b.set_num(ps::SIZE, self.size() as f64);
        b.set_num(ps::RUNNING, self.running as f64);
        b.set_num(ps::PENDING_CREATES, self.pending_creates as f64);
        b.set_num(ps::MIN, self.bounds.min as f64);
        b.set_num(ps::MAX, self.bounds.max as f64);
        b.set_num(ps::BUSY_COUNT, self.busy as f64);
        b.set_num(ps::BUSY_RATIO, self.busy_ratio());
        b.set_num(ps::WITH_DATA, self.agg.n as f64);
        b.set_num(ps::BUSY_CORES, self.agg.busy_cores);
        b.set_num(ps::CAPACITY_CORES, self.agg.capacity_cores);
        b.set_num(ps::CLAIMED, self.claims.claimed as f64);
        b.set_num(ps::IDLE, self.claims.idle as f64);
        b.set_num(ps::PAUSED, self.claims.paused as f64);
        b.set_num(ps::CLAIM_RATE, self.claims.claim_rate);
        self.agg.write(b, ps::AVG, ps::MIN_OF, ps::MAX_OF);
        b.set_text(ps::POOL, &texts.name);
        b.set_text(ps::TEMPLATE, &texts.template);
    }
}
