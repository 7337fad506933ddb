//! The pieces both seeded simulation harnesses share (tests/simulation.rs, one agent;
//! tests/simulation_ha.rs, two agents on one store): the rule sets and scenario they play,
//! and [`Chaos`], the emulator behind a faulty network that also watches what it is asked to
//! do. It never drives an agent itself: each harness does, step by step.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use poolpilot::agent::claims::Claims;
use poolpilot::e2b::EventType;
use poolpilot::e2b::{
    Connected, E2bApi, Error, EventQuery, LifecycleEvent, ListQuery, NewSandbox, NewWebhook, Page,
    Result, Sandbox, SandboxInfo, SandboxMetric, SandboxState, Webhook, WebhookPatch,
};
use poolpilot::emulator::core::Delivery;
use poolpilot::emulator::{Core, CoreConfig, InProcess, Scenario};
use poolpilot::rules::{POOL_KEY, RuleSet, load_str};
use tokio::sync::watch;

pub const SECRET: &str = "sim-webhook-secret";

/// A slow create answers within this many steps.
pub const MAX_CREATE_DELAY: u64 = 4;

/// Two rule sets the schedule reloads between, and one that never loads. Pool `w` scales on
/// steps, pool `t` tracks a CPU target (saturation on by default); both replace crashed
/// members. In the second set `t` tracks busy cores under rate policies both ways and a trend
/// forecast that acts, so reloads and restarts land in the middle of their periods and history;
/// and `w` serves claims from an idle band that follows the claim rate, returns released
/// members, parks idle ones paused and rolls old ones.
pub const RULES_A: &str = r#"
pools:
  - name: w
    min: 2
    max: 6
    busy: cpu_used_pct > 60
    scale:
      interval: 2s
      steps:
        - { when: busy_ratio > 0.5, add: 2 }
        - { when: busy_ratio < 0.2, remove: 1 }
  - name: t
    min: 1
    max: 4
    scale:
      interval: 3s
      target: { metric: avg_cpu_used_pct, value: 50, tolerance: 0.1 }
triggers:
  - { name: replace-w, on: killed, pool: w, when: 'kill_reason != "request"', action: replace }
  - { name: replace-t, on: killed, pool: t, when: 'kill_reason != "request"', action: replace }
"#;

pub const RULES_B: &str = r#"
pools:
  - name: w
    min: 1
    max: 3
    busy: cpu_used_pct > 60
    idle: { min: 1, max: 2, lead: 5s }
    claims: { on_release: return, lease: 30s }
    warm: { paused: 2, after: 5s }
    max_age: 10m
    scale:
      interval: 1s
      steps:
        - { when: busy_ratio > 0.3, add: 3 }
        - { when: busy_ratio < 0.3, remove: 2 }
  - name: t
    min: 2
    max: 5
    scale:
      interval: 1s
      target: { metric: busy_cores / size, value: 0.6, tolerance: 0.05 }
      policies:
        up: { rules: [{ pods: 1, per: 2s }, { percent: 50, per: 2s }] }
        down: { select: min, rules: [{ pods: 1, per: 3s }, { percent: 50, per: 3s }] }
      predict: { method: trend, lookback: 2m, horizon: 10s, mode: forecast_and_scale }
triggers:
  - { name: replace-w, on: killed, pool: w, when: 'kill_reason != "request"', action: replace }
"#;

pub const BROKEN: &str = "pools:\n  - { name: w, min: 4, max: 2 }\n";

pub const SCENARIO: &str = r#"
templates:
  base: { cpu_count: 2, memory_mb: 512, disk_mb: 2048, boot: 0s }
initial:
  - { template: base, count: 2, metadata: { owner: someone-else } }
  - { template: base, count: 1, metadata: { poolpilot_pool: retired } }
load:
  - { template: base, points: [[0s, 1], [1m, 9], [3m, 9], [4m, 0.5], [6m, 12], [8m, 2]], noise: 0.2 }
"#;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn load(text: &str) -> std::result::Result<RuleSet, String> {
    load_str(&[("sim.yaml", text)]).map_err(|e| format!("{e:?}"))
}

// ---------------------------------------------------------------------------------------
// The world's side: the emulator behind a faulty network, which also watches the agent.
// ---------------------------------------------------------------------------------------

/// What the faulty API is doing now, and what it saw.
pub struct ChaosState {
    pub rng: fastrand::Rng,
    /// Every call fails (503 or a transport error).
    pub outage: bool,
    /// Chance that any one call fails.
    pub error_rate: f64,
    /// Chance that a metrics sample comes back missing, NaN or infinite.
    pub corrupt_rate: f64,
    /// Creates E2B has been asked for and has not made yet, per pool.
    pub unmade: BTreeMap<String, u32>,
    /// Each pool's max under the rules in force.
    pub max: BTreeMap<String, u32>,
    /// Sandboxes no pool owns: they must never be touched.
    pub foreign: HashSet<String>,
    /// Idempotency-Key -> the sandbox it made.
    pub keys: HashMap<String, String>,
    /// Sandboxes (with their pool) that had no finite sample in the last metrics answer.
    pub bad_metrics: BTreeMap<String, String>,
    /// The running agent's claims: a claimed member must not be killed or paused.
    pub claims: Option<Arc<Claims>>,
    pub violations: Vec<String>,
}

/// [`E2bApi`] over the emulator core, with seeded faults and slow creates.
pub struct Chaos {
    pub inner: InProcess,
    pub core: Arc<Mutex<Core>>,
    pub st: Mutex<ChaosState>,
    /// The harness's step counter; a slow create waits for it.
    pub step: watch::Receiver<u64>,
}

impl Chaos {
    /// The emulator `core` behind calm weather, watching `rules`' maxima and the sandboxes
    /// that exist now (no pool owns them); slow creates wait for `step`.
    pub fn new(
        core: Arc<Mutex<Core>>,
        seed: u64,
        rules: &RuleSet,
        step: watch::Receiver<u64>,
    ) -> Chaos {
        let foreign: HashSet<String> = lock(&core)
            .list(&ListQuery::default())
            .map(|p| p.items)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.sandbox_id)
            .collect();
        Chaos {
            inner: InProcess::new(core.clone()),
            core,
            st: Mutex::new(ChaosState {
                rng: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9),
                outage: false,
                error_rate: 0.0,
                corrupt_rate: 0.0,
                unmade: BTreeMap::new(),
                max: maxima(rules),
                foreign,
                keys: HashMap::new(),
                bad_metrics: BTreeMap::new(),
                claims: None,
                violations: Vec::new(),
            }),
            step,
        }
    }

    pub fn st(&self) -> MutexGuard<'_, ChaosState> {
        lock(&self.st)
    }

    /// A fault for this call, if the schedule says so.
    pub fn fault(&self) -> Option<Error> {
        let mut st = self.st();
        let hit = st.outage || st.rng.f64() < st.error_rate;
        if !hit {
            return None;
        }
        Some(match st.rng.u8(0..4) {
            0 => Error::Server {
                status: 503,
                message: "sim outage".into(),
            },
            1 => Error::Server {
                status: 500,
                message: "sim".into(),
            },
            2 => Error::RateLimited {
                message: "sim".into(),
                retry_after: Some(Duration::from_secs(1)),
            },
            _ => Error::Transport("sim: connection reset".into()),
        })
    }

    /// Pool members that exist now, per the emulator itself.
    pub fn members(&self, pool: &str) -> u32 {
        let core = lock(&self.core);
        let mut q = ListQuery::default();
        q.metadata.insert(POOL_KEY.into(), pool.into());
        q.limit = Some(100);
        let mut n = 0;
        let mut page = core.list(&q).ok();
        while let Some(p) = page {
            n += p
                .items
                .iter()
                .filter(|s| s.state == SandboxState::Running)
                .count() as u32;
            page = p.next_token.and_then(|t| {
                let mut q = q.clone();
                q.next_token = Some(t);
                core.list(&q).ok()
            });
        }
        n
    }

    pub fn check_touch(&self, what: &str, id: &str) {
        let mut st = self.st();
        if st.foreign.contains(id) {
            st.violations
                .push(format!("{what} of {id}, which no pool owns"));
        }
        let claimed = st.claims.as_ref().is_some_and(|c| c.holds(id));
        if claimed && (what == "kill" || what == "pause") {
            st.violations
                .push(format!("{what} of {id}, which a claim holds"));
        }
    }

    pub fn check_create(&self, req: &NewSandbox) -> String {
        let pool = req
            .metadata
            .as_ref()
            .and_then(|m| m.get(POOL_KEY))
            .cloned()
            .unwrap_or_default();
        let members = self.members(&pool);
        let mut st = self.st();
        let unmade = st.unmade.get(&pool).copied().unwrap_or(0);
        let max = st.max.get(&pool).copied().unwrap_or(0);
        if members + unmade + 1 > max {
            st.violations.push(format!(
                "create sent for pool {pool} with {members} members and {unmade} creates under way, max {max}"
            ));
        }
        pool
    }

    pub fn make(&self, req: &NewSandbox, key: &str) -> Result<Sandbox> {
        let made = self.inner_create(req, key)?;
        let mut st = self.st();
        if let Some(prev) = st.keys.insert(key.to_string(), made.sandbox_id.clone())
            && prev != made.sandbox_id
        {
            st.violations.push(format!(
                "Idempotency-Key {key} made two sandboxes: {prev} and {}",
                made.sandbox_id
            ));
        }
        Ok(made)
    }

    pub fn inner_create(&self, req: &NewSandbox, key: &str) -> Result<Sandbox> {
        Ok(lock(&self.core).create(req, true, Some(key))?)
    }

    /// Waits until the harness's step reaches `step`.
    pub async fn wait_for_step(&self, step: u64) {
        let mut rx = self.step.clone();
        let _ = rx.wait_for(|s| *s >= step).await;
    }
}

#[async_trait]
impl E2bApi for Chaos {
    async fn create_sandbox(&self, req: &NewSandbox, key: &str) -> Result<Sandbox> {
        let pool = self.check_create(req);
        let now = *self.step.borrow();
        let (delay, make_first, lose_answer) = {
            let mut st = self.st();
            (
                st.rng.u64(0..MAX_CREATE_DELAY),
                st.rng.bool(),
                st.rng.f64() < 0.1,
            )
        };
        if let Some(e) = self.fault() {
            return Err(e);
        }
        if make_first {
            // E2B makes it at once; the answer comes later, or never.
            let made = self.make(req, key);
            self.wait_for_step(now + delay).await;
            return match made {
                Ok(_) if lose_answer => Err(Error::Transport("sim: answer lost".into())),
                other => other,
            };
        }
        *self.st().unmade.entry(pool.clone()).or_default() += 1;
        self.wait_for_step(now + delay).await;
        let made = self.make(req, key);
        if let Some(n) = self.st().unmade.get_mut(&pool) {
            *n = n.saturating_sub(1);
        }
        made
    }

    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>> {
        if let Some(e) = self.fault() {
            return Err(e);
        }
        self.inner.list_sandboxes_page(query).await
    }

    async fn get_sandbox(&self, id: &str) -> Result<SandboxInfo> {
        self.inner.get_sandbox(id).await
    }

    async fn kill_sandbox(&self, id: &str) -> Result<()> {
        self.check_touch("kill", id);
        if let Some(e) = self.fault() {
            return Err(e);
        }
        self.inner.kill_sandbox(id).await
    }

    async fn set_timeout(&self, id: &str, secs: u64) -> Result<()> {
        self.check_touch("set_timeout", id);
        self.inner.set_timeout(id, secs).await
    }

    async fn pause_sandbox(&self, id: &str) -> Result<()> {
        self.check_touch("pause", id);
        self.inner.pause_sandbox(id).await
    }

    async fn connect_sandbox(&self, id: &str, secs: u64) -> Result<Connected> {
        self.check_touch("connect", id);
        self.inner.connect_sandbox(id, secs).await
    }

    async fn sandbox_metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        self.inner.sandbox_metrics(id, start, end).await
    }

    async fn metrics_batch(&self, ids: &[String]) -> Result<BTreeMap<String, SandboxMetric>> {
        if let Some(e) = self.fault() {
            return Err(e);
        }
        let mut got = self.inner.metrics_batch(ids).await?;
        let pools: BTreeMap<String, String> = {
            let core = lock(&self.core);
            ids.iter()
                .filter_map(|id| {
                    let info = core.get(id).ok()?;
                    let pool = info.metadata?.get(POOL_KEY)?.clone();
                    Some((id.clone(), pool))
                })
                .collect()
        };
        let mut st = self.st();
        st.bad_metrics.clear();
        for id in ids {
            let roll = st.rng.f64();
            if roll < st.corrupt_rate {
                match st.rng.u8(0..3) {
                    0 => {
                        got.remove(id);
                    }
                    1 => {
                        if let Some(m) = got.get_mut(id) {
                            m.cpu_used_pct = f64::NAN;
                        }
                    }
                    _ => {
                        if let Some(m) = got.get_mut(id) {
                            m.cpu_used_pct = f64::INFINITY;
                        }
                    }
                }
            }
            let good = got.get(id).is_some_and(|m| m.cpu_used_pct.is_finite());
            if !good && let Some(pool) = pools.get(id) {
                st.bad_metrics.insert(id.clone(), pool.clone());
            }
        }
        Ok(got)
    }

    async fn events_page(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        if let Some(e) = self.fault() {
            return Err(e);
        }
        self.inner.events_page(sandbox_id, query).await
    }

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook> {
        self.inner.create_webhook(req).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.inner.list_webhooks().await
    }

    async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        self.inner.get_webhook(id).await
    }

    async fn update_webhook(&self, id: &str, patch: &WebhookPatch) -> Result<Webhook> {
        self.inner.update_webhook(id, patch).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.inner.delete_webhook(id).await
    }
}

/// Lets every task that is ready run (one thread: they run when this one yields).
pub async fn let_tasks_run() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

pub fn maxima(rules: &RuleSet) -> BTreeMap<String, u32> {
    rules
        .pools
        .iter()
        .map(|p| (p.name.clone(), p.max))
        .collect()
}

/// Every event the emulator has recorded.
pub fn all_events(core: &Arc<Mutex<Core>>) -> Vec<LifecycleEvent> {
    let core = lock(core);
    let mut out = Vec::new();
    let mut q = EventQuery {
        offset: 0,
        limit: 100,
        order_asc: true,
        types: Vec::new(),
    };
    loop {
        let page = core.events(None, &q).unwrap_or_default();
        let n = page.len();
        out.extend(page);
        if n < 100 {
            return out;
        }
        q.offset += n as u64;
    }
}
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the network does with fresh webhook deliveries: most go now, some late, some twice,
/// some never. The deliveries due now (fresh ones and held ones whose step has come),
/// shuffled; the late ones wait in `held` as (the step to deliver at, the delivery).
pub fn route_deliveries(
    rng: &mut fastrand::Rng,
    step: u64,
    fresh: Vec<Delivery>,
    held: &mut Vec<(u64, Delivery)>,
    trail: &mut Vec<String>,
) -> Vec<Delivery> {
    let mut now_batch = Vec::new();
    for d in fresh {
        let event = serde_json::from_slice::<LifecycleEvent>(&d.body)
            .map(|e| e.id)
            .unwrap_or_default();
        match rng.u8(0..10) {
            0 => trail.push(format!("drop delivery of {event}")),
            1 | 2 => held.push((step + rng.u64(1..20), d)),
            3 => {
                now_batch.push(d.clone());
                held.push((step + rng.u64(1..10), d));
            }
            _ => now_batch.push(d),
        }
    }
    let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _)| *at <= step);
    *held = later;
    now_batch.extend(due.into_iter().map(|(_, d)| d));
    rng.shuffle(&mut now_batch);
    now_batch
}

/// A running member of pool `w` or `t` dies for a reason nobody asked for: its id.
pub fn crash_member(core: &Arc<Mutex<Core>>, rng: &mut fastrand::Rng) -> Option<String> {
    let mut core = lock(core);
    let q = ListQuery {
        limit: Some(100),
        ..Default::default()
    };
    let members: Vec<String> = core
        .list(&q)
        .map(|p| p.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.state == SandboxState::Running
                && s.metadata
                    .as_ref()
                    .is_some_and(|m| m.get(POOL_KEY).is_some_and(|p| p == "w" || p == "t"))
        })
        .map(|s| s.sandbox_id)
        .collect();
    let id = rng.choice(members.iter())?.clone();
    let _ = core.kill_with_reason(&id, "oom");
    Some(id)
}

impl Chaos {
    /// Changes the faults: an outage, an error rate, corrupt metrics, or calm; what they are.
    pub fn change_weather(&self, rng: &mut fastrand::Rng) -> String {
        let mut st = self.st();
        match rng.u8(0..4) {
            0 => st.outage = !st.outage,
            1 => st.error_rate = [0.0, 0.05, 0.2, 0.5][rng.usize(0..4)],
            2 => st.corrupt_rate = [0.0, 0.1, 0.5, 1.0][rng.usize(0..4)],
            _ => {
                drop(st);
                self.calm_weather();
                st = self.st();
            }
        }
        format!(
            "weather: outage {} errors {} corrupt {}",
            st.outage, st.error_rate, st.corrupt_rate
        )
    }

    /// No outage, no errors, no corrupt metrics.
    pub fn calm_weather(&self) {
        let mut st = self.st();
        st.outage = false;
        st.error_rate = 0.0;
        st.corrupt_rate = 0.0;
    }
}

/// What is wrong when some event E2B recorded was never handled (`handled` says which were).
pub fn never_handled(core: &Arc<Mutex<Core>>, handled: impl Fn(&str) -> bool) -> Option<String> {
    let all = all_events(core);
    let missed: Vec<&LifecycleEvent> = all.iter().filter(|e| !handled(&e.id)).collect();
    let e = missed.first()?;
    Some(format!(
        "{} of {} events were never handled, e.g. {} ({:?} of {} at {})",
        missed.len(),
        all.len(),
        e.id,
        e.event_type,
        e.sandbox_id,
        e.timestamp
    ))
}

thread_local! {
    /// Set by the panic hook of [`run_seeds`]: a panic on the simulation's thread (the agents'
    /// own tasks included, since everything runs on it) fails the seed.
    static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether anything on this thread panicked since [`run_seeds`] began.
pub fn panicked() -> bool {
    PANICKED.with(|p| p.get())
}

/// Runs `run(seed, steps)` for the seeds the environment names: `{env}_SEED` alone, or
/// `{env}_SEEDS` (default `seeds`) from `{env}_FIRST` (default 1), `{env}_STEPS` steps each
/// (default `steps`).
pub fn run_seeds(env: &str, seeds: u64, steps: u64, run: impl Fn(u64, u64)) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.with(|p| p.set(true));
        hook(info);
    }));
    let steps = env_u64(&format!("{env}_STEPS"), steps);
    let list: Vec<u64> = match std::env::var(format!("{env}_SEED")) {
        Ok(s) => vec![s.parse().expect("the seed is a number")],
        Err(_) => {
            let first = env_u64(&format!("{env}_FIRST"), 1);
            (first..first + env_u64(&format!("{env}_SEEDS"), seeds)).collect()
        }
    };
    for seed in &list {
        run(*seed, steps);
    }
    println!("{} seeds of {steps} steps: every promise held", list.len());
}

/// A seed's world before any agent starts: the scenario playing in the emulator with the
/// agents' webhook, the faulty API over it in calm weather, rules A, and a fresh temp dir.
pub struct World {
    pub core: Arc<Mutex<Core>>,
    pub chaos: Arc<Chaos>,
    /// The harness's step counter, which slow creates wait for.
    pub step_tx: watch::Sender<u64>,
    pub rules: Arc<RuleSet>,
    pub dir: std::path::PathBuf,
}

impl World {
    /// The world of `seed`; `name` names its temp dir.
    pub fn new(seed: u64, name: &str) -> World {
        let start: DateTime<Utc> = "2026-11-27T00:00:00Z".parse().unwrap();
        let scenario = Scenario::parse("sim.yaml", SCENARIO).unwrap();
        let mut core = Core::new(CoreConfig::default(), &scenario, start);
        core.create_webhook(&NewWebhook {
            name: "agent".into(),
            url: "http://127.0.0.1:9/webhooks/e2b".into(),
            enabled: true,
            events: EventType::KNOWN.to_vec(),
            signature_secret: SECRET.into(),
        })
        .unwrap();
        let core = Arc::new(Mutex::new(core));
        let (step_tx, step_rx) = watch::channel(0);
        let rules = Arc::new(load(RULES_A).unwrap());
        let chaos = Arc::new(Chaos::new(core.clone(), seed, &rules, step_rx));
        let dir = std::env::temp_dir().join(format!(
            "poolpilot-{name}-{}-{seed}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        World {
            core,
            chaos,
            step_tx,
            rules,
            dir,
        }
    }
}
