//! The limit steps that bound how far one evaluation moves: `max_step` per evaluation, then
//! min and max, which always hold, schedules included.

use super::Account;
use crate::engine::ClampKind;
use crate::engine::prepare::Bounds;
use crate::rules::Pool;

/// At most `max_step.up` added or `max_step.down` removed per evaluation.
pub(super) fn limit_step(pool: &Pool, mut to: u32, acc: &mut Account) -> u32 {
    let size = acc.size;
    if let Some(up) = pool.max_step.up
        && to > size.saturating_add(up)
    {
        let cap = size.saturating_add(up);
        acc.clamp(
            ClampKind::MaxStep,
            to,
            cap,
            None,
            format!("capped by max_step.up {up}"),
        );
        to = cap;
    }
    if let Some(down) = pool.max_step.down
        && to < size.saturating_sub(down)
    {
        let floor = size.saturating_sub(down);
        acc.clamp(
            ClampKind::MaxStep,
            to,
            floor,
            None,
            format!("capped by max_step.down {down}"),
        );
        to = floor;
    }
    to
}

/// Min and max. Invariant: the result lies within the effective bounds at `now` (the pool's,
/// or the last fired schedule's), whatever the earlier steps decided.
pub(super) fn enforce_bounds(bounds: &Bounds, mut to: u32, acc: &mut Account) -> u32 {
    let (min, max) = (bounds.min, bounds.max);
    let source = bounds
        .schedule
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if to < min {
        acc.clamp(
            ClampKind::Min,
            to,
            min,
            None,
            format!("raised to min {min}{source}"),
        );
        to = min;
    }
    if to > max {
        acc.clamp(
            ClampKind::Max,
            to,
            max,
            None,
            format!("capped by max {max}{source}"),
        );
        to = max;
    }
    to
}
