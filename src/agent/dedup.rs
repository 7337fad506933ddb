//! The window of event ids already taken, shared by the webhook receiver and the events poll, so
//! that an event is handled once whichever way, and however many times, it arrives.
//!
//! # The invariant: no event is ever handled twice
//!
//! Each id is remembered with its event's timestamp. The window also holds a **horizon**: the
//! oldest event time the agent still takes.
//! 1. The horizon only moves forward, and never past the `since` of the next events poll (its
//!    cursor less the look-back), so that every event a poll can return is at or after it.
//! 2. An event older than the horizon is refused as stale, by the receiver and by the poll,
//!    whether or not its id is still here.
//! 3. An id is forgotten only when its event falls behind the horizon. By 2, an event whose id
//!    was forgotten is refused anyway: forgetting can never let an event be handled again.
//! 4. When the window is full (in ids or in bytes) of events still at or after the horizon, a
//!    webhook delivery is refused with 503 rather than making room: E2B retries it, and the poll
//!    backfills it in any case. The poll's own ids are always taken: they come from E2B's API,
//!    so their number is bounded by E2B's event rate over the look-back, not by a sender. (If
//!    the poll is what fills the window, it empties as the horizon moves on.)
//! 5. An event stamped more than [`MAX_CLOCK_SKEW`] in the future is refused: it would hold its
//!    place past every horizon, and a few of them would fill the window for good.
//!
//! So every event is handled at most once, and exactly once when it arrives at or after the
//! horizon, which trails the newest polled event by the poll's look-back (a minute). What is
//! refused is an event more than a minute older than everything the poll has already seen:
//! the same events the poll's look-back already gives up on.
//!
//! How the window survives a restart without being rewritten on every turn is the business of
//! [`super::state`]: ids are journaled before their events are acted on.
//!
//! The receiver consults the window under a lock on every delivery, so each operation is
//! O(log n) at worst: a hash set for membership, and ids bucketed by timestamp so that
//! forgetting a stretch of time is one pop per bucket.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

/// The longest id taken. E2B's event ids are UUIDs (36 bytes); anything far longer is not one.
pub(crate) const MAX_ID_LEN: usize = 128;

/// How far in the future an event's timestamp may be (clock skew between E2B and the agent).
pub(crate) const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// The most ids the set is sized for up front; past it, it grows as needed.
const PRESIZE_MAX: usize = 1 << 20;

/// What remembering one id costs beyond its bytes: the set's slot, the bucket's slot, the `Arc`
/// header. An estimate, so that the byte bound follows memory rather than id length alone.
const ENTRY_OVERHEAD: usize = 64;

/// Bounds of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Ids at most.
    pub(crate) ids: usize,
    /// Bytes at most (ids plus [`ENTRY_OVERHEAD`] each).
    pub(crate) bytes: usize,
}

impl Limits {
    /// `ids` ids, and as many bytes as that many ids of the longest length take.
    pub(crate) fn ids(ids: usize) -> Limits {
        let ids = ids.max(1);
        Limits {
            ids,
            bytes: ids.saturating_mul(MAX_ID_LEN + ENTRY_OVERHEAD),
        }
    }
}

impl Default for Limits {
    /// 100,000 ids, at most 16 MiB.
    fn default() -> Self {
        Limits {
            ids: 100_000,
            bytes: 16 << 20,
        }
    }
}

/// What the window says about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not seen: take it.
    New,
    /// Already taken.
    Duplicate,
    /// Older than the horizon: refused whatever the window holds (invariant 2).
    Stale,
    /// Stamped beyond [`MAX_CLOCK_SKEW`] in the future.
    Future,
    /// The window is full of ids still inside the horizon: ask for a retry (invariant 4).
    Full,
    /// Empty, longer than [`MAX_ID_LEN`], or not printable ASCII without spaces.
    BadId,
}

/// True when `id` can be an event id: 1 to [`MAX_ID_LEN`] bytes of printable ASCII, no spaces.
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Ids taken, with their event times, after the horizon.
#[derive(Debug, Clone)]
pub struct Dedup {
    limits: Limits,
    set: HashSet<Arc<str>>,
    /// Ids by event time in milliseconds, to forget whole stretches of time at once.
    by_time: BTreeMap<i64, Vec<Arc<str>>>,
    bytes: usize,
    horizon: Option<DateTime<Utc>>,
}

fn cost(id: &str) -> usize {
    id.len() + ENTRY_OVERHEAD
}

impl Dedup {
    /// A window of `capacity` ids (and the bytes that many of the longest ids take).
    pub fn new(capacity: usize) -> Self {
        Dedup::with_limits(Limits::ids(capacity))
    }

    pub(crate) fn with_limits(limits: Limits) -> Self {
        Dedup {
            limits: Limits {
                ids: limits.ids.max(1),
                bytes: limits.bytes.max(1),
            },
            // Sized up front (up to a million ids) so that the receiver, which inserts under
            // the lock, never waits for the whole set to be rehashed.
            set: HashSet::with_capacity(limits.ids.clamp(1, PRESIZE_MAX)),
            by_time: BTreeMap::new(),
            bytes: 0,
            horizon: None,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The oldest event time still taken; None before the first poll.
    pub(crate) fn horizon(&self) -> Option<DateTime<Utc>> {
        self.horizon
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Bytes the window accounts for (ids plus a fixed overhead each).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// What a webhook delivery of event `id` stamped `at` would be, at `now`. Changes nothing:
    /// the receiver remembers the id only once the event is queued.
    pub(crate) fn check_delivery(
        &self,
        id: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Verdict {
        match self.check(id, at, now) {
            Verdict::New if self.is_full_for(id) => Verdict::Full,
            v => v,
        }
    }

    /// Takes a webhook delivery the receiver has queued (after [`Dedup::check_delivery`] said
    /// [`Verdict::New`] under the same lock).
    pub(crate) fn remember(&mut self, id: &str, at: DateTime<Utc>) {
        if self.set.contains(id) {
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.bytes = self.bytes.saturating_add(cost(&id));
        self.by_time
            .entry(at.timestamp_millis())
            .or_default()
            .push(id.clone());
        self.set.insert(id);
    }

    /// Takes an event from the events poll: true when it is new and is now remembered. Never
    /// refuses for lack of room (invariant 4).
    pub(crate) fn record_polled(
        &mut self,
        id: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        match self.check(id, at, now) {
            Verdict::New => {
                self.remember(id, at);
                true
            }
            Verdict::Duplicate => false,
            v => {
                let shown: String = id.chars().take(MAX_ID_LEN).collect();
                tracing::warn!(event = %shown.escape_debug(), at = %at, verdict = ?v, "polled event refused");
                false
            }
        }
    }

    /// Moves the horizon forward to `to` (never back) and forgets every id older than it.
    pub fn advance_horizon(&mut self, to: DateTime<Utc>) {
        if self.horizon.is_some_and(|h| h >= to) {
            return;
        }
        self.horizon = Some(to);
        let keep = self.by_time.split_off(&to.timestamp_millis());
        let gone = std::mem::replace(&mut self.by_time, keep);
        for id in gone.into_values().flatten() {
            self.bytes = self.bytes.saturating_sub(cost(&id));
            self.set.remove(&id);
        }
    }

    /// Every id with its event time, oldest first: what the state journal writes when it
    /// compacts.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (i64, &str)> {
        self.by_time
            .iter()
            .flat_map(|(t, ids)| ids.iter().map(move |id| (*t, &**id)))
    }

    fn check(&self, id: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
        if !valid_id(id) {
            Verdict::BadId
        } else if self.set.contains(id) {
            Verdict::Duplicate
        } else if self.horizon.is_some_and(|h| at < h) {
            Verdict::Stale
        } else if now
            .checked_add_signed(MAX_CLOCK_SKEW)
            .is_some_and(|l| at > l)
        {
            Verdict::Future
        } else {
            Verdict::New
        }
    }

    fn is_full_for(&self, id: &str) -> bool {
        self.set.len() >= self.limits.ids || self.bytes.saturating_add(cost(id)) > self.limits.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
    }

    #[test]
    fn a_full_window_refuses_deliveries_instead_of_forgetting_live_ids() {
        let mut d = Dedup::new(2);
        let now = t(100);
        for id in ["a", "b"] {
            assert_eq!(d.check_delivery(id, t(90), now), Verdict::New);
            d.remember(id, t(90));
        }
        assert_eq!(d.check_delivery("a", t(90), now), Verdict::Duplicate);
        assert_eq!(
            d.check_delivery("c", t(95), now),
            Verdict::Full,
            "no live id is evicted to make room"
        );
        assert!(d.contains("a") && d.contains("b"));
        // The poll's ids are always taken.
        assert!(d.record_polled("p", t(91), now));
        assert!(!d.record_polled("p", t(91), now));
        // Once the horizon passes them, room is made, and the forgotten stay refused.
        d.advance_horizon(t(91));
        assert_eq!(d.len(), 1);
        assert_eq!(d.check_delivery("a", t(90), now), Verdict::Stale);
        assert_eq!(d.check_delivery("c", t(95), now), Verdict::New);
    }

    #[test]
    fn many_deliveries_in_between_never_let_an_event_through_twice() {
        // The failure of a count-only window: a real event, then 64,000 others, then the poll
        // returns the real event again. Here the window never forgets an id inside the horizon,
        // so the flood is refused (503) once full and the real event stays known.
        let mut d = Dedup::new(1000);
        let now = t(60);
        assert!(d.record_polled("real", t(50), now));
        let mut refused = 0;
        for i in 0..64_000 {
            let id = format!("flood-{i}");
            match d.check_delivery(&id, t(55), now) {
                Verdict::New => d.remember(&id, t(55)),
                Verdict::Full => refused += 1,
                v => panic!("{v:?}"),
            }
        }
        assert!(refused > 60_000);
        assert!(!d.record_polled("real", t(50), now), "handled once");
        d.advance_horizon(t(51));
        assert!(!d.record_polled("real", t(50), now), "stale, still once");
    }

    #[test]
    fn ids_are_bounded_in_length_and_bytes() {
        let now = t(0);
        let mut d = Dedup::with_limits(Limits {
            ids: 1000,
            bytes: 3 * (10 + ENTRY_OVERHEAD),
        });
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(d.check_delivery(&long, now, now), Verdict::BadId);
        assert!(!d.record_polled(&long, now, now));
        for bad in ["", "a b", "a\nb", "é"] {
            assert_eq!(d.check_delivery(bad, now, now), Verdict::BadId, "{bad:?}");
        }
        for i in 0..3 {
            d.remember(&format!("{i:010}"), now);
        }
        assert_eq!(d.bytes(), 3 * (10 + ENTRY_OVERHEAD));
        assert_eq!(d.check_delivery("0000000009", now, now), Verdict::Full);
    }

    #[test]
    fn events_from_the_far_future_are_refused() {
        let d = Dedup::new(10);
        let now = t(0);
        assert_eq!(d.check_delivery("a", t(299), now), Verdict::New);
        assert_eq!(d.check_delivery("a", t(301), now), Verdict::Future);
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(d.check_delivery("a", far, now), Verdict::Future);
        assert_eq!(
            d.check_delivery("a", DateTime::<Utc>::MIN_UTC, far),
            Verdict::New
        );
    }

    #[test]
    fn the_horizon_never_moves_back() {
        let mut d = Dedup::new(10);
        d.remember("a", t(10));
        d.advance_horizon(t(20));
        d.advance_horizon(t(5));
        assert_eq!(d.horizon(), Some(t(20)));
        assert!(d.is_empty() && d.bytes() == 0);
        assert_eq!(d.check_delivery("a", t(10), t(30)), Verdict::Stale);
    }
}
