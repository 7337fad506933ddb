//! The claims families of `/metrics`: claims by pool and result, claim durations, the
//! claimed, idle and paused idle members of each pool, leases expired and claims lost. Every pool the
//! claims ledger knows is written with every result at 0 from the start, so a rate over it
//! exists before the first claim. It only reads the claims service's counters.

use std::fmt::Write as _;

use super::metrics::{esc, family, pool_gauge};
use crate::agent::claims::ledger::Counts;
use crate::agent::claims::{CLAIM_BUCKETS, ClaimResult, Claims};
use crate::agent::histogram::{Buckets, write_histogram};
use crate::sync::lock;

/// Every claims family, in order.
pub(super) fn render(out: &mut String, c: &Claims) {
    let counts = c.counts();
    render_results(out, c, &counts);
    render_latency(out, c);
    render_members(out, &counts);
    render_ends(out, c, &counts);
}

/// `poolpilot_claims_total{pool,result}`: each known pool with every result, then any pool
/// the ledger no longer knows (a reload removed it) with what it had.
fn render_results(
    out: &mut String,
    c: &Claims,
    counts: &std::collections::BTreeMap<String, Counts>,
) {
    family(
        out,
        "poolpilot_claims_total",
        "counter",
        "Claims by pool and result (ok, waited, resumed, timed_out, refused).",
    );
    let results = lock(&c.metrics.results).clone();
    let line = |out: &mut String, pool: &str, r: ClaimResult, n: u64| {
        let _ = writeln!(
            out,
            "poolpilot_claims_total{{pool=\"{}\",result=\"{}\"}} {n}",
            esc(pool),
            r.as_str()
        );
    };
    for pool in counts.keys() {
        for r in ClaimResult::ALL {
            line(
                out,
                pool,
                r,
                results.get(&(pool.clone(), r)).copied().unwrap_or(0),
            );
        }
    }
    for ((pool, r), n) in results.iter().filter(|((p, _), _)| !counts.contains_key(p)) {
        line(out, pool, *r, *n);
    }
}

/// `poolpilot_claim_duration_seconds`: the time to serve each granted claim, by pool.
fn render_latency(out: &mut String, c: &Claims) {
    let name = "poolpilot_claim_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "Time to serve a granted claim, by pool.",
    );
    for (pool, h) in lock(&c.metrics.latency).iter() {
        let buckets = Buckets {
            bounds: &CLAIM_BUCKETS,
            counts: &h.counts,
            sum: h.sum,
            count: h.count,
        };
        write_histogram(out, name, &format!("pool=\"{}\"", esc(pool)), &buckets);
    }
}

/// The gauges of each pool's members as claims see them.
fn render_members(out: &mut String, counts: &std::collections::BTreeMap<String, Counts>) {
    let per_pool = |get: fn(&Counts) -> usize| -> Vec<(&str, u64)> {
        counts
            .iter()
            .map(|(p, t)| (p.as_str(), get(t) as u64))
            .collect()
    };
    let families = [
        (
            "poolpilot_pool_claimed_sandboxes",
            "Members held by a claim.",
            per_pool(|t| t.claimed),
        ),
        (
            "poolpilot_pool_idle_sandboxes",
            "Running members no claim holds, ready to hand out.",
            per_pool(|t| t.idle),
        ),
        (
            "poolpilot_pool_idle_paused_sandboxes",
            "Paused members no claim holds, to be resumed by a claim.",
            per_pool(|t| t.paused),
        ),
    ];
    for (name, help, values) in families {
        pool_gauge(out, name, help, values);
    }
}

/// Claims that ended without a release: leases that ran out, members that were lost.
fn render_ends(out: &mut String, c: &Claims, counts: &std::collections::BTreeMap<String, Counts>) {
    let counters = [
        (
            "poolpilot_claim_leases_expired_total",
            "Claims released because their lease ran out.",
            &c.metrics.expired,
        ),
        (
            "poolpilot_claims_lost_total",
            "Claims ended because their member was gone (killed, crashed, timed out).",
            &c.metrics.lost,
        ),
    ];
    for (name, help, m) in counters {
        family(out, name, "counter", help);
        let m = lock(m);
        for pool in counts.keys() {
            let n = m.get(pool).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {n}", esc(pool));
        }
    }
}
