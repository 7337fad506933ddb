//! The damping steps: stabilization windows (HPA's) and cooldowns. Both hold back
//! metric-driven changes only; min and max, applied after them, always hold.
//!
//! Stabilization looks back over recommended changes (raw recommendation minus size, kept in
//! [`PoolState::window`]), so relative step rules and absolute target recommendations mean the
//! same. Cooldowns look forward: a metric-driven change starts one, during which the pool does
//! not move further in that direction.

use chrono::{DateTime, Utc};

use super::Account;
use crate::engine::{ClampKind, PoolState, time};
use crate::rules::Pool;

/// Stabilization. Invariant: scale-in goes no lower than the highest change recommended in the
/// last `stabilization.down` (none at all if any recommendation in it was to hold or grow), and
/// not before a whole down window has been observed since the first evaluation; scale-out goes
/// no higher than the lowest change recommended in the last `stabilization.up`. Every
/// evaluation's recommendation enters the window, whatever later steps make of it.
pub(super) fn stabilize(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    first_eval: DateTime<Utc>,
    raw: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    remember_recommendation(pool, st, now, raw, size);
    let mut to = raw;
    if raw < size && !pool.stabilization.down.is_zero() {
        to = stabilize_down(pool, st, now, first_eval, to, acc);
    }
    if raw > size && !pool.stabilization.up.is_zero() {
        to = stabilize_up(pool, st, now, to, acc);
    }
    to
}

/// Adds this evaluation's recommended change to the window and forgets what is older than
/// both stabilization windows.
fn remember_recommendation(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    raw: u32,
    size: u32,
) {
    let horizon = pool.stabilization.up.max(pool.stabilization.down);
    st.window.push_back((now, i64::from(raw) - i64::from(size)));
    let oldest = time::before(now, horizon);
    while st.window.front().is_some_and(|(t, _)| *t <= oldest) {
        st.window.pop_front();
    }
}

/// Scale-in by no more than the smallest cut recommended in the down window, and only once a
/// whole window has been watched.
fn stabilize_down(
    pool: &Pool,
    st: &PoolState,
    now: DateTime<Utc>,
    first_eval: DateTime<Utc>,
    mut to: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    let window = pool.stabilization.down;
    let since = time::before(now, window);
    let in_window = st.window.iter().filter(|(t, _)| *t > since);
    if let Some(&(t, highest)) = in_window.max_by_key(|(t, d)| (*d, *t)) {
        let stab = plus(size, highest.min(0));
        if stab > to {
            let verb = if highest >= 0 { "held" } else { "limited" };
            acc.clamp(
                ClampKind::Stabilization,
                to,
                stab,
                Some(time::after(t, window)),
                format!(
                    "scale-in {verb} by stabilization: {} recommended at {}",
                    signed_delta(highest),
                    t.format("%H:%M:%S")
                ),
            );
            to = stab;
        }
    }
    let until = time::after(first_eval, window);
    if to < size && now < until {
        acc.clamp(
            ClampKind::Stabilization,
            to,
            size,
            Some(until),
            format!(
                "scale-in held until a whole stabilization window has been observed ({})",
                until.format("%H:%M:%S")
            ),
        );
        to = size;
    }
    to
}

/// Scale-out by no more than the smallest increase recommended in the up window.
fn stabilize_up(
    pool: &Pool,
    st: &PoolState,
    now: DateTime<Utc>,
    mut to: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    let since = time::before(now, pool.stabilization.up);
    let in_window = st.window.iter().filter(|(t, _)| *t > since);
    if let Some(&(t, lowest)) = in_window.min_by_key(|(t, d)| (*d, std::cmp::Reverse(*t))) {
        let stab = plus(size, lowest.max(0));
        if stab < to {
            acc.clamp(
                ClampKind::Stabilization,
                to,
                stab,
                Some(time::after(t, pool.stabilization.up)),
                format!(
                    "scale-out held by stabilization: {} recommended at {}",
                    signed_delta(lowest),
                    t.format("%H:%M:%S")
                ),
            );
            to = stab;
        }
    }
    to
}

/// Cooldown. Invariant: no scale-out before `cooldown_up_until`, no scale-in before
/// `cooldown_down_until`; the pool stays at its size instead. Min and max, applied after this
/// step, override it. The windows are started by [`start_cooldown`].
pub(super) fn cool_down(st: &PoolState, now: DateTime<Utc>, mut to: u32, acc: &mut Account) -> u32 {
    let size = acc.size;
    if to > size
        && let Some(until) = st.cooldown_up_until.filter(|u| now < *u)
    {
        let note = format!("scale-out in cooldown until {}", until.format("%H:%M:%S"));
        acc.clamp(ClampKind::Cooldown, to, size, Some(until), note);
        to = size;
    }
    if to < size
        && let Some(until) = st.cooldown_down_until.filter(|u| now < *u)
    {
        let note = format!("scale-in in cooldown until {}", until.format("%H:%M:%S"));
        acc.clamp(ClampKind::Cooldown, to, size, Some(until), note);
        to = size;
    }
    to
}

/// Starts the cooldown the decided action calls for. Invariant: only a metric-driven change
/// starts one (a create when the raw recommendation was to grow, a kill when it was to shrink);
/// enforcing min or max (or a schedule) starts none. A zero cooldown clears the window.
pub(super) fn start_cooldown(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    raw: u32,
    size: u32,
    to: u32,
) {
    let cooldown_end = |d: std::time::Duration| Some(time::after(now, d)).filter(|_| !d.is_zero());
    if to > size && raw > size {
        st.cooldown_up_until = cooldown_end(pool.cooldown.up);
    } else if to < size && raw < size {
        st.cooldown_down_until = cooldown_end(pool.cooldown.down);
    }
}

/// `size + d`, within 0..=u32::MAX.
fn plus(size: u32, d: i64) -> u32 {
    u32::try_from((i64::from(size) + d).max(0)).unwrap_or(u32::MAX)
}

fn signed_delta(d: i64) -> String {
    match d {
        0 => "hold".to_string(),
        d if d > 0 => format!("+{d}"),
        d => d.to_string(),
    }
}
