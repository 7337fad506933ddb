//! The lifetime step: which members are retiring. A member older than the pool's `max_age`
//! (less a jitter of up to a tenth of it, fixed per member by a hash of its id, so members
//! created together do not all roll together) and not claimed is retiring: the resize step
//! replaces it first and kills it once the pool has its size without it. A retiring member
//! whose replacement exists (running or in flight) is remembered in [`PoolState`], so the two
//! count as one member toward the size the rules see. At most
//! `max(1, members / 10)` roll at once, oldest first. A claimed member past `max_age` is left
//! to its lease.
//!
//! Pure arithmetic on observed ages: never holds on missing metrics, never reads a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::victims::Plan;
use crate::engine::prepare::Prepared;
use crate::engine::{PoolClaims, PoolState, time};
use crate::rules::Pool;

/// The members (indexes into `prepared.sandboxes`) that roll at this evaluation, the longest
/// overdue first; empty without `max_age`. Allocates only when some member is overdue.
pub(super) fn retiring(
    pool: &Pool,
    prepared: &Prepared<'_>,
    member_ids: &[usize],
    claims: Option<&PoolClaims>,
    now: DateTime<Utc>,
) -> Vec<usize> {
    let Some(max_age) = pool.max_age else {
        return Vec::new();
    };
    let mut overdue: Vec<(DateTime<Utc>, usize)> = member_ids
        .iter()
        .filter_map(|&i| {
            let s = prepared.sandboxes.get(i)?;
            let due = time::after(s.obs.started_at, max_age - jitter(&s.obs.id, max_age));
            (now >= due && !prepared.is_claimed(claims, i)).then_some((due, i))
        })
        .collect();
    overdue.sort_unstable();
    overdue.truncate(pace(member_ids.len()));
    overdue.into_iter().map(|(_, i)| i).collect()
}

/// How many retiring members already have their replacement (created at an earlier
/// evaluation); forgets the members that are no longer retiring (killed, claimed).
pub(super) fn replaced(st: &mut PoolState, prepared: &Prepared<'_>, retiring: &[usize]) -> u32 {
    if st.replaced.is_empty() {
        return 0;
    }
    let is_retiring = |id: &String| {
        retiring
            .iter()
            .any(|&i| prepared.sandboxes.get(i).is_some_and(|s| &s.obs.id == id))
    };
    st.replaced.retain(is_retiring);
    u32::try_from(st.replaced.len()).unwrap_or(u32::MAX)
}

/// Remembers which retiring members this evaluation's creates replace: those not yet
/// replaced and not killed now, oldest first, one per create.
pub(super) fn remember_replacements(
    st: &mut PoolState,
    prepared: &Prepared<'_>,
    retiring: &[usize],
    plan: &Plan,
) {
    let mut creates = plan.create as usize;
    for &i in retiring {
        if creates == 0 {
            break;
        }
        let id = &prepared.sandboxes[i].obs.id;
        if st.replaced.contains(id) || plan.retired.contains(id) {
            continue;
        }
        st.replaced.push(id.clone());
        creates -= 1;
    }
}

/// How many members may roll at once: a tenth of the pool, at least one.
fn pace(members: usize) -> usize {
    (members / 10).max(1)
}

/// How much earlier than `max_age` this member rolls: up to a tenth of it, the same for the
/// same id on every evaluation and every restart (FNV-1a, not the std hasher, whose output
/// may change between Rust releases).
pub(super) fn jitter(id: &str, max_age: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let permille = u32::try_from(h % 1001).unwrap_or(0);
    max_age / 10 * permille / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_fixed_per_id_and_within_a_tenth() {
        let age = Duration::from_secs(3600);
        assert_eq!(jitter("a", age), jitter("a", age));
        let spread: std::collections::BTreeSet<Duration> =
            (0..50).map(|i| jitter(&format!("sbx-{i}"), age)).collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert!(spread.iter().all(|j| *j <= age / 10));
        assert_eq!((pace(5), pace(10), pace(95)), (1, 1, 9));
    }
}
