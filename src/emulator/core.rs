//! The emulator's core: E2B's control plane as pure state in virtual time.
//!
//! It holds sandboxes, their metric samples, lifecycle events, webhooks, rate limits and the
//! load model, and moves only when told: [`Core::advance_to`] runs every scheduled thing
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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;

use super::scenario::{ApiErrorSpec, DEFAULT_TEMPLATE, FaultSpec, Scenario, TemplateSpec};
use crate::e2b::{
    EventData, EventQuery, EventType, Execution, LifecycleEvent, ListQuery, Metadata, NewSandbox,
    NewWebhook, Order, Page, Sandbox, SandboxInfo, SandboxMetric, SandboxState, Webhook,
    WebhookPatch, kill_reason,
};

const MIB: u64 = 1024 * 1024;
/// The envd version the emulator reports: the lowest that raises no SDK warning.
pub const ENVD_VERSION: &str = "0.2.4";
/// Longest timeout E2B accepts (Pro): 24 hours.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// The first metric sample of a sandbox appears this long after its start, as on E2B.
const FIRST_SAMPLE_AFTER: Duration = Duration::from_secs(1);

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
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            retry_after: None,
            rate_limit: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub fn sandbox_not_found(id: &str) -> Self {
        Self::new(
            404,
            format!("Sandbox \"{id}\" doesn't exist or you don't have access to it"),
        )
    }
}

type Res<T> = Result<T, Rejection>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Task {
    Boot { sbx: u64, run: u64 },
    Sample { sbx: u64, run: u64 },
    Expire { sbx: u64, timeout: u64 },
    Fault { index: usize },
}

/// One live sandbox, running or paused.
#[derive(Debug, Clone)]
struct Sbx {
    /// Internal handle, so scheduled tasks need not hold the string id.
    key: u64,
    id: String,
    client_id: String,
    template: String,
    alias: Option<String>,
    cpu_count: u32,
    memory_mb: u32,
    disk_mb: u32,
    started_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    state: SandboxState,
    booted: bool,
    /// When the current execution (since create or the last resume) began.
    running_since: DateTime<Utc>,
    execution_id: String,
    metadata: Option<Metadata>,
    auto_pause: bool,
    envd_access_token: Option<String>,
    /// Bumped on pause and resume: invalidates scheduled boot and sample tasks.
    run_gen: u64,
    /// Bumped whenever the end time changes: invalidates scheduled expiries.
    timeout_gen: u64,
    metrics: VecDeque<SandboxMetric>,
}

struct Template {
    spec: TemplateSpec,
    build_id: String,
}

/// Demand of one template over time, in busy cores; piecewise linear.
#[derive(Debug, Clone)]
struct Curve {
    /// (seconds since start, cores), times strictly increasing; no points is no demand.
    points: Vec<(f64, f64)>,
    noise: f64,
}

impl Curve {
    fn at(&self, s: f64) -> f64 {
        let (Some(&(first_t, first_v)), Some(&(_, last_v))) =
            (self.points.first(), self.points.last())
        else {
            return 0.0;
        };
        if s <= first_t {
            return first_v;
        }
        for w in self.points.windows(2) {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            if s <= t1 {
                if t1 <= t0 {
                    return v1;
                }
                return v0 + (v1 - v0) * (s - t0) / (t1 - t0);
            }
        }
        last_v
    }

    /// Integral over [a, b] of the demand, and of the demand above `capacity`.
    fn integrate(&self, a: f64, b: f64, capacity: f64) -> (f64, f64) {
        if b <= a {
            return (0.0, 0.0);
        }
        let mut cuts = vec![a];
        cuts.extend(self.points.iter().map(|p| p.0).filter(|&t| t > a && t < b));
        cuts.push(b);
        let (mut total, mut excess) = (0.0, 0.0);
        for w in cuts.windows(2) {
            let (s0, s1) = (w[0], w[1]);
            let (d0, d1) = (self.at(s0), self.at(s1));
            total += (d0 + d1) / 2.0 * (s1 - s0);
            excess += excess_linear(s1 - s0, d0 - capacity, d1 - capacity);
        }
        (total, excess)
    }
}

/// Integral of max(0, f) over an interval of length `len` where f goes linearly from `e0` to `e1`.
fn excess_linear(len: f64, e0: f64, e1: f64) -> f64 {
    if e0 >= 0.0 && e1 >= 0.0 {
        (e0 + e1) / 2.0 * len
    } else if e0 <= 0.0 && e1 <= 0.0 {
        0.0
    } else {
        // One end above zero: a triangle up to the crossing.
        let pos = e0.max(e1);
        let frac = pos / (e0 - e1).abs();
        pos * frac * len / 2.0
    }
}

/// A webhook as the core keeps it: with its secret, which the API never shows.
#[derive(Debug, Clone)]
struct WebhookRec {
    hook: Webhook,
    secret: String,
}

/// A delivery the HTTP layer should POST: one event to one webhook.
#[derive(Clone)]
pub struct Delivery {
    pub webhook_id: String,
    /// Stays the same across retries of this delivery: receivers deduplicate on it.
    pub delivery_id: String,
    pub url: String,
    pub secret: String,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("webhook_id", &self.webhook_id)
            .field("delivery_id", &self.delivery_id)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// An active API fault: requests matching `path` get `status` until `until`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFault {
    pub status: u16,
    pub until: Option<DateTime<Utc>>,
    /// Requests left to fail, when counted rather than timed.
    pub remaining: Option<u64>,
    pub path: Option<String>,
    /// Only requests with this method (e.g. `POST`); all when absent.
    pub method: Option<String>,
    pub retry_after: Option<u64>,
}

/// Running totals, in all and per template.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TemplateStats {
    pub sandbox_seconds: f64,
    pub unmet_core_seconds: f64,
    pub demand_core_seconds: f64,
    pub creates: u64,
    pub kills: u64,
}

/// What `GET /_emulator/stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub now: DateTime<Utc>,
    pub elapsed_s: f64,
    pub running: usize,
    pub paused: usize,
    pub sandbox_seconds: f64,
    pub unmet_core_seconds: f64,
    pub demand_core_seconds: f64,
    pub creates: u64,
    pub kills: u64,
    pub kills_by_reason: BTreeMap<String, u64>,
    pub events: usize,
    pub rejected_rate_limit: u64,
    pub rejected_concurrency: u64,
    pub templates: BTreeMap<String, TemplateReport>,
}

/// Per-template part of [`StatsReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateReport {
    /// Busy cores asked for right now.
    pub demand_cores: f64,
    /// Cores of booted, running sandboxes right now.
    pub capacity_cores: f64,
    pub running: usize,
    pub booting: usize,
    /// Mean of the latest CPU sample of its running sandboxes, in percent.
    pub avg_cpu_pct: f64,
    #[serde(flatten)]
    pub totals: TemplateStats,
}

struct IdempotentCreate {
    fingerprint: String,
    response: Sandbox,
}

/// The emulated control plane.
pub struct Core {
    cfg: CoreConfig,
    templates: BTreeMap<String, Template>,
    curves: BTreeMap<String, Curve>,
    faults: Vec<FaultSpec>,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    rng: fastrand::Rng,
    next_key: u64,
    sandboxes: BTreeMap<u64, Sbx>,
    by_id: HashMap<String, u64>,
    /// Samples of killed sandboxes, still served by the metrics endpoint.
    gone_metrics: HashMap<String, VecDeque<SandboxMetric>>,
    /// Running and booted sandboxes per template: the capacity of the load model.
    booted: BTreeMap<String, usize>,
    /// Running sandboxes per template, kept as they change so that time steps need not scan.
    running: BTreeMap<String, usize>,
    events: VecDeque<LifecycleEvent>,
    webhooks: BTreeMap<String, WebhookRec>,
    outbox: Vec<Delivery>,
    queue: BinaryHeap<Reverse<(DateTime<Utc>, u64, Task)>>,
    seq: u64,
    create_tokens: f64,
    tokens_at: DateTime<Utc>,
    idempotency: HashMap<String, IdempotentCreate>,
    api_faults: Vec<ApiFault>,
    totals: TemplateStats,
    per_template: BTreeMap<String, TemplateStats>,
    kills_by_reason: BTreeMap<String, u64>,
    rejected_rate_limit: u64,
    rejected_concurrency: u64,
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

/// The end of a lifetime of `secs` seconds from `now`, or the 400 for one over E2B's 24 hours.
fn end_after(now: DateTime<Utc>, secs: u64) -> Res<DateTime<Utc>> {
    check_timeout(secs)?;
    later(now, Duration::from_secs(secs)).ok_or_else(|| {
        Rejection::bad_request("timeout: the sandbox would end past the latest representable time")
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl Core {
    /// A core whose virtual time starts at `start`, with the scenario's templates, load,
    /// initial sandboxes and faults.
    pub fn new(mut cfg: CoreConfig, scenario: &Scenario, start: DateTime<Utc>) -> Core {
        // A zero interval would sample forever at one instant; callers check the range
        // (limits::MIN_METRICS_INTERVAL) with an error, this only keeps the core total.
        cfg.metrics_interval = cfg.metrics_interval.max(Duration::from_millis(1));
        let mut rng = fastrand::Rng::with_seed(scenario.seed);
        let templates = scenario
            .all_templates()
            .into_iter()
            .map(|(name, spec)| {
                let build_id = uuid_from(&mut rng);
                (name, Template { spec, build_id })
            })
            .collect();
        let curves = scenario
            .load
            .iter()
            .map(|l| {
                let points = l
                    .points
                    .iter()
                    .map(|(t, v)| (t.as_secs_f64(), *v))
                    .collect();
                (
                    l.template.clone(),
                    Curve {
                        points,
                        noise: l.noise,
                    },
                )
            })
            .collect();
        let burst = cfg.create_rate.max(1.0).ceil();
        let mut core = Core {
            cfg,
            templates,
            curves,
            faults: scenario.faults.clone(),
            start,
            now: start,
            rng,
            next_key: 0,
            sandboxes: BTreeMap::new(),
            by_id: HashMap::new(),
            gone_metrics: HashMap::new(),
            booted: BTreeMap::new(),
            running: BTreeMap::new(),
            events: VecDeque::new(),
            webhooks: BTreeMap::new(),
            outbox: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            create_tokens: burst,
            tokens_at: start,
            idempotency: HashMap::new(),
            api_faults: Vec::new(),
            totals: TemplateStats::default(),
            per_template: BTreeMap::new(),
            kills_by_reason: BTreeMap::new(),
            rejected_rate_limit: 0,
            rejected_concurrency: 0,
        };
        for (index, f) in scenario.faults.iter().enumerate() {
            core.schedule_after(f.at.0, Task::Fault { index });
        }
        for init in &scenario.initial {
            for _ in 0..init.count {
                let req = NewSandbox {
                    template_id: init.template.clone(),
                    timeout: Some(init.timeout.0.as_secs()),
                    metadata: (!init.metadata.is_empty()).then(|| init.metadata.clone()),
                    ..Default::default()
                };
                // Initial sandboxes bypass the rate limit and the cap: they already exist.
                if let Err(e) = core.spawn(&req, 300) {
                    tracing::warn!(message = %e.message, "initial sandbox not created");
                }
            }
        }
        core
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    fn elapsed_s(&self, t: DateTime<Utc>) -> f64 {
        (t - self.start).as_seconds_f64()
    }

    fn schedule(&mut self, at: DateTime<Utc>, task: Task) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, task)));
    }

    /// Schedules `task` `d` from now; past chrono's range it would never run, so it is dropped.
    fn schedule_after(&mut self, d: Duration, task: Task) {
        if let Some(at) = later(self.now, d) {
            self.schedule(at, task);
        }
    }

    /// Runs everything scheduled up to `t`, in time order, and moves the clock to `t`.
    /// Times in the past are ignored: virtual time never goes back.
    pub fn advance_to(&mut self, t: DateTime<Utc>) {
        if t <= self.now {
            return;
        }
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > t {
                break;
            }
            let Some(Reverse((at, _, task))) = self.queue.pop() else {
                break;
            };
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
    pub fn try_advance(&mut self, by: Duration) -> Res<DateTime<Utc>> {
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

    fn prune(&mut self) {
        let horizon = earlier(self.now, self.cfg.event_retention);
        while self.events.front().is_some_and(|e| e.timestamp < horizon) {
            self.events.pop_front();
        }
        self.api_faults
            .retain(|f| f.until.is_none_or(|u| u > self.now) && f.remaining.is_none_or(|r| r > 0));
    }

    /// Adds sandbox-seconds and demand integrals over [a, b], during which nothing changed.
    fn accumulate(&mut self, a: DateTime<Utc>, b: DateTime<Utc>) {
        let dt = (b - a).as_seconds_f64();
        if dt <= 0.0 {
            return;
        }
        for (tpl, &n) in &self.running {
            let secs = n as f64 * dt;
            self.totals.sandbox_seconds += secs;
            if let Some(st) = self.per_template.get_mut(tpl) {
                st.sandbox_seconds += secs;
            } else {
                self.per_template.insert(
                    tpl.clone(),
                    TemplateStats {
                        sandbox_seconds: secs,
                        ..Default::default()
                    },
                );
            }
        }
        let (sa, sb) = (self.elapsed_s(a), self.elapsed_s(b));
        for (tpl, curve) in &self.curves {
            let cpu = self.templates.get(tpl).map_or(1, |t| t.spec.cpu_count) as f64;
            let capacity = *self.booted.get(tpl).unwrap_or(&0) as f64 * cpu;
            let (demand, unmet) = curve.integrate(sa, sb, capacity);
            let st = self.per_template.entry(tpl.clone()).or_default();
            st.demand_core_seconds += demand;
            st.unmet_core_seconds += unmet;
            self.totals.demand_core_seconds += demand;
            self.totals.unmet_core_seconds += unmet;
        }
    }

    fn run(&mut self, task: Task) {
        match task {
            Task::Boot { sbx, run } => {
                if let Some(s) = self.sandboxes.get_mut(&sbx)
                    && s.run_gen == run
                    && s.state == SandboxState::Running
                    && !s.booted
                {
                    s.booted = true;
                    *self.booted.entry(s.template.clone()).or_default() += 1;
                }
            }
            Task::Sample { sbx, run } => {
                let live = self
                    .sandboxes
                    .get(&sbx)
                    .is_some_and(|s| s.run_gen == run && s.state == SandboxState::Running);
                if live {
                    self.sample(sbx);
                    self.schedule_after(self.cfg.metrics_interval, Task::Sample { sbx, run });
                }
            }
            Task::Expire { sbx, timeout } => {
                let Some(s) = self.sandboxes.get(&sbx) else {
                    return;
                };
                if s.timeout_gen != timeout || s.state != SandboxState::Running {
                    return;
                }
                if s.auto_pause {
                    self.pause_key(sbx);
                } else {
                    self.kill_key(sbx, kill_reason::TIMEOUT);
                }
            }
            Task::Fault { index } => {
                let Some(f) = self.faults.get(index).cloned() else {
                    return;
                };
                if let Some(n) = f.kill {
                    let tpl = f.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
                    let reason = f.reason.as_deref().unwrap_or(kill_reason::UNKNOWN);
                    self.kill_random(tpl, n as usize, reason);
                }
                if let Some(e) = f.api_error {
                    self.add_api_fault_spec(&e);
                }
            }
        }
    }

    fn add_api_fault_spec(&mut self, e: &ApiErrorSpec) {
        self.api_faults.push(ApiFault {
            status: e.status,
            // A fault that outlasts chrono's range lasts for good.
            until: later(self.now, e.duration.0),
            remaining: None,
            path: e.path.clone(),
            method: None,
            retry_after: e.retry_after.or((e.status == 429).then_some(1)),
        });
    }

    /// Kills up to `n` running sandboxes of a template, chosen by the seeded draw.
    pub fn kill_random(&mut self, template: &str, n: usize, reason: &str) -> Vec<String> {
        let mut candidates: Vec<u64> = self
            .sandboxes
            .values()
            .filter(|s| s.template == template && s.state == SandboxState::Running)
            .map(|s| s.key)
            .collect();
        self.rng.shuffle(&mut candidates);
        candidates
            .into_iter()
            .take(n)
            .filter_map(|k| self.kill_key(k, reason))
            .collect()
    }

    /// Busy cores asked of a template now.
    pub fn demand(&self, template: &str) -> f64 {
        self.curves
            .get(template)
            .map_or(0.0, |c| c.at(self.elapsed_s(self.now)))
    }

    fn sample(&mut self, key: u64) {
        let Some(s) = self.sandboxes.get(&key) else {
            return;
        };
        let cpu = s.cpu_count.max(1) as f64;
        let (util, noise) = match (self.curves.get(&s.template), s.booted) {
            (Some(curve), true) => {
                let n = (*self.booted.get(&s.template).unwrap_or(&1)).max(1) as f64;
                let share = curve.at(self.elapsed_s(self.now)) / n;
                ((share / cpu).min(1.0), curve.noise)
            }
            // No load curve, or still booting: idle at a low, noisy load.
            _ => (0.01 + 0.02 * self.rng.f64(), 0.0),
        };
        let jitter = 1.0 + noise * (2.0 * self.rng.f64() - 1.0);
        let pct = (util * 100.0 * jitter).clamp(0.0, 100.0);
        let pct = (pct * 100.0).round() / 100.0;
        let util = pct / 100.0;
        let mem_total = s.memory_mb as u64 * MIB * 31 / 32;
        let mem_used = (mem_total as f64 * (0.06 + 0.55 * util)) as u64;
        let disk_total = s.disk_mb as u64 * MIB;
        let disk_used = (disk_total as f64 * (0.55 + 0.15 * util)) as u64;
        // E2B stores samples at whole seconds.
        let at = DateTime::from_timestamp(self.now.timestamp(), 0).unwrap_or(self.now);
        let metric = SandboxMetric {
            timestamp: at,
            timestamp_unix: at.timestamp(),
            cpu_count: s.cpu_count,
            cpu_used_pct: pct,
            mem_used,
            mem_total,
            mem_cache: mem_used / 4,
            disk_used,
            disk_total,
        };
        let horizon = earlier(self.now, self.cfg.metrics_retention);
        if let Some(s) = self.sandboxes.get_mut(&key) {
            while s.metrics.front().is_some_and(|m| m.timestamp < horizon) {
                s.metrics.pop_front();
            }
            s.metrics.push_back(metric);
        }
    }

    fn random_id(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.usize(0..ALPHABET.len())] as char)
            .collect()
    }

    fn running_count(&self) -> usize {
        self.running.values().sum()
    }

    fn count_running(&mut self, template: &str, delta: isize) {
        let n = self.running.entry(template.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    fn find_template(&self, name: &str) -> Option<(&String, &Template)> {
        self.templates.get_key_value(name).or_else(|| {
            self.templates
                .iter()
                .find(|(_, t)| t.spec.alias.as_deref() == Some(name))
        })
    }

    /// Resolves an id that may carry E2B's `-<clientID>` suffix.
    fn resolve(&self, raw: &str) -> Res<u64> {
        let id = short_id(raw)?;
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| Rejection::sandbox_not_found(id))
    }

    fn check_capacity(&mut self) -> Res<()> {
        if self.running_count() >= self.cfg.max_concurrent {
            self.rejected_concurrency += 1;
            let mut r = Rejection::new(
                429,
                format!(
                    "you have reached the maximum number of concurrent E2B sandboxes ({})",
                    self.cfg.max_concurrent
                ),
            );
            r.retry_after = Some(1);
            return Err(r);
        }
        Ok(())
    }

    fn take_create_token(&mut self) -> Res<()> {
        let rate = self.cfg.create_rate;
        if !(rate.is_finite() && rate > 0.0) {
            return Ok(());
        }
        let burst = rate.max(1.0).ceil();
        let dt = (self.now - self.tokens_at).as_seconds_f64().max(0.0);
        self.create_tokens = (self.create_tokens + dt * rate).min(burst);
        self.tokens_at = self.now;
        if self.create_tokens >= 1.0 {
            self.create_tokens -= 1.0;
            return Ok(());
        }
        self.rejected_rate_limit += 1;
        let wait = ((1.0 - self.create_tokens) / rate).ceil().max(1.0) as u64;
        let mut r = Rejection::new(429, "Rate limit exceeded");
        r.retry_after = Some(wait);
        r.rate_limit = Some((burst as u64, 0, wait));
        Err(r)
    }

    /// `POST /v2/sandboxes` (`v2`, default timeout 300 s, optional Idempotency-Key) and
    /// `POST /sandboxes` (default timeout 15 s).
    pub fn create(
        &mut self,
        req: &NewSandbox,
        v2: bool,
        idempotency_key: Option<&str>,
    ) -> Res<Sandbox> {
        if let Some(key) = idempotency_key {
            let valid = (1..=255).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(Rejection::bad_request(
                    "Idempotency-Key must be 1 to 255 characters of [a-z0-9-]",
                ));
            }
            let fingerprint = serde_json::to_string(req).unwrap_or_default();
            if let Some(prev) = self.idempotency.get(key) {
                return if prev.fingerprint == fingerprint {
                    Ok(prev.response.clone())
                } else {
                    Err(Rejection::new(
                        409,
                        "Idempotency-Key was already used with a different request",
                    ))
                };
            }
            let sandbox = self.create_checked(req, if v2 { 300 } else { 15 })?;
            self.idempotency.insert(
                key.to_string(),
                IdempotentCreate {
                    fingerprint,
                    response: sandbox.clone(),
                },
            );
            return Ok(sandbox);
        }
        self.create_checked(req, if v2 { 300 } else { 15 })
    }

    fn create_checked(&mut self, req: &NewSandbox, default_timeout: u64) -> Res<Sandbox> {
        if req.template_id.trim().is_empty() {
            return Err(Rejection::bad_request("templateID is required"));
        }
        if self.find_template(&req.template_id).is_none() {
            return Err(Rejection::new(
                404,
                format!("template '{}' not found", req.template_id),
            ));
        }
        check_timeout(req.timeout.unwrap_or(0))?;
        self.take_create_token()?;
        self.check_capacity()?;
        self.spawn(req, default_timeout)
    }

    /// Creates a sandbox with no rate or capacity check.
    fn spawn(&mut self, req: &NewSandbox, default_timeout: u64) -> Res<Sandbox> {
        let (tpl_name, tpl) = self.find_template(&req.template_id).ok_or_else(|| {
            Rejection::new(404, format!("template '{}' not found", req.template_id))
        })?;
        let (tpl_name, spec) = (tpl_name.clone(), tpl.spec.clone());
        let alias = (req.template_id != tpl_name).then(|| req.template_id.clone());
        let end_at = end_after(self.now, req.timeout.unwrap_or(default_timeout))?;
        self.next_key += 1;
        let key = self.next_key;
        let id = loop {
            let id = self.random_id(20);
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        let client_id = self.random_id(8);
        let execution_id = uuid_from(&mut self.rng);
        let envd_access_token = req.secure.unwrap_or(false).then(|| self.random_id(32));
        let sbx = Sbx {
            key,
            id: id.clone(),
            client_id,
            template: tpl_name.clone(),
            alias,
            cpu_count: spec.cpu_count,
            memory_mb: spec.memory_mb,
            disk_mb: spec.disk_mb,
            started_at: self.now,
            end_at,
            state: SandboxState::Running,
            booted: false,
            running_since: self.now,
            execution_id,
            metadata: req.metadata.clone().filter(|m| !m.is_empty()),
            auto_pause: req.auto_pause.unwrap_or(false),
            envd_access_token,
            run_gen: 0,
            timeout_gen: 0,
            metrics: VecDeque::new(),
        };
        self.sandboxes.insert(key, sbx);
        self.by_id.insert(id, key);
        self.count_running(&tpl_name, 1);
        self.schedule_after(spec.boot.0, Task::Boot { sbx: key, run: 0 });
        self.schedule_after(FIRST_SAMPLE_AFTER, Task::Sample { sbx: key, run: 0 });
        self.schedule(
            end_at,
            Task::Expire {
                sbx: key,
                timeout: 0,
            },
        );
        self.totals.creates += 1;
        self.per_template.entry(tpl_name).or_default().creates += 1;
        self.emit(key, EventType::Created, EventData::default());
        Ok(self.sandbox_view(key))
    }

    fn sandbox_view(&self, key: u64) -> Sandbox {
        let s = &self.sandboxes[&key];
        Sandbox {
            template_id: s.template.clone(),
            sandbox_id: s.id.clone(),
            client_id: s.client_id.clone(),
            envd_version: ENVD_VERSION.to_string(),
            alias: s.alias.clone(),
            envd_access_token: s.envd_access_token.clone(),
            traffic_access_token: None,
            domain: None,
        }
    }

    fn info_view(&self, s: &Sbx) -> SandboxInfo {
        SandboxInfo {
            template_id: s.template.clone(),
            alias: s.alias.clone(),
            sandbox_id: s.id.clone(),
            client_id: s.client_id.clone(),
            started_at: s.started_at,
            end_at: s.end_at,
            cpu_count: s.cpu_count,
            memory_mb: s.memory_mb,
            disk_size_mb: s.disk_mb,
            metadata: s.metadata.clone(),
            state: s.state,
            envd_version: ENVD_VERSION.to_string(),
            envd_access_token: s.envd_access_token.clone(),
            domain: None,
        }
    }

    fn execution(&self, s: &Sbx) -> Execution {
        Execution {
            started_at: Some(rfc3339(s.running_since)),
            vcpu_count: Some(s.cpu_count),
            memory_mb: Some(s.memory_mb as u64),
            execution_time: Some((self.now - s.running_since).num_milliseconds().max(0) as u64),
            extra: Default::default(),
        }
    }

    /// Records a lifecycle event and queues a delivery to each subscribed, enabled webhook.
    fn emit(&mut self, key: u64, event_type: EventType, mut data: EventData) {
        let Some(s) = self.sandboxes.get(&key) else {
            return;
        };
        data.sandbox_metadata = s.metadata.clone();
        let empty = data == EventData::default();
        let event = LifecycleEvent {
            id: uuid_from(&mut self.rng),
            version: Some("v2".to_string()),
            event_type,
            timestamp: self.now,
            event_data: (!empty).then_some(data),
            sandbox_id: s.id.clone(),
            sandbox_build_id: self.templates.get(&s.template).map(|t| t.build_id.clone()),
            sandbox_execution_id: Some(s.execution_id.clone()),
            sandbox_template_id: Some(s.template.clone()),
            sandbox_team_id: Some(self.cfg.team_id.clone()),
            extra: Default::default(),
        };
        let targets: Vec<(String, String, String)> = self
            .webhooks
            .values()
            .filter(|w| w.hook.enabled && w.hook.events.contains(&event.event_type))
            .map(|w| (w.hook.id.clone(), w.hook.url.clone(), w.secret.clone()))
            .collect();
        if !targets.is_empty() {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            for (webhook_id, url, secret) in targets {
                let delivery_id = uuid_from(&mut self.rng);
                self.outbox.push(Delivery {
                    webhook_id,
                    delivery_id,
                    url,
                    secret,
                    body: body.clone(),
                });
            }
        }
        self.events.push_back(event);
    }

    /// Takes the webhook deliveries queued since the last call.
    pub fn take_outbox(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.outbox)
    }

    fn unboot(&mut self, key: u64) {
        if let Some(s) = self.sandboxes.get_mut(&key)
            && s.booted
        {
            s.booted = false;
            if let Some(n) = self.booted.get_mut(&s.template) {
                *n = n.saturating_sub(1);
            }
        }
    }

    fn kill_key(&mut self, key: u64, reason: &str) -> Option<String> {
        let s = self.sandboxes.get(&key)?;
        let data = EventData {
            kill_reason: Some(reason.to_string()),
            execution: Some(self.execution(s)),
            ..Default::default()
        };
        self.unboot(key);
        self.emit(key, EventType::Killed, data);
        let s = self.sandboxes.remove(&key)?;
        self.by_id.remove(&s.id);
        if s.state == SandboxState::Running {
            self.count_running(&s.template, -1);
        }
        self.totals.kills += 1;
        self.per_template
            .entry(s.template.clone())
            .or_default()
            .kills += 1;
        *self.kills_by_reason.entry(reason.to_string()).or_default() += 1;
        self.gone_metrics.insert(s.id.clone(), s.metrics);
        Some(s.id)
    }

    fn pause_key(&mut self, key: u64) {
        let Some(s) = self.sandboxes.get(&key) else {
            return;
        };
        let data = EventData {
            execution: Some(self.execution(s)),
            ..Default::default()
        };
        self.unboot(key);
        if let Some(s) = self.sandboxes.get_mut(&key) {
            let template = s.template.clone();
            s.state = SandboxState::Paused;
            s.run_gen += 1;
            s.timeout_gen += 1;
            s.end_at = self.now;
            self.count_running(&template, -1);
        }
        self.emit(key, EventType::Paused, data);
    }

    fn resume_key(&mut self, key: u64, timeout: u64) -> Res<()> {
        let now = self.now;
        let end_at = end_after(now, timeout)?;
        self.check_capacity()?;
        let execution_id = uuid_from(&mut self.rng);
        let (run, tgen, boot, template) = {
            let s = self
                .sandboxes
                .get_mut(&key)
                .ok_or_else(|| Rejection::new(404, "gone"))?;
            s.state = SandboxState::Running;
            s.run_gen += 1;
            s.timeout_gen += 1;
            s.end_at = end_at;
            s.running_since = now;
            s.execution_id = execution_id;
            (s.run_gen, s.timeout_gen, s.end_at, s.template.clone())
        };
        self.count_running(&template, 1);
        // Resuming from a snapshot is quick; it takes its share of load at once.
        self.schedule(now, Task::Boot { sbx: key, run });
        self.schedule_after(FIRST_SAMPLE_AFTER, Task::Sample { sbx: key, run });
        self.schedule(
            boot,
            Task::Expire {
                sbx: key,
                timeout: tgen,
            },
        );
        self.emit(key, EventType::Resumed, EventData::default());
        Ok(())
    }

    /// `DELETE /sandboxes/{id}`.
    pub fn kill(&mut self, id: &str) -> Res<()> {
        let key = self.resolve(id)?;
        self.kill_key(key, kill_reason::REQUEST);
        Ok(())
    }

    /// Kills a sandbox as E2B would for another reason (`timeout`, `orphaned`, ...).
    pub fn kill_with_reason(&mut self, id: &str, reason: &str) -> Res<()> {
        let key = self.resolve(id)?;
        self.kill_key(key, reason);
        Ok(())
    }

    /// `GET /sandboxes/{id}`.
    pub fn get(&self, id: &str) -> Res<SandboxInfo> {
        let key = self.resolve(id)?;
        Ok(self.info_view(&self.sandboxes[&key]))
    }

    /// `POST /sandboxes/{id}/timeout`.
    pub fn set_timeout(&mut self, id: &str, timeout: u64) -> Res<()> {
        let end = end_after(self.now, timeout)?;
        let key = self.resolve(id)?;
        let s = &self.sandboxes[&key];
        if s.state != SandboxState::Running {
            // A paused sandbox is not in the orchestrator, so E2B does not find it.
            return Err(Rejection::sandbox_not_found(&s.id));
        }
        self.move_end(key, end);
        Ok(())
    }

    /// Moves a running sandbox's end time: reschedules its expiry and emits `updated`.
    fn move_end(&mut self, key: u64, end: DateTime<Utc>) {
        let Some(s) = self.sandboxes.get_mut(&key) else {
            return;
        };
        s.end_at = end;
        s.timeout_gen += 1;
        let timeout = s.timeout_gen;
        self.schedule(end, Task::Expire { sbx: key, timeout });
        let data = EventData {
            set_timeout: Some(rfc3339(end)),
            ..Default::default()
        };
        self.emit(key, EventType::Updated, data);
    }

    /// `POST /sandboxes/{id}/pause`: 409 when already paused.
    pub fn pause(&mut self, id: &str) -> Res<()> {
        let key = self.resolve(id)?;
        let s = &self.sandboxes[&key];
        if s.state == SandboxState::Paused {
            return Err(Rejection::new(
                409,
                format!("Sandbox '{}' is already paused", s.id),
            ));
        }
        self.pause_key(key);
        Ok(())
    }

    /// `POST /sandboxes/{id}/connect`: resumes a paused sandbox (resumed = true), or extends a
    /// running one's end time, never shortening it.
    pub fn connect(&mut self, id: &str, timeout: u64) -> Res<(Sandbox, bool)> {
        let key = self.resolve(id)?;
        let wanted = end_after(self.now, timeout)?;
        if self.sandboxes[&key].state == SandboxState::Paused {
            self.resume_key(key, timeout)?;
            return Ok((self.sandbox_view(key), true));
        }
        if wanted > self.sandboxes[&key].end_at {
            self.move_end(key, wanted);
        }
        Ok((self.sandbox_view(key), false))
    }

    /// `POST /sandboxes/{id}/resume` (deprecated): 409 when running.
    pub fn resume(&mut self, id: &str, timeout: u64) -> Res<Sandbox> {
        let key = self.resolve(id)?;
        if self.sandboxes[&key].state == SandboxState::Running {
            return Err(Rejection::new(
                409,
                format!("Sandbox {} is already running", self.sandboxes[&key].id),
            ));
        }
        self.resume_key(key, timeout)?;
        Ok(self.sandbox_view(key))
    }

    /// `GET /v2/sandboxes`: filters, sorts by start time, and pages with E2B's cursor.
    pub fn list(&self, q: &ListQuery) -> Res<Page<SandboxInfo>> {
        let limit = q.limit.unwrap_or(100);
        if !(1..=100).contains(&limit) {
            return Err(limit_error(limit));
        }
        let template_key = q.template.as_ref().map(|t| {
            self.find_template(t)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| t.clone())
        });
        let mut items: Vec<&Sbx> = self
            .sandboxes
            .values()
            .filter(|s| q.states.is_empty() || q.states.contains(&s.state))
            .filter(|s| template_key.as_ref().is_none_or(|t| &s.template == t))
            .filter(|s| q.started_after.is_none_or(|t| s.started_at >= t))
            .filter(|s| {
                q.metadata
                    .iter()
                    .all(|(k, v)| s.metadata.as_ref().and_then(|m| m.get(k)) == Some(v))
            })
            .collect();
        let order = q.order.unwrap_or_default();
        items.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        if order == Order::Desc {
            items.reverse();
        }
        let total_running = (q.states.is_empty() || q.states.contains(&SandboxState::Running))
            .then(|| {
                items
                    .iter()
                    .filter(|s| s.state == SandboxState::Running)
                    .count() as u64
            });
        let start = match &q.next_token {
            Some(token) => {
                let (t, id) = parse_cursor(token)
                    .ok_or_else(|| Rejection::bad_request("Invalid next token"))?;
                items
                    .iter()
                    .position(|s| {
                        let k = (s.started_at, s.id.as_str());
                        match order {
                            Order::Asc => k > (t, id.as_str()),
                            Order::Desc => k < (t, id.as_str()),
                        }
                    })
                    .unwrap_or(items.len())
            }
            None => 0,
        };
        let end = (start + limit as usize).min(items.len());
        let page: Vec<SandboxInfo> = items[start..end]
            .iter()
            .map(|s| self.info_view(s))
            .collect();
        let next_token = (end < items.len())
            .then(|| {
                page.last()
                    .map(|s| make_cursor(s.started_at, &s.sandbox_id))
            })
            .flatten();
        Ok(Page {
            items: page,
            next_token,
            total_running,
        })
    }

    /// `GET /sandboxes/{id}/metrics`: samples in [start, end], bucketed like E2B over long ranges.
    pub fn metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Res<Vec<SandboxMetric>> {
        let short = short_id(id)?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(Rejection::bad_request(
                "start time cannot be after end time",
            ));
        }
        let samples = match self.by_id.get(short) {
            Some(k) => &self.sandboxes[k].metrics,
            None => self
                .gone_metrics
                .get(short)
                .ok_or_else(|| Rejection::sandbox_not_found(short))?,
        };
        let chosen: Vec<&SandboxMetric> = samples
            .iter()
            .filter(|m| start.is_none_or(|s| m.timestamp_unix >= s))
            .filter(|m| end.is_none_or(|e| m.timestamp_unix <= e))
            .collect();
        let span = match (chosen.first(), chosen.last()) {
            (Some(a), Some(b)) => b.timestamp_unix - a.timestamp_unix,
            _ => 0,
        };
        let bucket = match span {
            s if s < 3600 => 0,
            s if s < 6 * 3600 => 30,
            s if s < 12 * 3600 => 60,
            _ => 300,
        };
        if bucket == 0 {
            return Ok(chosen.into_iter().cloned().collect());
        }
        // Keep the last sample of each bucket.
        let mut out: Vec<SandboxMetric> = Vec::new();
        for m in chosen {
            let b = m.timestamp_unix.div_euclid(bucket);
            match out.last_mut() {
                Some(last) if last.timestamp_unix.div_euclid(bucket) == b => *last = m.clone(),
                _ => out.push(m.clone()),
            }
        }
        Ok(out)
    }

    /// `GET /sandboxes/metrics`: the latest sample of each live sandbox asked for.
    pub fn metrics_batch(&self, ids: &[String]) -> Res<BTreeMap<String, SandboxMetric>> {
        if ids.len() > 100 {
            return Err(Rejection::bad_request(
                "Too many sandboxes requested, maximum is 100",
            ));
        }
        let mut out = BTreeMap::new();
        for raw in ids {
            let id = short_id(raw)?;
            if let Some(k) = self.by_id.get(id)
                && let Some(m) = self.sandboxes[k].metrics.back()
            {
                out.insert(id.to_string(), m.clone());
            }
        }
        Ok(out)
    }

    /// `GET /events/sandboxes` (all) or `GET /events/sandboxes/{id}` (`sandbox` given).
    pub fn events(&self, sandbox: Option<&str>, q: &EventQuery) -> Res<Vec<LifecycleEvent>> {
        if !(1..=100).contains(&q.limit) {
            return Err(limit_error(q.limit));
        }
        let sandbox = sandbox.map(short_id).transpose()?;
        let matches = |e: &&LifecycleEvent| {
            sandbox.is_none_or(|id| e.sandbox_id == id)
                && (q.types.is_empty() || q.types.contains(&e.event_type))
        };
        let offset = usize::try_from(q.offset).unwrap_or(usize::MAX);
        let limit = q.limit as usize;
        let page: Vec<LifecycleEvent> = if q.order_asc {
            self.events
                .iter()
                .filter(matches)
                .skip(offset)
                .take(limit)
                .cloned()
                .collect()
        } else {
            self.events
                .iter()
                .rev()
                .filter(matches)
                .skip(offset)
                .take(limit)
                .cloned()
                .collect()
        };
        Ok(page)
    }

    fn check_webhook_fields(url: &str, events: &[EventType], name: &str) -> Res<()> {
        if name.trim().is_empty() {
            return Err(Rejection::bad_request("name must not be empty"));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| Rejection::bad_request(format!("invalid webhook URL {url:?}: {e}")))?;
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(Rejection::bad_request(
                    "webhook URL must use https (the emulator also accepts http on loopback)",
                ));
            }
        }
        if events.is_empty() {
            return Err(Rejection::bad_request(
                "events must name at least one event type",
            ));
        }
        if let Some(bad) = events.iter().find(|e| matches!(e, EventType::Other(_))) {
            let known: Vec<&str> = EventType::KNOWN.iter().map(|e| e.as_str()).collect();
            return Err(Rejection::bad_request(format!(
                "unknown event type {:?}; valid types: {}",
                bad.as_str(),
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// `POST /events/webhooks`.
    pub fn create_webhook(&mut self, req: &NewWebhook) -> Res<Webhook> {
        Self::check_webhook_fields(&req.url, &req.events, &req.name)?;
        if req.signature_secret.is_empty() {
            return Err(Rejection::bad_request("signatureSecret must not be empty"));
        }
        if self.webhooks.len() >= self.cfg.max_webhooks {
            return Err(Rejection::new(
                429,
                format!(
                    "maximum number of webhooks reached ({})",
                    self.cfg.max_webhooks
                ),
            ));
        }
        let hook = Webhook {
            id: uuid_from(&mut self.rng),
            team_id: self.cfg.team_id.clone(),
            name: req.name.clone(),
            created_at: self.now,
            enabled: req.enabled,
            url: req.url.clone(),
            events: req.events.clone(),
        };
        self.webhooks.insert(
            hook.id.clone(),
            WebhookRec {
                hook: hook.clone(),
                secret: req.signature_secret.clone(),
            },
        );
        Ok(hook)
    }

    /// `GET /events/webhooks`, oldest first.
    pub fn list_webhooks(&self) -> Vec<Webhook> {
        let mut v: Vec<Webhook> = self.webhooks.values().map(|w| w.hook.clone()).collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    fn webhook_not_found(id: &str) -> Rejection {
        Rejection::new(404, format!("webhook '{id}' not found"))
    }

    /// `GET /events/webhooks/{id}`.
    pub fn get_webhook(&self, id: &str) -> Res<Webhook> {
        self.webhooks
            .get(id)
            .map(|w| w.hook.clone())
            .ok_or_else(|| Self::webhook_not_found(id))
    }

    /// `PATCH /events/webhooks/{id}`: any subset of the fields.
    pub fn update_webhook(&mut self, id: &str, patch: &WebhookPatch) -> Res<Webhook> {
        let current = self.get_webhook(id)?;
        let url = patch.url.clone().unwrap_or(current.url);
        let events = patch.events.clone().unwrap_or(current.events);
        let name = patch.name.clone().unwrap_or(current.name);
        Self::check_webhook_fields(&url, &events, &name)?;
        if patch.signature_secret.as_deref() == Some("") {
            return Err(Rejection::bad_request("signatureSecret must not be empty"));
        }
        let rec = self
            .webhooks
            .get_mut(id)
            .ok_or_else(|| Self::webhook_not_found(id))?;
        rec.hook.url = url;
        rec.hook.events = events;
        rec.hook.name = name;
        if let Some(e) = patch.enabled {
            rec.hook.enabled = e;
        }
        if let Some(s) = &patch.signature_secret {
            rec.secret = s.clone();
        }
        Ok(rec.hook.clone())
    }

    /// `DELETE /events/webhooks/{id}`.
    pub fn delete_webhook(&mut self, id: &str) -> Res<()> {
        self.webhooks
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Self::webhook_not_found(id))
    }

    /// Makes requests fail: `count` requests, or for `duration`, or both (whichever ends first).
    pub fn inject_api_fault(&mut self, mut fault: ApiFault, duration: Option<Duration>) {
        if let Some(d) = duration {
            // A fault that outlasts chrono's range lasts for good.
            fault.until = later(self.now, d);
        }
        if fault.status == 429 && fault.retry_after.is_none() {
            fault.retry_after = Some(1);
        }
        self.api_faults.push(fault);
    }

    /// The fault, if any, that answers a request to `path` now; counts it down.
    pub fn api_fault_for(&mut self, path: &str) -> Option<Rejection> {
        self.api_fault_for_request("", path)
    }

    /// Like [`Core::api_fault_for`], for a request with its method.
    pub fn api_fault_for_request(&mut self, method: &str, path: &str) -> Option<Rejection> {
        let now = self.now;
        let f = self.api_faults.iter_mut().find(|f| {
            f.until.is_none_or(|u| u > now)
                && f.remaining.is_none_or(|r| r > 0)
                && f.path.as_deref().is_none_or(|p| path.starts_with(p))
                && f.method
                    .as_deref()
                    .is_none_or(|m| method.is_empty() || m.eq_ignore_ascii_case(method))
        })?;
        if let Some(r) = &mut f.remaining {
            *r -= 1;
        }
        let message = match f.status {
            429 => "Rate limit exceeded".to_string(),
            503 => "Service unavailable: injected fault".to_string(),
            s => format!("Injected fault: status {s}"),
        };
        let mut r = Rejection::new(f.status, message);
        r.retry_after = f.retry_after;
        Some(r)
    }

    /// Totals and the current state of the load model.
    pub fn stats(&self) -> StatsReport {
        let mut templates = BTreeMap::new();
        for (name, t) in &self.templates {
            let running = self
                .sandboxes
                .values()
                .filter(|s| &s.template == name && s.state == SandboxState::Running)
                .count();
            let booted = *self.booted.get(name).unwrap_or(&0);
            let latest: Vec<f64> = self
                .sandboxes
                .values()
                .filter(|s| &s.template == name && s.state == SandboxState::Running)
                .filter_map(|s| s.metrics.back().map(|m| m.cpu_used_pct))
                .collect();
            let avg_cpu_pct = if latest.is_empty() {
                0.0
            } else {
                latest.iter().sum::<f64>() / latest.len() as f64
            };
            templates.insert(
                name.clone(),
                TemplateReport {
                    demand_cores: self.demand(name),
                    capacity_cores: booted as f64 * f64::from(t.spec.cpu_count),
                    running,
                    booting: running.saturating_sub(booted),
                    avg_cpu_pct,
                    totals: self.per_template.get(name).cloned().unwrap_or_default(),
                },
            );
        }
        let running = self.running_count();
        StatsReport {
            now: self.now,
            elapsed_s: self.elapsed_s(self.now),
            running,
            paused: self.sandboxes.len() - running,
            sandbox_seconds: self.totals.sandbox_seconds,
            unmet_core_seconds: self.totals.unmet_core_seconds,
            demand_core_seconds: self.totals.demand_core_seconds,
            creates: self.totals.creates,
            kills: self.totals.kills,
            kills_by_reason: self.kills_by_reason.clone(),
            events: self.events.len(),
            rejected_rate_limit: self.rejected_rate_limit,
            rejected_concurrency: self.rejected_concurrency,
            templates,
        }
    }
}

/// The 400 for a timeout over E2B's 24-hour maximum.
fn check_timeout(secs: u64) -> Res<()> {
    if secs > MAX_TIMEOUT_SECS {
        return Err(Rejection::bad_request(format!(
            "Timeout cannot be greater than {} hours",
            MAX_TIMEOUT_SECS / 3600
        )));
    }
    Ok(())
}

/// The 400 for a page size outside 1..=100, worded like E2B's request validator.
fn limit_error(limit: u32) -> Rejection {
    let bound = if limit < 1 {
        "at least 1"
    } else {
        "at most 100"
    };
    Rejection::bad_request(format!(
        "parameter \"limit\" in query has an error: number must be {bound}"
    ))
}

/// Drops E2B's `-<clientID>` suffix; more than one `-` is a 400.
pub fn short_id(raw: &str) -> Res<&str> {
    let mut parts = raw.split('-');
    let id = parts.next().unwrap_or_default();
    let _client = parts.next();
    if parts.next().is_some() {
        return Err(Rejection::bad_request(format!(
            "invalid sandbox ID {raw:?}: expected <sandboxID> or <sandboxID>-<clientID>"
        )));
    }
    Ok(id)
}

/// E2B's list cursor: base64url of `<startedAt RFC3339Nano>__<sandboxID>`.
pub fn make_cursor(started_at: DateTime<Utc>, id: &str) -> String {
    URL_SAFE.encode(format!(
        "{}__{}",
        started_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        id
    ))
}

fn parse_cursor(token: &str) -> Option<(DateTime<Utc>, String)> {
    let bytes = URL_SAFE
        .decode(token)
        .or_else(|_| URL_SAFE_NO_PAD.decode(token))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (t, id) = text.split_once("__")?;
    if id.is_empty() || id.contains("__") {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some((t, id.to_string()))
}

fn uuid_from(rng: &mut fastrand::Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests;
