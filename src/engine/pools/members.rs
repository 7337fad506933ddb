//! The members step: one pass over a pool's running members that evaluates `busy`, sums the
//! aggregates, and notes each member's CPU for victim choice. A member without a fresh sample,
//! or whose `busy` has no value, counts as missing data, never as idle.

use chrono::{DateTime, Utc};

use super::super::prepare::{Agg, Prepared, bind_sandbox};
use crate::expr::Bindings;
use crate::rules::Pool;
use crate::rules::scopes::SANDBOX;

/// What the per-member pass saw: busy members, aggregates, and each member's CPU for victims.
pub(super) struct Members {
    pub busy: usize,
    pub agg: Agg,
    /// (sandbox index, CPU when fresh), for victim selection.
    pub cpu: Vec<(usize, Option<f64>)>,
    /// Members without a fresh sample, or whose `busy` could not be evaluated.
    pub missing: usize,
}

/// The per-member pass: the busy predicate and the aggregates over members with fresh data.
pub(super) fn observe(
    pool: &Pool,
    prepared: &Prepared<'_>,
    member_ids: &[usize],
    now: DateTime<Utc>,
) -> Members {
    let mut m = Members {
        busy: 0,
        agg: Agg::new(),
        cpu: Vec::with_capacity(member_ids.len()),
        missing: 0,
    };
    let mut sb = Bindings::new(&SANDBOX);
    for &i in member_ids {
        let Some(s) = prepared.sandboxes.get(i) else {
            continue;
        };
        let fresh = bind_sandbox(&mut sb, s, now, pool.stale_after);
        // A busy predicate that cannot be evaluated (no value, not finite) is missing data.
        let busy = fresh.then(|| pool.busy.eval_bool(&sb).ok()).flatten();
        match busy {
            Some(b) => {
                m.agg.add(&sb);
                m.busy += usize::from(b);
            }
            None => m.missing += 1,
        }
        m.cpu
            .push((i, busy.is_some().then(|| sb.num("cpu_used_pct")).flatten()));
    }
    m
}
