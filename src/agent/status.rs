//! What the agent shows about itself ([`Status`], read by the HTTP API and `/metrics`) and the
//! one path that writes it ([`Publisher`], owned by the loop in [`super::run`]).
//!
//! A tick and a webhook reaction publish through the same [`Publisher::turn`]: the engine's
//! state, the creates in flight and the actions whose outcome the turn learnt. A tick also
//! publishes its observation (readiness, counted ticks, the pools as observed) and how long it
//! took; a reload publishes its outcome and the pools in dry run.
//!
//! Decisions are the one thing published as they happen rather than per turn: the agent
//! writes each into its [`Agent::recent`] as it logs it (and rewrites a create's entry when
//! its creates return), and [`Status::recent`] is that same buffer, shared, so
//! `GET /api/v1/decisions` reads what the decision log says.
//!
//! Every published turn also bumps [`Status::turns`], the change signal the status page's
//! stream (`GET /api/v1/stream`) waits on, and a tick publishes the members it observed
//! ([`Status::members`]) for the page's members table. At shutdown [`Publisher::closing`]
//! says so on the same signal, so open streams end.
//!
//! Nothing but [`Publisher`] writes a [`Status`]; readers take each lock only to copy out.

use crate::sync::lock;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::control::{Agent, LoggedDecision, TickReport};
use super::health::Health;
use super::leader::Role;
use crate::engine::{EngineState, ObservedSandbox};
use crate::rules::RuleSet;

/// What the server shows, published by the loop after each turn.
pub(crate) struct Status {
    /// Whether E2B can be seen: `/readyz` and `poolpilot_up`.
    pub(crate) health: Mutex<Health>,
    /// The whole agent runs in dry run.
    pub(crate) dry_run: AtomicBool,
    /// Pools with their own `dry_run: true`.
    pub(crate) dry_run_pools: Mutex<BTreeSet<String>>,
    pub(crate) ticks: AtomicU64,
    pub(crate) tick_failures: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    /// The last rule reload error, as `file:line:col: message` lines.
    pub(crate) last_reload_error: Mutex<Option<String>>,
    pub(crate) engine: Mutex<EngineState>,
    /// Running members per pool, as last observed.
    pub(crate) actual: Mutex<BTreeMap<String, u32>>,
    pub(crate) pending: Mutex<BTreeMap<String, u32>>,
    /// Actions by kind and outcome.
    pub(crate) actions: Mutex<BTreeMap<(String, String), u64>>,
    /// How long each tick took: `poolpilot_loop_turn_duration_seconds`.
    pub(crate) turn_durations: Mutex<crate::agent::histogram::Histogram>,
    /// The agent's newest decisions: the same buffer as its [`Agent::recent`].
    pub(crate) recent: Arc<Mutex<VecDeque<LoggedDecision>>>,
    /// With a PostgreSQL store: this replica's role (None for a single agent).
    pub(crate) role: Mutex<Option<Role>>,
    /// The sandboxes the last good tick observed, for the status page's members table.
    pub(crate) members: Mutex<Vec<ObservedSandbox>>,
    /// Bumped on every published turn, closed at shutdown: what live views wait on.
    pub(crate) turns: tokio::sync::watch::Sender<Turns>,
    /// Live views (`GET /api/v1/stream`) open now, to bound them.
    pub(crate) streams: AtomicUsize,
}

/// The change signal of [`Status::turns`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Turns {
    /// How many turns were published.
    pub(crate) count: u64,
    /// The agent is shutting down: live views should end.
    pub(crate) closing: bool,
}

impl Status {
    /// The status of an agent that has not turned yet; `recent` is the agent's own
    /// [`Agent::recent`].
    pub(crate) fn new(
        health: Health,
        dry_run: bool,
        recent: Arc<Mutex<VecDeque<LoggedDecision>>>,
    ) -> Status {
        Status {
            health: Mutex::new(health),
            dry_run: AtomicBool::new(dry_run),
            dry_run_pools: Mutex::default(),
            ticks: AtomicU64::new(0),
            tick_failures: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            engine: Mutex::default(),
            actual: Mutex::default(),
            pending: Mutex::default(),
            actions: Mutex::default(),
            turn_durations: Mutex::default(),
            recent,
            role: Mutex::new(None),
            members: Mutex::default(),
            turns: tokio::sync::watch::Sender::new(Turns::default()),
            streams: AtomicUsize::new(0),
        }
    }
}

/// The loop's side of a [`Status`]: the one writer, with what it remembers between turns to
/// say things once (readiness changing, the first good poll).
pub(crate) struct Publisher {
    status: Arc<Status>,
    /// Whether the last observation left the agent ready.
    seeing: bool,
    /// Whether systemd was told the agent is ready (after the first good poll).
    announced: bool,
}

impl Publisher {
    pub(crate) fn new(status: Arc<Status>) -> Publisher {
        Publisher {
            status,
            seeing: false,
            announced: false,
        }
    }

    /// Publishes a tick that began at `at` and took `took`: its observation, then the turn.
    pub(crate) fn tick(
        &mut self,
        agent: &Agent,
        report: &TickReport,
        took: Duration,
        at: DateTime<Utc>,
    ) {
        lock(&self.status.turn_durations).observe(took);
        self.observation(report.error.as_deref(), at);
        if report.error.is_none() {
            if !self.announced {
                self.announced = true;
                super::systemd::ready(&format!(
                    "first poll done: {} sandboxes observed",
                    report.observed
                ));
            }
            *lock(&self.status.actual) = report.actual.clone();
            *lock(&self.status.members) = agent.last_observed().to_vec();
        }
        self.turn(agent, Some(report));
    }

    /// Publishes what any turn (a tick, a webhook reaction) left: the engine's state, the
    /// creates in flight, and the actions whose outcome it learnt (none when it was cut off).
    pub(crate) fn turn(&self, agent: &Agent, report: Option<&TickReport>) {
        *lock(&self.status.engine) = agent.engine().state().clone();
        *lock(&self.status.pending) = agent.pending();
        if let Some(report) = report {
            self.count_actions(report);
        }
        self.status.turns.send_modify(|t| t.count += 1);
    }

    /// Tells live views the agent is shutting down, so that they end.
    pub(crate) fn closing(&self) {
        self.status.turns.send_modify(|t| t.closing = true);
    }

    /// Counts the actions whose outcome a turn learnt, by kind and result.
    fn count_actions(&self, report: &TickReport) {
        let mut actions = lock(&self.status.actions);
        for (kind, result) in &report.actions {
            *actions
                .entry((kind.to_string(), result.as_str().to_string()))
                .or_default() += 1;
        }
    }

    /// Counts a tick's observation and feeds readiness; says so in the log and to systemd when
    /// the agent stops, or starts again, seeing E2B.
    fn observation(&mut self, error: Option<&str>, at: DateTime<Utc>) {
        let status = &self.status;
        let readiness = {
            let mut health = lock(&status.health);
            match error {
                Some(e) => {
                    status.tick_failures.fetch_add(1, Ordering::Relaxed);
                    health.failed(e);
                }
                None => {
                    status.ticks.fetch_add(1, Ordering::Relaxed);
                    health.observed(at);
                }
            }
            health.readiness(at)
        };
        if readiness.ready != self.seeing {
            self.seeing = readiness.ready;
            if readiness.ready {
                tracing::info!("{}; ready", readiness.reason);
            } else {
                tracing::error!("{}; not ready", readiness.reason);
            }
            super::systemd::status(&readiness.reason);
        }
    }

    /// Publishes this replica's role among replicas sharing a store.
    pub(crate) fn role(&self, role: &Role) {
        *lock(&self.status.role) = Some(role.clone());
    }

    /// Tells the metrics which pools have their own `dry_run: true`.
    pub(crate) fn dry_run_pools(&self, rules: &RuleSet) {
        *lock(&self.status.dry_run_pools) = rules
            .pools
            .iter()
            .filter(|p| p.dry_run)
            .map(|p| p.name.clone())
            .collect();
    }

    /// Publishes a reload that took `rules`.
    pub(crate) fn reloaded(&self, rules: &RuleSet) {
        self.dry_run_pools(rules);
        self.status.reloads.fetch_add(1, Ordering::Relaxed);
        *lock(&self.status.last_reload_error) = None;
    }

    /// Publishes a reload that failed with `error` (`file:line:col: message` lines).
    pub(crate) fn reload_failed(&self, error: String) {
        self.status.reload_failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.status.last_reload_error) = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::run::{TURN_DEADLINE, cut_off};

    #[test]
    fn a_cut_off_turn_and_a_failed_poll_count_against_readiness() {
        let health = Health::new(Duration::from_secs(5), TURN_DEADLINE);
        let status = Arc::new(Status::new(health, false, Arc::default()));
        let mut publisher = Publisher::new(status.clone());
        let t0 = Utc::now();
        publisher.observation(None, t0);
        assert!(publisher.seeing);
        for _ in 0..2 {
            publisher.observation(cut_off().error.as_deref(), t0);
        }
        assert!(publisher.seeing, "two failures are a blip");
        publisher.observation(Some("HTTP 503"), t0);
        assert!(!publisher.seeing);
        assert_eq!(status.tick_failures.load(Ordering::Relaxed), 3);
        assert_eq!(status.ticks.load(Ordering::Relaxed), 1);
        let r = lock(&status.health).readiness(t0);
        assert!(r.reason.contains("HTTP 503"), "{r:?}");
    }
}
