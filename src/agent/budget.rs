//! The team's budget: what every pool's creates (and the claims code's resumes) share, and
//! the circuit breaker that stops one pool's creates after repeated failures.
//!
//! - **Concurrency.** E2B caps the sandboxes a team runs at once (20 on Hobby, 100 on Pro)
//!   and answers a create or resume past it with a 429. The budget counts the team's running
//!   sandboxes as last observed (every pool's and unowned ones), the creates in flight (the
//!   [`Creates`] ledger, which holds a create until an observation shows it) and the resumes
//!   holding a [`Permit`]; a create or resume that would take the count past the cap is
//!   refused before it is sent. The create *rate* is not kept here: the one E2B client the
//!   agent has paces every create of every pool (`api.create_rate`).
//! - **Circuit breaker.** After [`FAILURES_TO_OPEN`] creates of a pool fail in a row (each
//!   create counts once, after the client's own retries), the pool's creates stop for a
//!   backoff: [`FIRST_BACKOFF`], doubling on each failed probe up to [`MAX_BACKOFF`]. After
//!   the backoff one create goes out as a probe (half-open); its success closes the breaker,
//!   its failure opens it again for the next backoff. Any create of the pool that succeeds
//!   closes it and resets the backoff. Opening and closing are [`Change`]s, which the caller
//!   announces (see `act::announce_breakers`) as the `PoolCreatesFailing` alert.
//!
//! Time comes in as `now`; nothing here reads a clock or calls E2B. The lock is taken for a
//! few map operations and never held across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::creates::Creates;
use crate::e2b::SandboxState;
use crate::engine::ObservedSandbox;
use crate::engine::time::after;
use crate::sync::lock;

/// Consecutive failed creates that open a pool's breaker.
pub(crate) const FAILURES_TO_OPEN: u32 = 5;
/// How long the breaker stays open the first time.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// The longest it stays open, however often the probe fails.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The alert a breaker raises while open.
pub const BREAKER_ALERT: &str = "PoolCreatesFailing";

/// Why a create or resume was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The team is at its concurrent-sandbox cap.
    Cap { cap: u32 },
    /// The pool's breaker is open until `until` (or its one probe is out).
    Open { failures: u32, until: DateTime<Utc> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Cap { cap } => write!(f, "refused: team at its concurrency cap {cap}"),
            Refusal::Open { failures, until } => write!(
                f,
                "refused: circuit open after {failures} failures until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

/// A breaker opening or closing, to be announced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Opened {
        pool: String,
        failures: u32,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    Closed {
        pool: String,
        since: DateTime<Utc>,
    },
}

/// One pool's breaker.
#[derive(Debug, Default)]
struct Breaker {
    /// Creates failed in a row since the last success.
    failures: u32,
    /// Every failed create, for `poolpilot_create_failures_total`.
    failed_total: u64,
    /// Set while open: since when, and until when no create goes out.
    open: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Times opened since the last success: the backoff doubles with each.
    opened: u32,
    /// The Idempotency-Key of the half-open probe in flight.
    probe: Option<String>,
    /// The probe failed: open again at the next `now`.
    probe_failed: bool,
}

impl Breaker {
    fn backoff(&self) -> Duration {
        let doubled = FIRST_BACKOFF.saturating_mul(1u32 << self.opened.min(10));
        doubled.min(MAX_BACKOFF)
    }

    /// Opens (or re-opens after a failed probe) when it should by `now`.
    fn step(&mut self, pool: &str, now: DateTime<Utc>, changes: &mut Vec<Change>) {
        let reopen = self.open.is_some() && self.probe_failed;
        let trip = self.open.is_none() && self.failures >= FAILURES_TO_OPEN;
        if !(reopen || trip) {
            return;
        }
        let until = after(now, self.backoff());
        self.opened = self.opened.saturating_add(1);
        self.probe_failed = false;
        let since = self.open.map_or(now, |(since, _)| since);
        self.open = Some((since, until));
        if trip {
            changes.push(Change::Opened {
                pool: pool.to_string(),
                failures: self.failures,
                since,
                until,
            });
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Running sandboxes of the team in the last observation.
    running: u32,
    /// Resumes holding a permit.
    resuming: u32,
    /// Resumes that returned since the last observation, which may not show them yet.
    resumed: u32,
    pools: BTreeMap<String, Breaker>,
    changes: Vec<Change>,
}

/// The budget every pool shares. Clone the `Arc` to hand it to the claims code.
#[derive(Debug)]
pub struct Budget {
    /// The team's concurrent-sandbox cap; None = no cap.
    cap: Mutex<Option<u32>>,
    creates: Arc<Creates>,
    state: Mutex<State>,
}

/// What `/metrics` shows of the budget.
#[derive(Debug, Clone, Default)]
pub(crate) struct BudgetReport {
    pub(crate) cap: Option<u32>,
    /// Running as observed, creates in flight, resumes in flight.
    pub(crate) running: u32,
    pub(crate) creating: u32,
    pub(crate) resuming: u32,
    /// Per pool: whether its breaker is open, and its failed creates so far.
    pub(crate) pools: BTreeMap<String, (bool, u64)>,
}

/// What [`Budget::admit_creates`] allowed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Admitted {
    /// Creates that may be sent now.
    pub(crate) count: u32,
    /// Why the rest may not, when there is a rest.
    pub(crate) refusal: Option<Refusal>,
    /// The one create admitted is the half-open probe.
    pub(crate) probe: bool,
}

/// A resume's hold on the team's concurrency: taken before the resume is sent, dropped when
/// it returns. The resumed sandbox then counts until the next observation.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
    count: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = lock(&self.budget.state);
        s.resuming = s.resuming.saturating_sub(self.count);
        s.resumed = s.resumed.saturating_add(self.count);
    }
}

impl Budget {
    /// A budget with no cap over the creates in `creates`.
    pub(crate) fn new(creates: Arc<Creates>) -> Budget {
        Budget {
            cap: Mutex::new(None),
            creates,
            state: Mutex::default(),
        }
    }

    /// Sets the team's cap (`api.max_concurrent`); None removes it.
    pub fn set_cap(&self, cap: Option<u32>) {
        *lock(&self.cap) = cap;
    }

    /// Takes the team's running count from an observation (of the whole team).
    pub(crate) fn observed(&self, sandboxes: &[ObservedSandbox]) {
        let running = sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Running)
            .count();
        let mut s = lock(&self.state);
        s.running = u32::try_from(running).unwrap_or(u32::MAX);
        s.resumed = 0;
    }

    /// Sandboxes counted against the cap now.
    fn used(&self, s: &State) -> u32 {
        let creating: u32 = self.creates.per_pool().values().sum();
        s.running
            .saturating_add(creating)
            .saturating_add(s.resuming)
            .saturating_add(s.resumed)
    }

    /// How many of `n` new sandboxes fit under the cap now.
    fn room(&self, s: &State, n: u32) -> u32 {
        match *lock(&self.cap) {
            Some(cap) => n.min(cap.saturating_sub(self.used(s))),
            None => n,
        }
    }

    /// Takes room for `n` resumes, or refuses when the team is at its cap. The claims code
    /// holds the permit while its resume is in flight.
    pub fn try_take_concurrency(self: &Arc<Self>, n: u32) -> Result<Permit, Refusal> {
        let mut s = lock(&self.state);
        if self.room(&s, n) < n {
            let cap = lock(&self.cap).unwrap_or(u32::MAX);
            return Err(Refusal::Cap { cap });
        }
        s.resuming = s.resuming.saturating_add(n);
        Ok(Permit {
            budget: self.clone(),
            count: n,
        })
    }

    /// How many of `n` creates for `pool` may be sent at `now`: the pool's breaker first,
    /// then the team's cap. The caller puts each create it sends in the ledger (which the cap
    /// counts) before the next call, and names the probe with [`Budget::probing`] when this
    /// admitted one.
    pub(crate) fn admit_creates(&self, pool: &str, n: u32, now: DateTime<Utc>) -> Admitted {
        let mut s = lock(&self.state);
        let State { pools, changes, .. } = &mut *s;
        let b = pools.entry(pool.to_string()).or_default();
        b.step(pool, now, changes);
        let mut out = Admitted {
            count: n,
            refusal: None,
            probe: false,
        };
        if let Some((_, until)) = b.open {
            let open = Refusal::Open {
                failures: b.failures,
                until,
            };
            if now < until || b.probe.is_some() {
                out.count = 0;
                out.refusal = Some(open);
                return out;
            }
            out.count = n.min(1);
            out.probe = true;
            out.refusal = (n > 1).then_some(open);
        }
        let room = self.room(&s, out.count);
        if room < out.count {
            let cap = lock(&self.cap).unwrap_or(u32::MAX);
            out.refusal = Some(Refusal::Cap { cap });
            out.count = room;
            out.probe &= room > 0;
        }
        out
    }

    /// Names the half-open probe just sent for `pool`.
    pub(crate) fn probing(&self, pool: &str, key: &str) {
        if let Some(b) = lock(&self.state).pools.get_mut(pool) {
            b.probe = Some(key.to_string());
        }
    }

    /// Records a create of `pool` (Idempotency-Key `key`) that succeeded: the breaker closes.
    pub(crate) fn create_succeeded(&self, pool: &str, _key: &str) {
        let mut s = lock(&self.state);
        let State { pools, changes, .. } = &mut *s;
        let b = pools.entry(pool.to_string()).or_default();
        if let Some((since, _)) = b.open.take() {
            changes.push(Change::Closed {
                pool: pool.to_string(),
                since,
            });
        }
        b.failures = 0;
        b.opened = 0;
        b.probe = None;
        b.probe_failed = false;
    }

    /// Records a create of `pool` that failed (after the client's retries): one more in a
    /// row; a failed probe opens the breaker again at the next `now`.
    pub(crate) fn create_failed(&self, pool: &str, key: &str) {
        let mut s = lock(&self.state);
        let b = s.pools.entry(pool.to_string()).or_default();
        b.failures = b.failures.saturating_add(1);
        b.failed_total = b.failed_total.saturating_add(1);
        if b.probe.as_deref() == Some(key) {
            b.probe = None;
            b.probe_failed = true;
        }
    }

    /// Brings every breaker to `now` and returns the changes not yet announced.
    pub(crate) fn changes(&self, now: DateTime<Utc>) -> Vec<Change> {
        let mut s = lock(&self.state);
        let State { pools, changes, .. } = &mut *s;
        for (name, b) in pools.iter_mut() {
            b.step(name, now, changes);
        }
        std::mem::take(changes)
    }

    pub(crate) fn report(&self) -> BudgetReport {
        let s = lock(&self.state);
        BudgetReport {
            cap: *lock(&self.cap),
            running: s.running,
            creating: self.creates.per_pool().values().sum(),
            resuming: s.resuming.saturating_add(s.resumed),
            pools: s
                .pools
                .iter()
                .map(|(k, b)| (k.clone(), (b.open.is_some(), b.failed_total)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_000_000 + s)
    }

    fn running(n: usize) -> Vec<ObservedSandbox> {
        (0..n)
            .map(|i| ObservedSandbox {
                id: format!("s{i}"),
                template: "base".into(),
                started_at: t(0),
                end_at: t(300),
                state: SandboxState::Running,
                metadata: Default::default(),
                metric: None,
            })
            .collect()
    }

    fn budget(cap: Option<u32>) -> (Arc<Budget>, Arc<Creates>) {
        let creates = Arc::new(Creates::default());
        let b = Arc::new(Budget::new(creates.clone()));
        b.set_cap(cap);
        (b, creates)
    }

    #[test]
    fn creates_and_resumes_share_the_cap_with_every_running_sandbox() {
        let (b, creates) = budget(Some(10));
        b.observed(&running(6));
        creates.sent("a", "k1");
        creates.sent("b", "k2");
        assert_eq!(b.admit_creates("a", 5, t(0)).count, 2);
        let permit = b.try_take_concurrency(2).unwrap();
        let a = b.admit_creates("b", 1, t(0));
        assert_eq!((a.count, a.refusal), (0, Some(Refusal::Cap { cap: 10 })));
        assert_eq!(
            b.try_take_concurrency(1).unwrap_err().to_string(),
            "refused: team at its concurrency cap 10"
        );
        drop(permit);
        assert_eq!(
            b.admit_creates("b", 1, t(0)).count,
            0,
            "resumed, not yet observed"
        );
        b.observed(&running(6));
        assert_eq!(b.admit_creates("b", 1, t(0)).count, 1);
    }

    #[test]
    fn no_cap_admits_everything() {
        let (b, _) = budget(None);
        b.observed(&running(10_000));
        let a = b.admit_creates("a", 50, t(0));
        assert_eq!((a.count, a.refusal, a.probe), (50, None, false));
    }

    #[test]
    fn the_breaker_opens_after_k_failures_probes_after_the_backoff_and_doubles() {
        let (b, _) = budget(None);
        for i in 0..FAILURES_TO_OPEN {
            assert_eq!(b.admit_creates("a", 1, t(0)).count, 1, "closed before {i}");
            b.create_failed("a", &format!("k{i}"));
        }
        let opened = b.changes(t(1));
        assert!(
            matches!(&opened[..], [Change::Opened { failures: 5, until, .. }] if *until == t(31))
        );
        let a = b.admit_creates("a", 3, t(10));
        assert_eq!(a.count, 0);
        assert_eq!(
            a.refusal.unwrap().to_string(),
            "refused: circuit open after 5 failures until 1970-01-12T13:47:11Z"
        );
        // Half-open: one probe, then nothing while it is out.
        let a = b.admit_creates("a", 3, t(31));
        assert_eq!((a.count, a.probe), (1, true));
        assert!(a.refusal.is_some(), "the other two are refused");
        b.probing("a", "p1");
        assert_eq!(b.admit_creates("a", 1, t(32)).count, 0, "the probe is out");
        b.create_failed("a", "p1");
        assert!(b.changes(t(40)).is_empty(), "still firing: no new notice");
        assert_eq!(b.admit_creates("a", 1, t(99)).count, 0, "60 s now");
        assert_eq!(b.admit_creates("a", 1, t(100)).count, 1);
        b.probing("a", "p2");
        b.create_succeeded("a", "p2");
        assert!(matches!(&b.changes(t(101))[..], [Change::Closed { since, .. }] if *since == t(1)));
        let a = b.admit_creates("a", 4, t(101));
        assert_eq!((a.count, a.refusal), (4, None));
        assert_eq!(b.report().pools["a"], (false, 6));
    }

    #[test]
    fn a_success_resets_the_count_and_the_backoff_caps() {
        let (b, _) = budget(None);
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.create_failed("a", "k");
        }
        b.create_succeeded("a", "k");
        b.create_failed("a", "k");
        assert!(b.changes(t(0)).is_empty());
        let mut br = Breaker {
            opened: 40,
            ..Breaker::default()
        };
        assert_eq!(br.backoff(), MAX_BACKOFF);
        br.opened = 0;
        assert_eq!(br.backoff(), FIRST_BACKOFF);
    }
}
