//! The rate step: HPA-style scaling policies (`scale.policies`). Each policy of a direction
//! allows the pool to move by `pods` members or `percent` of its size within `per`, measured
//! from the size at the start of that period, as HPA measures it; `select: max` takes the
//! policy allowing the largest change, `min` the smallest.
//!
//! The sizes come from [`PoolState::sizes`], a short history of each evaluation's size before
//! and after its decision, kept here and bounded by the pool's longest period. This step only
//! limits: it never turns a scale-out into a scale-in or the reverse, and min and max, applied
//! after it, always hold.

use chrono::{DateTime, Utc};

use super::Account;
use crate::engine::{ClampKind, PoolState, SizeRecord, time};
use crate::rules::{Pool, RateLimit, RatePolicies, Select};

/// The most evaluations remembered per pool, whatever the periods: a 30m period evaluated
/// every second needs 1,800.
const MAX_SIZES: usize = 4096;

/// What one direction's policies allow at this evaluation.
pub(super) struct Allowance {
    /// The highest size (up) or the lowest (down) the policies allow.
    pub limit: u32,
    /// Which policy set it, from what size: for the cause.
    pub why: String,
}

/// Both directions' allowances at this evaluation; `None` where the pool has no policies.
pub(super) struct Allowances {
    pub up: Option<Allowance>,
    pub down: Option<Allowance>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// What the pool's policies allow at `now`, from its size history and its current `size`.
pub(super) fn allowances(pool: &Pool, st: &PoolState, now: DateTime<Utc>, size: u32) -> Allowances {
    let of = |p: &Option<RatePolicies>, dir| p.as_ref().map(|p| allowance(p, dir, st, now, size));
    Allowances {
        up: of(&pool.policies.up, Dir::Up),
        down: of(&pool.policies.down, Dir::Down),
    }
}

/// One direction: each policy's limit from the size at the start of its period, then the
/// selected one. HPA rounds a percent up when growing and down when shrinking, so a percent
/// policy never stalls a pool of one.
fn allowance(
    policies: &RatePolicies,
    dir: Dir,
    st: &PoolState,
    now: DateTime<Utc>,
    size: u32,
) -> Allowance {
    let proposals = policies.rules.iter().map(|p| {
        let start = size_at(st, time::before(now, p.per), size);
        let limit = match (p.limit, dir) {
            (RateLimit::Pods(n), Dir::Up) => start.saturating_add(n),
            (RateLimit::Pods(n), Dir::Down) => start.saturating_sub(n),
            (RateLimit::Percent(pc), Dir::Up) => {
                scale(start, 1.0 + f64::from(pc) / 100.0, f64::ceil)
            }
            (RateLimit::Percent(pc), Dir::Down) => {
                scale(start, 1.0 - f64::from(pc) / 100.0, f64::floor)
            }
        };
        (limit, p, start)
    });
    // The largest change: the highest limit up, the lowest down; `min` the other way round.
    let largest = (dir == Dir::Up) == (policies.select == Select::Max);
    let chosen = if largest {
        proposals.max_by_key(|(l, _, _)| *l)
    } else {
        proposals.min_by_key(|(l, _, _)| *l)
    };
    let Some((limit, p, start)) = chosen else {
        // The loader refuses an empty list; without policies nothing is limited.
        let limit = if dir == Dir::Up { u32::MAX } else { 0 };
        return Allowance {
            limit,
            why: String::new(),
        };
    };
    let (dir_name, verb) = match dir {
        Dir::Up => ("up", "scale-out"),
        Dir::Down => ("down", "scale-in"),
    };
    let what = match p.limit {
        RateLimit::Pods(n) => format!("pods {n}"),
        RateLimit::Percent(pc) => format!("percent {pc}"),
    };
    let select = match (policies.rules.len(), policies.select) {
        (1, _) => String::new(),
        (n, Select::Max) => format!(" (select max of {n})"),
        (n, Select::Min) => format!(" (select min of {n})"),
    };
    let why = format!(
        "{verb} limited by policies.{dir_name} {what} per {}{select} from size {start} at {}",
        humantime::format_duration(p.per),
        time::before(now, p.per).format("%H:%M:%S"),
    );
    Allowance { limit, why }
}

/// `n * factor`, rounded by `round`, within 0..=u32::MAX.
fn scale(n: u32, factor: f64, round: fn(f64) -> f64) -> u32 {
    round(f64::from(n) * factor).clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The pool's size at instant `at`: what the last evaluation at or before it settled on;
/// before any remembered evaluation, the size the earliest one started from; with no history,
/// `size`.
fn size_at(st: &PoolState, at: DateTime<Utc>, size: u32) -> u32 {
    match st.sizes.iter().rev().find(|r| r.at <= at) {
        Some(r) => r.to,
        None => st.sizes.front().map_or(size, |r| r.from),
    }
}

/// Rate policies. Invariant: the result lies between the size and the allowance of the
/// direction it moves in; it never reverses the direction the earlier steps settled on.
pub(super) fn limit_rate(allow: &Allowances, mut to: u32, acc: &mut Account) -> u32 {
    let size = acc.size;
    if to > size
        && let Some(a) = &allow.up
    {
        let cap = a.limit.max(size);
        if to > cap {
            acc.clamp(ClampKind::Policy, to, cap, None, a.why.clone());
            to = cap;
        }
    }
    if to < size
        && let Some(a) = &allow.down
    {
        let floor = a.limit.min(size);
        if to < floor {
            acc.clamp(ClampKind::Policy, to, floor, None, a.why.clone());
            to = floor;
        }
    }
    to
}

/// Remembers this evaluation's size before and after its decision, and forgets what no period
/// of the pool looks back to (keeping the last record at or before the longest period's start,
/// which is that period's starting size). A pool without policies keeps nothing.
pub(super) fn remember_size(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    from: u32,
    to: u32,
) {
    let longest = [&pool.policies.up, &pool.policies.down]
        .into_iter()
        .flatten()
        .flat_map(|p| p.rules.iter().map(|r| r.per))
        .max();
    let Some(longest) = longest else {
        st.sizes.clear();
        return;
    };
    st.sizes.push_back(SizeRecord { at: now, from, to });
    let oldest = time::before(now, longest);
    while st.sizes.len() > MAX_SIZES || st.sizes.get(1).is_some_and(|r| r.at <= oldest) {
        st.sizes.pop_front();
    }
}
