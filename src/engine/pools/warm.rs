//! The warm tier: idle members beyond `idle.min` that have stayed in excess for `warm.after`
//! are parked (paused: free, and outside E2B's concurrency cap) instead of killed, up to
//! `warm.paused` paused members in all; victims beyond that are killed, and so are paused
//! members beyond the cap (oldest first).
//!
//! The excess is tracked like a stabilization window, in [`PoolState`]: since when there has
//! been an excess without a break, and the smallest excess seen since. Only that smallest
//! excess is parked once `after` has passed, and the clock starts again after parking. Paused
//! members do not count toward the pool's size, `min` or `max`. A claimed member is never
//! paused (victims never include one).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::Account;
use super::victims::{Plan, members};
use crate::engine::prepare::Prepared;
use crate::engine::{PoolState, time};
use crate::rules::Pool;

/// The pool's counts the warm tier works from.
pub(super) struct Idle {
    /// Running members neither claimed nor retiring: the ones that may be parked.
    pub parkable: u32,
    /// The size the target is compared with (retiring members not counted).
    pub kept: u32,
    /// The effective `min`: parking never takes the pool below it.
    pub min: u32,
}

/// Lowers the target by the idle excess that has lasted `warm.after` (beyond what the chain
/// already removes), never below `min`. Without `warm`, the window is forgotten.
pub(super) fn park_excess(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    idle: &Idle,
    to: u32,
    acc: &mut Account,
) -> u32 {
    let (Some(warm), Some(band)) = (pool.warm, pool.idle) else {
        forget(st);
        return to;
    };
    let excess = idle.parkable.saturating_sub(band.min);
    if excess == 0 {
        forget(st);
        return to;
    }
    let since = *st.idle_excess_since.get_or_insert(now);
    st.idle_excess_floor = if since == now {
        excess
    } else {
        st.idle_excess_floor.min(excess)
    };
    if now < time::after(since, warm.after) || to > idle.kept {
        return to;
    }
    let planned = idle.kept - to;
    let extra = st
        .idle_excess_floor
        .saturating_sub(planned)
        .min(to.saturating_sub(idle.min));
    if extra == 0 {
        return to;
    }
    acc.reasons.push(format!(
        "warm: {} idle beyond idle.min {} for {}, {} to park",
        members(st.idle_excess_floor as usize),
        band.min,
        humantime::format_duration(warm.after),
        extra
    ));
    let left = excess.saturating_sub(planned + extra);
    st.idle_excess_since = (left > 0).then_some(now);
    st.idle_excess_floor = left;
    to - extra
}

fn forget(st: &mut PoolState) {
    st.idle_excess_since = None;
    st.idle_excess_floor = 0;
}

/// Pauses victims instead of killing them while the warm tier has room, and kills paused
/// members beyond `warm.paused`, oldest first.
pub(super) fn split(pool: &Pool, prepared: &Prepared<'_>, plan: &mut Plan, acc: &mut Account) {
    let Some(warm) = pool.warm else {
        return;
    };
    let paused = prepared.paused(&pool.name);
    let held = u32::try_from(paused.len()).unwrap_or(u32::MAX);
    let room = warm.paused.saturating_sub(held) as usize;
    let park = room.min(plan.victims.len());
    if park > 0 {
        plan.pause.extend(plan.victims.drain(..park));
    }
    let over = paused.len().saturating_sub(warm.paused as usize);
    if over > 0 {
        let mut oldest: Vec<usize> = paused.to_vec();
        oldest.sort_by_key(|&i| prepared.sandboxes[i].obs.started_at);
        plan.retired.extend(
            oldest[..over]
                .iter()
                .map(|&i| prepared.sandboxes[i].obs.id.clone()),
        );
    }
    if park > 0 || over > 0 {
        let mut why = format!("warm tier: {} paused", members(park));
        if over > 0 {
            let _ = write!(
                why,
                ", {} paused beyond warm.paused {} killed",
                members(over),
                warm.paused
            );
        }
        acc.reasons.push(why);
    }
}
