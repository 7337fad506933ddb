//! Creates in flight: every create the agent has sent and not yet seen in an observation.
//!
//! A pool's size is its observed members plus the creates in this ledger, never a stale list
//! alone. A create leaves the ledger only when that stops being true:
//! - an observation shows its sandbox (matched by the Idempotency-Key the agent writes into
//!   the sandbox's metadata, or by the id E2B answered with): it is now counted as a member;
//! - E2B refused it for certain (a 4xx other than a timeout): nothing was created;
//! - it was created, and an observation that *started after* the create returned does not
//!   show it: it died before anyone saw it (a crash, a kill), so it is not a member either;
//! - its outcome is unknown (a 5xx, a transport error: E2B may have created it) and
//!   [`UNKNOWN_GRACE`] observations went by without it.
//!
//! The ledger is shared between the control loop and the tasks that send creates, so every
//! method takes the lock for a few map operations only and never awaits.
//!
//! Epochs order a create's return against an observation's start without reading a clock:
//! [`Creates::observation_started`] bumps the epoch before the list call is sent, and a
//! create records the epoch it returned in. A create that returned in epoch `e` finished
//! before an observation of epoch `E > e` began, so that observation must show it if it is
//! alive.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::e2b::Error;
use crate::engine::ObservedSandbox;

/// Metadata key under which each create carries its Idempotency-Key, so an observation can
/// match a sandbox to the create that made it even when the create's answer was lost.
pub(crate) const CREATE_KEY: &str = "poolpilot_create";

/// Observations an ambiguous create stays counted for before it is given up.
pub(crate) const UNKNOWN_GRACE: u64 = 3;

/// Creates in flight taken back from saved state at most: more than every pool's max together
/// can only come from a damaged file.
pub(crate) const MAX_RESTORED: usize = 10_000;

/// Where one create stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Status {
    /// Sent, no answer yet.
    Sending,
    /// E2B answered with this sandbox, in epoch `epoch`.
    Created { sandbox_id: String, epoch: u64 },
    /// The answer was lost or ambiguous, in epoch `epoch`: it may exist.
    Unknown { epoch: u64 },
}

/// One create in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InFlight {
    pub(crate) pool: String,
    /// The Idempotency-Key, also written into the sandbox's metadata under [`CREATE_KEY`].
    pub(crate) key: String,
    #[serde(flatten)]
    status: Status,
}

#[derive(Debug, Default)]
struct Ledger {
    epoch: u64,
    /// By Idempotency-Key.
    entries: BTreeMap<String, InFlight>,
}

/// The shared ledger of creates in flight.
#[derive(Debug, Default)]
pub(crate) struct Creates {
    ledger: Mutex<Ledger>,
}

/// How a create ended, as far as the ledger is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Returned {
    Created(String),
    /// E2B surely created nothing.
    Refused,
    /// E2B may or may not have created it.
    Unknown,
}

impl Returned {
    /// Classifies a failed create: only an answer that says no for certain is a refusal.
    pub(crate) fn from_error(e: &Error) -> Returned {
        if matches!(e, Error::NotSent(_)) {
            return Returned::Refused;
        }
        match e.status() {
            Some(408) | Some(500..=599) | None => Returned::Unknown,
            Some(_) => Returned::Refused,
        }
    }
}

impl Creates {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a create about to be sent.
    pub(crate) fn sent(&self, pool: &str, key: &str) {
        self.ledger().entries.insert(
            key.to_string(),
            InFlight {
                pool: pool.to_string(),
                key: key.to_string(),
                status: Status::Sending,
            },
        );
    }

    /// Records a create's answer.
    pub(crate) fn returned(&self, key: &str, how: Returned) {
        let mut l = self.ledger();
        let epoch = l.epoch;
        match how {
            Returned::Refused => {
                l.entries.remove(key);
            }
            Returned::Created(sandbox_id) => {
                if let Some(e) = l.entries.get_mut(key) {
                    e.status = Status::Created { sandbox_id, epoch };
                }
            }
            Returned::Unknown => {
                if let Some(e) = l.entries.get_mut(key) {
                    e.status = Status::Unknown { epoch };
                }
            }
        }
    }

    /// Marks the start of an observation; call it before the list request is sent, and hand
    /// the returned epoch to [`Creates::observed`] with what that observation saw.
    pub(crate) fn observation_started(&self) -> u64 {
        let mut l = self.ledger();
        l.epoch += 1;
        l.epoch
    }

    /// Settles the ledger against an observation of epoch `epoch`: creates it shows are
    /// members now; creates it should show and does not are gone. Returns the keys given up
    /// (gone or unknown for too long), for the log.
    pub(crate) fn observed(&self, epoch: u64, sandboxes: &[ObservedSandbox]) -> Vec<InFlight> {
        let seen_keys: HashSet<&str> = sandboxes
            .iter()
            .filter_map(|s| s.metadata.get(CREATE_KEY).map(String::as_str))
            .collect();
        let seen_ids: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
        let mut l = self.ledger();
        let mut given_up = Vec::new();
        l.entries.retain(|key, e| {
            if seen_keys.contains(key.as_str()) {
                return false;
            }
            let keep = match &e.status {
                Status::Sending => true,
                Status::Created {
                    sandbox_id,
                    epoch: at,
                } => {
                    if seen_ids.contains(sandbox_id.as_str()) {
                        return false;
                    }
                    *at >= epoch
                }
                Status::Unknown { epoch: at } => at.saturating_add(UNKNOWN_GRACE) >= epoch,
            };
            if !keep {
                given_up.push(e.clone());
            }
            keep
        });
        given_up
    }

    /// Creates in flight per pool (sending, created but not yet observed, or unknown).
    pub(crate) fn per_pool(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for e in self.ledger().entries.values() {
            *out.entry(e.pool.clone()).or_default() += 1;
        }
        out
    }

    /// Every create in flight, for saving across a restart.
    pub(crate) fn snapshot(&self) -> Vec<InFlight> {
        self.ledger().entries.values().cloned().collect()
    }

    /// Takes back creates saved before a restart, at most [`MAX_RESTORED`] of them. One that
    /// had returned with its sandbox is settled by the first observation (shown: a member;
    /// not shown: it died meanwhile); one still being sent may yet be made, so it counts as
    /// unknown until an observation shows it or the grace runs out.
    pub(crate) fn restore(&self, saved: Vec<InFlight>) {
        let mut l = self.ledger();
        let epoch = l.epoch;
        if saved.len() > MAX_RESTORED {
            tracing::warn!(
                saved = saved.len(),
                kept = MAX_RESTORED,
                "more creates in flight were saved than any pool could have; keeping the newest"
            );
        }
        let skip = saved.len().saturating_sub(MAX_RESTORED);
        for mut e in saved.into_iter().skip(skip) {
            e.status = match e.status {
                Status::Created { sandbox_id, .. } => Status::Created { sandbox_id, epoch },
                Status::Sending | Status::Unknown { .. } => Status::Unknown { epoch },
            };
            l.entries.insert(e.key.clone(), e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2b::SandboxState;
    use chrono::Utc;

    fn sandbox(id: &str, key: Option<&str>) -> ObservedSandbox {
        let mut metadata = crate::e2b::Metadata::new();
        metadata.insert(crate::rules::POOL_KEY.into(), "w".into());
        if let Some(k) = key {
            metadata.insert(CREATE_KEY.into(), k.into());
        }
        ObservedSandbox {
            id: id.into(),
            template: "base".into(),
            started_at: Utc::now(),
            end_at: Utc::now(),
            state: SandboxState::Running,
            metadata,
            metric: None,
        }
    }

    #[test]
    fn a_create_counts_until_an_observation_shows_it() {
        let c = Creates::default();
        c.sent("w", "k1");
        let e = c.observation_started();
        assert!(c.observed(e, &[]).is_empty());
        assert_eq!(c.per_pool()["w"], 1, "still sending");
        c.returned("k1", Returned::Created("s1".into()));
        // An observation that started before the create returned may miss it.
        assert!(c.observed(e, &[]).is_empty());
        assert_eq!(c.per_pool()["w"], 1, "returned after the observation began");
        let e = c.observation_started();
        c.observed(e, &[sandbox("s1", Some("k1"))]);
        assert!(c.per_pool().is_empty(), "a member now, not pending");
    }

    #[test]
    fn a_created_sandbox_missing_from_a_later_observation_is_gone() {
        let c = Creates::default();
        c.sent("w", "k1");
        c.returned("k1", Returned::Created("s1".into()));
        let e = c.observation_started();
        let gone = c.observed(e, &[]);
        assert_eq!(gone.len(), 1);
        assert!(c.per_pool().is_empty());
    }

    #[test]
    fn a_refused_create_leaves_at_once_and_an_unknown_one_after_the_grace() {
        let c = Creates::default();
        c.sent("w", "k1");
        c.sent("w", "k2");
        c.returned("k1", Returned::Refused);
        c.returned("k2", Returned::Unknown);
        assert_eq!(c.per_pool()["w"], 1);
        for _ in 0..UNKNOWN_GRACE {
            let e = c.observation_started();
            c.observed(e, &[]);
            assert_eq!(c.per_pool()["w"], 1, "may still exist");
        }
        let e = c.observation_started();
        c.observed(e, &[]);
        assert!(c.per_pool().is_empty());
    }

    #[test]
    fn an_unknown_create_is_matched_by_its_key() {
        let c = Creates::default();
        c.sent("w", "k1");
        c.returned("k1", Returned::Unknown);
        let e = c.observation_started();
        c.observed(e, &[sandbox("s9", Some("k1"))]);
        assert!(c.per_pool().is_empty());
    }

    #[test]
    fn errors_are_classified_by_certainty() {
        let refused = Error::RateLimited {
            message: "x".into(),
            retry_after: None,
        };
        assert_eq!(Returned::from_error(&refused), Returned::Refused);
        let ambiguous = Error::Server {
            status: 503,
            message: "x".into(),
        };
        assert_eq!(Returned::from_error(&ambiguous), Returned::Unknown);
        assert_eq!(
            Returned::from_error(&Error::Transport("reset".into())),
            Returned::Unknown
        );
    }

    #[test]
    fn restored_creates_still_sending_count_as_unknown() {
        let c = Creates::default();
        c.sent("w", "k1");
        let saved = c.snapshot();
        let d = Creates::default();
        d.restore(saved);
        assert_eq!(d.per_pool()["w"], 1);
        let e = d.observation_started();
        d.observed(e, &[]);
        assert_eq!(d.per_pool()["w"], 1, "it may yet be made");
    }

    #[test]
    fn a_restored_create_that_had_returned_is_settled_by_the_first_observation() {
        // Found by trying it: a saved create whose sandbox died while the agent was down held
        // the pool below min for three observations after the restart.
        let c = Creates::default();
        c.sent("w", "k1");
        c.returned("k1", Returned::Created("s1".into()));
        let d = Creates::default();
        d.restore(c.snapshot());
        assert_eq!(d.per_pool()["w"], 1);
        let e = d.observation_started();
        d.observed(e, &[]);
        assert!(d.per_pool().is_empty(), "died while the agent was down");
    }

    #[test]
    fn restoring_is_bounded() {
        let c = Creates::default();
        for i in 0..MAX_RESTORED + 5 {
            c.sent("w", &format!("k{i}"));
        }
        let d = Creates::default();
        d.restore(c.snapshot());
        assert_eq!(d.per_pool()["w"] as usize, MAX_RESTORED);
    }
}
