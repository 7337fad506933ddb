//! The keep-alive step: a running member whose E2B end comes within `keepalive.before` gets its
//! timeout set further out: an unclaimed member to `extend_to` from now, a claimed member to
//! the later of its lease's end and `extend_to` from now. It never shortens a life: a member is
//! named only when its new end is later than the one observed. Members this evaluation kills or
//! pauses are left alone. One decision per distinct timeout, so claimed members (to their
//! lease ends) may make several.
//!
//! Costs nothing when no member is near its end: the pass reads each member's `end_at` and
//! allocates only for the members it extends.

use chrono::{DateTime, TimeDelta, Utc};

use super::victims::{Plan, members};
use crate::engine::prepare::Prepared;
use crate::engine::{Action, Cause, Decision, PoolClaims, time};
use crate::rules::Pool;

/// E2B's longest sandbox lifetime: a timeout beyond it is refused.
const MAX_TIMEOUT_S: u64 = 24 * 3600;

/// Members extended to the same timeout, and the least time one of them had left.
struct Group {
    timeout_s: u64,
    ids: Vec<String>,
    least_left_s: f64,
    claimed: usize,
}

/// The keep-alive decisions of one evaluation.
pub(super) fn keep_alive(
    pool: &Pool,
    prepared: &Prepared<'_>,
    member_ids: &[usize],
    claims: Option<&PoolClaims>,
    plan: &Plan,
    now: DateTime<Utc>,
    out: &mut Vec<Decision>,
) {
    if !pool.keepalive.enabled {
        return;
    }
    let soon = time::after(now, pool.keepalive.before);
    let mut groups: Vec<Group> = Vec::new();
    for &i in member_ids {
        let Some(s) = prepared.sandboxes.get(i) else {
            continue;
        };
        let (id, end) = (&s.obs.id, s.obs.end_at);
        if end > soon || plan.retired.contains(id) || plan.victims.contains(id) {
            continue;
        }
        if plan.pause.contains(id) {
            continue;
        }
        let lease = claims.and_then(|c| c.leases.get(id)).copied();
        let Some(timeout_s) = new_timeout(pool, now, end, lease) else {
            continue;
        };
        let left = time::seconds_between(now, end).max(0.0);
        let k = match groups.iter().position(|g| g.timeout_s == timeout_s) {
            Some(k) => k,
            None => {
                groups.push(Group {
                    timeout_s,
                    ids: Vec::new(),
                    least_left_s: f64::INFINITY,
                    claimed: 0,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[k];
        g.ids.push(id.clone());
        g.least_left_s = g.least_left_s.min(left);
        g.claimed += usize::from(lease.is_some());
    }
    out.extend(groups.into_iter().map(|g| decision(pool, now, g)));
}

/// The timeout that keeps a member alive: `extend_to` from now, or to its lease's end when
/// later (at most E2B's 24 h); `None` when that would not end it later than `end`.
fn new_timeout(
    pool: &Pool,
    now: DateTime<Utc>,
    end: DateTime<Utc>,
    lease: Option<DateTime<Utc>>,
) -> Option<u64> {
    let extend = pool.keepalive.extend_to.as_secs();
    let to_lease = lease.map_or(0, |l| {
        let s = l.signed_duration_since(now);
        // Whole seconds, rounded up, so the member outlives its lease.
        u64::try_from(s.num_seconds() + i64::from(s.subsec_nanos() > 0)).unwrap_or(0)
    });
    let timeout_s = extend.max(to_lease).min(MAX_TIMEOUT_S);
    let new_end = now.checked_add_signed(TimeDelta::seconds(i64::try_from(timeout_s).ok()?))?;
    (new_end > end).then_some(timeout_s)
}

/// One keep-alive decision, with a cause that says how many members had how little time left.
fn decision(pool: &Pool, now: DateTime<Utc>, g: Group) -> Decision {
    let n = g.ids.len();
    let to = humantime::format_duration(std::time::Duration::from_secs(g.timeout_s));
    let least = humantime::format_duration(std::time::Duration::from_secs(
        g.least_left_s.max(0.0).floor() as u64,
    ));
    let whose = if g.claimed > 0 {
        format!(" ({} claimed: to the end of its lease at least)", g.claimed)
    } else {
        String::new()
    };
    let summary = format!(
        "pool {}: keep-alive: {} had at most {least} left (under {}){whose}: timeout set to {to} from now",
        pool.name,
        members(n),
        humantime::format_duration(pool.keepalive.before),
    );
    let mut cause = Cause {
        summary,
        ..Cause::default()
    };
    cause.values.insert("members".into(), n as f64);
    cause.values.insert("least_left_s".into(), g.least_left_s);
    cause.values.insert("timeout_s".into(), g.timeout_s as f64);
    Decision {
        at: now,
        rule: pool.name.clone(),
        action: Action::KeepAlive {
            pool: pool.name.clone(),
            sandbox_ids: g.ids,
            timeout_s: g.timeout_s,
        },
        dry_run: pool.dry_run,
        cause,
    }
}
