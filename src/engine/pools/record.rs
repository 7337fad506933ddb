//! The record step: the cause of an evaluation as a sentence and as fields, the pool's status
//! (kept even when nothing is done, for status pages), and a decision for each action.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::Account;
use crate::engine::prepare::Bounds;
use crate::engine::{Action, Clamp, Decision, PoolState, PoolStatus};
use crate::rules::Pool;

/// What the chain settled on.
pub(super) struct Verdict {
    /// The raw recommendation, before any limit.
    pub raw: u32,
    /// The size after every limit and victim choice.
    pub to: u32,
    /// What gets there: creates, kills, pauses; each becomes a decision with the same cause.
    pub actions: Vec<Action>,
}

/// Writes the cause and the pool's status, and a decision for each action.
#[allow(clippy::too_many_arguments)] // the step's inputs, each named; a struct would only rename them
pub(super) fn record(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    bounds: &Bounds,
    busy_ratio: f64,
    verdict: Verdict,
    acc: Account,
    out: &mut Vec<Decision>,
) {
    let Verdict { raw, to, actions } = verdict;
    let Account {
        size,
        clamps,
        reasons,
        mut cause,
        hold,
    } = acc;
    cause.result = Some(to);
    cause.summary = summarize(pool, &reasons, hold, &clamps, size, to);
    cause.values.insert("size".into(), size as f64);
    cause.values.insert("busy_ratio".into(), busy_ratio);
    cause.clamps = clamps.clone();
    st.status = Some(PoolStatus {
        at: now,
        size,
        min: bounds.min,
        max: bounds.max,
        raw,
        desired: to,
        clamps,
        summary: cause.summary.clone(),
    });
    let last = actions.len().saturating_sub(1);
    for (k, action) in actions.into_iter().enumerate() {
        let cause = if k == last {
            std::mem::take(&mut cause)
        } else {
            cause.clone()
        };
        out.push(Decision {
            at: now,
            rule: pool.name.clone(),
            action,
            dry_run: pool.dry_run,
            cause,
        });
    }
}

/// "pool p: <reasons>; <each clamp>: from -> to; size a -> b".
fn summarize(
    pool: &Pool,
    reasons: &[String],
    hold: bool,
    clamps: &[Clamp],
    size: u32,
    to: u32,
) -> String {
    let mut summary = format!("pool {}: ", pool.name);
    if reasons.is_empty() {
        summary.push_str(if hold {
            "metrics missing"
        } else {
            "no rule fired"
        });
    } else {
        summary.push_str(&reasons.join("; "));
    }
    for c in clamps {
        let _ = write!(summary, "; {}: {} -> {}", c.note, c.from, c.to);
    }
    let _ = write!(summary, "; size {size} -> {to}");
    summary
}
