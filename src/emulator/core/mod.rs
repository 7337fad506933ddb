//! The emulator's core: E2B's control plane as pure state in virtual time.
//!
//! It holds sandboxes, their metric samples, lifecycle events, webhooks, rate limits and the
//! load model, and moves only when told: `Core::advance_to` runs every scheduled thing
//! (boot, metric sample, expiry, scenario fault) up to a time, in order. It does no I/O and
//! reads no clock, so the HTTP server drives it from the wall clock, `simulate` and tests
//! drive it as fast as they like, and the same seed gives the same run.
//!
//! Load model: a template's demand (busy cores, from the scenario) is shared evenly by its
//! running sandboxes once they have booted; `cpuUsedPct = min(100, share / cpuCount * 100)`,
//! with seeded noise; memory and disk move with load. The core integrates sandbox-seconds
//! and unmet demand (core-seconds of demand above running capacity) exactly between events.
//!
//! Errors are [`Rejection`]s: an HTTP status and E2B's message.
//!
//! This file holds the [`Core`] type, its config, the clock and the scheduler. Each concern
//! adds its own `impl Core` block in its own file:
//!
//! - `load.rs`: demand curves, boots, metric samples and the integrals between events;
//! - `sandboxes.rs`: create, kill, pause, resume, timeouts: the lifecycle and its events;
//! - `queries.rs`: list with E2B's cursor, get, metrics, and the events API;
//! - `webhooks.rs`: webhook registrations and the outbox of deliveries;
//! - `quota.rs`: the create rate limit and the concurrency cap;
//! - `faults.rs`: API faults (injected or from the scenario) and scenario kills;
//! - `stats.rs`: the running totals and [`StatsReport`].
//!
//! It must never read a clock, do I/O, or draw randomness from anything but its seeded
//! `rng`, in an order that depends only on the calls made.

mod faults;
mod load;
pub(crate) use load::Curve;
mod queries;
mod quota;
mod sandboxes;
mod stats;
mod webhooks;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::scenario::{LatencySpec, Scenario};
use crate::e2b::{LifecycleEvent, NewSandbox};

pub(crate) use self::faults::ApiFault;
use self::faults::Faults;
use self::load::{Load, Template};
use self::quota::TokenBucket;
use self::sandboxes::{IdempotentCreate, Sandboxes};
use self::stats::Counters;
pub use self::stats::{StatsReport, TemplateReport, TemplateStats};
pub use self::webhooks::Delivery;
use self::webhooks::Webhooks;

/// The envd version the emulator reports: the lowest that raises no SDK warning.
pub(crate) const ENVD_VERSION: &str = "0.2.4";
/// Longest timeout E2B accepts (Pro): 24 hours.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 24 * 3600;

/// Settings of the emulated team and API.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    pub team_id: String,
    /// Time between two metric samples of a sandbox (E2B: 5 s).
    pub metrics_interval: Duration,
    /// Running sandboxes at most (E2B: 20 on Hobby, 100 on Pro).
    pub max_concurrent: usize,
    /// Creates per second (E2B: 1 on Hobby, 5 on Pro); bursts up to the same count.
    pub create_rate: f64,
    /// Webhooks the team may register.
    pub max_webhooks: usize,
    /// How long metric samples are kept per sandbox.
    pub metrics_retention: Duration,
    /// How long lifecycle events are kept (E2B: 7 days).
    pub event_retention: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            team_id: "00000000-0000-4000-8000-00000000e2b0".to_string(),
            metrics_interval: Duration::from_secs(5),
            max_concurrent: 100,
            create_rate: 5.0,
            max_webhooks: 10,
            metrics_retention: Duration::from_secs(3600),
            event_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// An API call the core refused: the HTTP status and E2B's message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    /// Retry-After seconds, for 429 and 503.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// `RateLimit-Limit`, `-Remaining`, `-Reset` of a rate-limit 429.
    #[serde(skip)]
    pub rate_limit: Option<(u64, u64, u64)>,
}

impl Rejection {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            retry_after: None,
            rate_limit: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub(crate) fn sandbox_not_found(id: &str) -> Self {
        Self::new(
            404,
            format!("Sandbox \"{id}\" doesn't exist or you don't have access to it"),
        )
    }
}

type Res<T> = Result<T, Rejection>;

/// Something that happens at a time. Sandboxes are named by their internal key; the
/// generation numbers say which run or end time the task was scheduled for, so a pause,
/// resume or new timeout makes older tasks no-ops instead of having to find and remove them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Boot { sbx: u64, run: u64 },
    Sample { sbx: u64, run: u64 },
    Expire { sbx: u64, timeout: u64 },
    Fault { index: usize },
}

/// The tasks to come, earliest first.
#[derive(Default)]
struct Schedule {
    /// Min-heap on (time, seq): tasks due at the same instant run in the order they were
    /// scheduled, so that a seed replays exactly.
    queue: BinaryHeap<Reverse<(DateTime<Utc>, u64, Task)>>,
    /// Counts scheduled tasks: the tie-breaker above.
    seq: u64,
}

impl Schedule {
    fn push(&mut self, at: DateTime<Utc>, task: Task) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, task)));
    }

    /// Takes the earliest task if it is due at or before `t`.
    fn pop_due(&mut self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, Task)> {
        let Reverse((at, _, _)) = self.queue.peek()?;
        if *at > t {
            return None;
        }
        let Reverse((at, _, task)) = self.queue.pop()?;
        Some((at, task))
    }
}

/// The emulated control plane.
pub struct Core {
    /// The team and API settings, fixed for the core's life.
    cfg: CoreConfig,
    /// Where virtual time began: scenario times count from here.
    start: DateTime<Utc>,
    /// Where virtual time is; it only moves forward, in [`Core::advance_to`].
    now: DateTime<Utc>,
    /// The only source of randomness (ids, noise, fault victims), seeded by the scenario:
    /// the same seed and calls give the same run.
    rng: fastrand::Rng,
    /// What happens when: boots, samples, expiries, scenario faults.
    schedule: Schedule,
    /// The templates sandboxes are created from, by name (aliases are looked up).
    templates: BTreeMap<String, Template>,
    /// Demand curves and the per-template counts the load model reads.
    load: Load,
    /// Live sandboxes, the ids that find them, and the samples of the dead.
    sandboxes: Sandboxes,
    /// Answers already given to an Idempotency-Key, so a retried create returns the same
    /// sandbox instead of a second one.
    idempotency: HashMap<String, IdempotentCreate>,
    /// Lifecycle events, oldest first, kept for `event_retention`.
    events: VecDeque<LifecycleEvent>,
    /// Registered webhooks and the deliveries waiting to be taken.
    webhooks: Webhooks,
    /// The create rate limit's bucket.
    create_tokens: TokenBucket,
    /// The scenario's scheduled faults and the API faults in force.
    faults: Faults,
    /// Pause and resume latency from the scenario; None answers at once.
    latency: Option<LatencySpec>,
    /// Running totals for [`StatsReport`].
    counters: Counters,
}

/// `t + d`, or None past chrono's range: whatever would happen then never happens.
fn later(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

/// `t - d`, or the earliest time chrono knows (a horizon that keeps everything).
fn earlier(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn uuid_from(rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl Core {
    /// A core whose virtual time starts at `start`, with the scenario's templates, load,
    /// initial sandboxes and faults.
    pub fn new(mut cfg: CoreConfig, scenario: &Scenario, start: DateTime<Utc>) -> Core {
        // A zero interval would sample forever at one instant; callers check the range
        // (limits::MIN_METRICS_INTERVAL) with an error, this only keeps the core total.
        cfg.metrics_interval = cfg.metrics_interval.max(Duration::from_millis(1));
        let mut rng = fastrand::Rng::with_seed(scenario.seed);
        let templates = load::templates(scenario, &mut rng);
        let create_tokens = TokenBucket::full(cfg.create_rate, start);
        let mut core = Core {
            cfg,
            start,
            now: start,
            rng,
            schedule: Schedule::default(),
            templates,
            load: Load::new(scenario),
            sandboxes: Sandboxes::default(),
            idempotency: HashMap::new(),
            events: VecDeque::new(),
            webhooks: Webhooks::default(),
            create_tokens,
            faults: Faults::new(scenario),
            latency: scenario.latency.clone(),
            counters: Counters::default(),
        };
        for (index, f) in scenario.faults.iter().enumerate() {
            core.schedule_after(f.at.0, Task::Fault { index });
        }
        core.spawn_initial(scenario);
        core
    }

    /// Creates the scenario's initial sandboxes.
    fn spawn_initial(&mut self, scenario: &Scenario) {
        for init in &scenario.initial {
            for _ in 0..init.count {
                let req = NewSandbox {
                    template_id: init.template.clone(),
                    timeout: Some(init.timeout.0.as_secs()),
                    metadata: (!init.metadata.is_empty()).then(|| init.metadata.clone()),
                    ..Default::default()
                };
                // Initial sandboxes bypass the rate limit and the cap: they already exist.
                if let Err(e) = self.spawn(&req, 300) {
                    tracing::warn!(message = %e.message, "initial sandbox not created");
                }
            }
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub(crate) fn start(&self) -> DateTime<Utc> {
        self.start
    }

    fn elapsed_s(&self, t: DateTime<Utc>) -> f64 {
        (t - self.start).as_seconds_f64()
    }

    fn schedule(&mut self, at: DateTime<Utc>, task: Task) {
        self.schedule.push(at, task);
    }

    /// Schedules `task` `d` from now; past chrono's range it would never run, so it is dropped.
    fn schedule_after(&mut self, d: Duration, task: Task) {
        if let Some(at) = later(self.now, d) {
            self.schedule(at, task);
        }
    }

    /// Runs everything scheduled up to `t`, in time order, and moves the clock to `t`.
    /// Times in the past are ignored: virtual time never goes back.
    pub(crate) fn advance_to(&mut self, t: DateTime<Utc>) {
        if t <= self.now {
            return;
        }
        while let Some((at, task)) = self.schedule.pop_due(t) {
            let at = at.max(self.now);
            self.accumulate(self.now, at);
            self.now = at;
            self.run(task);
        }
        self.accumulate(self.now, t);
        self.now = t;
        self.prune();
    }

    /// Advances by a duration; past chrono's range, to the latest time chrono knows.
    pub fn advance(&mut self, by: Duration) {
        let t = later(self.now, by).unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.advance_to(t);
    }

    /// Advances by a duration, or answers 400 when that passes the latest representable time.
    pub(crate) fn try_advance(&mut self, by: Duration) -> Res<DateTime<Utc>> {
        let t = later(self.now, by).ok_or_else(|| {
            Rejection::bad_request(format!(
                "by: {} from {} is past the latest time the emulator can represent",
                humantime::format_duration(by),
                rfc3339(self.now)
            ))
        })?;
        self.advance_to(t);
        Ok(self.now)
    }

    /// Forgets events past their retention and API faults that have run out.
    fn prune(&mut self) {
        let horizon = earlier(self.now, self.cfg.event_retention);
        while self.events.front().is_some_and(|e| e.timestamp < horizon) {
            self.events.pop_front();
        }
        self.faults.prune(self.now);
    }

    /// Runs one due task; each concern's file says what its task does.
    fn run(&mut self, task: Task) {
        match task {
            Task::Boot { sbx, run } => self.boot(sbx, run),
            Task::Sample { sbx, run } => self.sample_and_reschedule(sbx, run),
            Task::Expire { sbx, timeout } => self.expire(sbx, timeout),
            Task::Fault { index } => self.run_scenario_fault(index),
        }
    }
}

#[cfg(test)]
mod tests;
