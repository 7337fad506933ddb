//! The seeded simulation harness with two agents and a store that fails (issue 14): two
//! in-process replicas of the real [`Agent`], each with its webhook receiver, its own state
//! dir and its own [`Leadership`], share one store (an SQLite file both open, the same SQL the
//! PostgreSQL store runs) and contend for the leader's lease, against the in-process emulator
//! behind the faulty API of tests/simulation.rs ([`sim::Chaos`]). On top of that API's faults,
//! a seeded schedule interleaves:
//! - both replicas ticking and reacting, and webhook deliveries to either (on time, late,
//!   twice, out of order, or never), as a load balancer in front of them would spread them;
//! - lease renewals on the replicas' own period, stepped by the harness;
//! - the store failing for every replica (every call errors for a while, then recovers), or
//!   for one (a partition);
//! - one replica paused (it neither turns nor renews while the other goes on: SIGSTOP);
//! - kill -9 of the leader (dropped without saving or giving the lease up) and its restart,
//!   and graceful restarts of either.
//!
//! After every step it checks the promises:
//! - at most one replica acts at any moment: every create, kill, pause and timeout E2B is
//!   asked for comes from the replica the lease row names, while the row is live, and every
//!   create carries that row's generation in its `poolpilot_generation` metadata;
//! - no Idempotency-Key makes two sandboxes;
//! - no create is sent while the pool's true size (members plus creates E2B is still making)
//!   is already at max;
//! - every event is handed to an engine at most once across both replicas;
//! - nothing panics;
//!
//! and at the end, after a calm period: every pool within [min, max] and exactly one leader.
//!
//! Everything runs on one thread on tokio's paused clock, which moves only when the harness
//! moves the emulator's (auto-advance is held off while SQLite answers, so the wait for the
//! store never moves time), and the lease reads the same virtual time, so a seed replays (up to
//! the agents' random Idempotency-Keys and hash orders, which rarely change its path):
//! - `cargo test --test simulation_ha` runs `POOLPILOT_SIM_HA_SEEDS` seeds (default 16) from
//!   `POOLPILOT_SIM_HA_FIRST` (default 1), `POOLPILOT_SIM_HA_STEPS` steps each (default 300);
//! - a failure prints its seed and its last steps; `POOLPILOT_SIM_HA_SEED=<seed>` replays that
//!   one alone, and `POOLPILOT_SIM_TRACE=1` prints every step as it goes;
//! - the soak: `POOLPILOT_SIM_HA_SEEDS=2000 cargo test --release --test simulation_ha`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use poolpilot::agent::control::TickReport;
use poolpilot::agent::leader::Leadership;
use poolpilot::e2b::{
    Connected, E2bApi, EventQuery, LifecycleEvent, ListQuery, NewSandbox, NewWebhook, Page, Result,
    Sandbox, SandboxInfo, SandboxMetric, Webhook, WebhookPatch,
};
use poolpilot::emulator::core::Delivery;
use poolpilot::emulator::{Core, CoreConfig, Scenario};
use poolpilot::rules::RuleSet;
use poolpilot::simulate::world::{AgentWiring, InProcessAgent};
use poolpilot::store::lease::{LEADER, Lease};
use poolpilot::store::shared::Shared;
use poolpilot::store::{History, Retention, sqlite_url};
use sqlx::Row as _;
use tokio::sync::watch;

mod sim;
use sim::*;

/// How long a renewal holds the lease; replicas renew every third of it.
const TTL: Duration = Duration::from_secs(9);
/// The metadata key naming the generation that created a sandbox.
const GENERATION_KEY: &str = "poolpilot_generation";
/// The replicas.
const REPLICAS: usize = 2;

// ---------------------------------------------------------------------------------------
// Who may act: the lease row as the store holds it, and each replica's seat at the API.
// ---------------------------------------------------------------------------------------

/// The lease row, read after every change the harness makes to it (renewals, releases): the
/// row changes only then, so between reads this is what the store holds.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    holder: String,
    generation: u64,
    expires_ms: i64,
}

/// One replica's connection to E2B: [`Chaos`], checking that whoever asks to act holds the
/// lease at that moment.
struct Seat {
    chaos: Arc<Chaos>,
    name: String,
    row: Arc<Mutex<Row>>,
}

impl Seat {
    /// A violation unless this replica holds the live lease now (with `generation`, for a
    /// create, which must name one).
    fn check_acting(&self, what: &str, id: &str, generation: Option<Option<&String>>) {
        let row = lock(&self.row).clone();
        let now = lock(&self.chaos.core).now().timestamp_millis();
        let mut problems = Vec::new();
        if row.holder != self.name {
            problems.push(format!("the lease names {:?}", row.holder));
        }
        if row.expires_ms < now {
            problems.push(format!("the lease ran out {} ms ago", now - row.expires_ms));
        }
        if let Some(g) = generation {
            let carried = g.and_then(|g| g.parse::<u64>().ok());
            if carried != Some(row.generation) {
                problems.push(format!(
                    "it carries generation {g:?}, the lease is at {}",
                    row.generation
                ));
            }
        }
        if !problems.is_empty() {
            self.chaos.st().violations.push(format!(
                "{} asked E2B to {what} {id}, but {}",
                self.name,
                problems.join(" and ")
            ));
        }
    }
}

#[async_trait]
impl E2bApi for Seat {
    async fn create_sandbox(&self, req: &NewSandbox, key: &str) -> Result<Sandbox> {
        let g = req.metadata.as_ref().and_then(|m| m.get(GENERATION_KEY));
        self.check_acting("create", key, Some(g));
        self.chaos.create_sandbox(req, key).await
    }

    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>> {
        self.chaos.list_sandboxes_page(query).await
    }

    async fn get_sandbox(&self, id: &str) -> Result<SandboxInfo> {
        self.chaos.get_sandbox(id).await
    }

    async fn kill_sandbox(&self, id: &str) -> Result<()> {
        self.check_acting("kill", id, None);
        self.chaos.kill_sandbox(id).await
    }

    async fn set_timeout(&self, id: &str, secs: u64) -> Result<()> {
        self.check_acting("set the timeout of", id, None);
        self.chaos.set_timeout(id, secs).await
    }

    async fn pause_sandbox(&self, id: &str) -> Result<()> {
        self.check_acting("pause", id, None);
        self.chaos.pause_sandbox(id).await
    }

    async fn connect_sandbox(&self, id: &str, secs: u64) -> Result<Connected> {
        self.check_acting("resume", id, None);
        self.chaos.connect_sandbox(id, secs).await
    }

    async fn sandbox_metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        self.chaos.sandbox_metrics(id, start, end).await
    }

    async fn metrics_batch(&self, ids: &[String]) -> Result<BTreeMap<String, SandboxMetric>> {
        self.chaos.metrics_batch(ids).await
    }

    async fn events_page(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        self.chaos.events_page(sandbox_id, query).await
    }

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook> {
        self.chaos.create_webhook(req).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.chaos.list_webhooks().await
    }

    async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        self.chaos.get_webhook(id).await
    }

    async fn update_webhook(&self, id: &str, patch: &WebhookPatch) -> Result<Webhook> {
        self.chaos.update_webhook(id, patch).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.chaos.delete_webhook(id).await
    }
}

// ---------------------------------------------------------------------------------------
// A replica: one agent process sharing the store.
// ---------------------------------------------------------------------------------------

/// A running replica process.
struct Running {
    name: String,
    proc: InProcessAgent,
    leadership: Leadership,
    history: History,
    /// When it last renewed (or tried to), on the virtual clock.
    renewed: DateTime<Utc>,
}

/// One replica's slot: its process (None while it is dead) and its host's state dir.
struct Replica {
    running: Option<Running>,
    dir: PathBuf,
    /// It is paused (SIGSTOP) until this step.
    paused_until: u64,
    /// Processes started in this slot, for unique replica names.
    starts: u32,
}

/// What a replica process is started with.
struct Start<'a> {
    chaos: &'a Arc<Chaos>,
    row: &'a Arc<Mutex<Row>>,
    rules: &'a Arc<RuleSet>,
    store: &'a Path,
}

impl Replica {
    /// Starts a new process in this slot, wired as `poolpilot run` wires a replica: the agent
    /// and its receiver over its seat, sharing the store, standing by until it leads.
    async fn start(&mut self, slot: usize, with: &Start<'_>) {
        self.starts += 1;
        let name = format!("replica-{slot}.{}", self.starts);
        let core = with.chaos.core.clone();
        let clock: poolpilot::store::Clock = Arc::new(move || lock(&core).now());
        let seat: Arc<dyn E2bApi> = Arc::new(Seat {
            chaos: with.chaos.clone(),
            name: name.clone(),
            row: with.row.clone(),
        });
        let wiring = AgentWiring {
            secret: SECRET.into(),
            clock: clock.clone(),
            events_every: Duration::from_secs(5),
            state_dir: Some(self.dir.clone()),
        };
        let mut proc = InProcessAgent::start(seat, with.rules.clone(), wiring)
            .unwrap_or_else(|e| panic!("{name} cannot start: {e}"));
        let history = History::open(&sqlite_url(with.store), Retention::default(), clock.clone())
            .await
            .unwrap_or_else(|e| panic!("{name} cannot open the store: {e:#}"));
        let lease = Lease::new(&history, LEADER, &name, TTL)
            .await
            .unwrap_or_else(|e| panic!("{name} cannot set up the lease: {e}"))
            .with_clock(Arc::new(move || clock().timestamp_millis()));
        let leadership = Leadership::stepped(lease);
        proc.agent
            .share(Shared::new(&history, &name), leadership.fence.clone());
        self.running = Some(Running {
            name,
            proc,
            leadership,
            history,
            renewed: DateTime::<Utc>::MIN_UTC,
        });
    }

    /// Whether it turns now: running and not paused.
    fn awake(&self, step: u64) -> bool {
        self.running.is_some() && self.paused_until <= step
    }
}

// ---------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    core: Arc<Mutex<Core>>,
    chaos: Arc<Chaos>,
    step_tx: watch::Sender<u64>,
    step: u64,
    rules: Arc<RuleSet>,
    replicas: Vec<Replica>,
    /// The lease row, as every seat checks it.
    row: Arc<Mutex<Row>>,
    /// The harness's own handle on the store (never failing), to read the lease row.
    store: History,
    dir: PathBuf,
    /// The store fails for every replica until this step.
    store_down_until: u64,
    /// Deliveries held back: (the step to deliver at, the delivery).
    held: Vec<(u64, Delivery)>,
    /// Event id -> the replica that handed it to its engine, and when.
    handled: HashMap<String, String>,
    trail: Vec<String>,
}

impl Sim {
    async fn new(seed: u64) -> Sim {
        let World {
            core,
            chaos,
            step_tx,
            rules,
            dir,
        } = World::new(seed, "sim-ha");
        let store_dir = dir.join("store");
        std::fs::create_dir_all(&store_dir).unwrap();
        let c = core.clone();
        let store = History::open(
            &sqlite_url(&store_dir),
            Retention::default(),
            Arc::new(move || lock(&c).now()),
        )
        .await
        .unwrap();
        let replicas = (0..REPLICAS)
            .map(|i| Replica {
                running: None,
                dir: dir.join(format!("host-{i}")),
                paused_until: 0,
                starts: 0,
            })
            .collect();
        let mut sim = Sim {
            seed,
            rng: fastrand::Rng::with_seed(seed),
            core,
            chaos,
            step_tx,
            step: 0,
            rules,
            replicas,
            row: Arc::default(),
            store,
            dir,
            store_down_until: 0,
            held: Vec::new(),
            handled: HashMap::new(),
            trail: Vec::new(),
        };
        for i in 0..REPLICAS {
            sim.start(i).await;
        }
        sim
    }

    fn now(&self) -> DateTime<Utc> {
        lock(&self.core).now()
    }

    async fn start(&mut self, slot: usize) {
        let with = Start {
            chaos: &self.chaos,
            row: &self.row,
            rules: &self.rules,
            store: &self.dir.join("store"),
        };
        self.replicas[slot].start(slot, &with).await;
        self.replicas[slot].paused_until = 0;
        self.apply_store_weather();
        let name = &self.replicas[slot].running.as_ref().unwrap().name;
        self.trail.push(format!("start {name}"));
    }

    /// One step of the schedule, chosen by the seed.
    async fn step(&mut self) {
        let traced = self.trail.len();
        self.step += 1;
        let _ = self.step_tx.send(self.step);
        let_tasks_run().await;
        self.apply_store_weather();
        match self.rng.u32(0..100) {
            0..=29 => {
                let by = Duration::from_millis(self.rng.u64(200..4000));
                self.advance(by).await;
            }
            30..=49 => self.turn_any(false).await,
            50..=59 => self.turn_any(true).await,
            60..=63 => self.renew_any().await,
            64..=67 => self.crash(),
            68..=70 => self.kill_leader(),
            71..=72 => self.restart_gracefully().await,
            73..=78 => self.revive().await,
            79..=81 => self.pause(),
            82..=86 => self.store_weather(),
            87..=90 => self.api_weather(),
            _ => self.settle().await,
        }
        self.trace_since(traced);
        self.check_step();
    }

    /// A replica that is awake, chosen by the seed.
    fn pick_awake(&mut self) -> Option<usize> {
        let awake: Vec<usize> = (0..REPLICAS)
            .filter(|i| self.replicas[*i].awake(self.step))
            .collect();
        self.rng.choice(awake)
    }

    /// An awake replica follows its role and, if it leads, ticks (or reacts to webhooks).
    async fn turn_any(&mut self, react: bool) {
        if let Some(i) = self.pick_awake() {
            self.turn(i, react).await;
        }
    }

    async fn turn(&mut self, i: usize, react: bool) {
        let now = self.now();
        let Some(r) = self.replicas[i].running.as_mut() else {
            return;
        };
        let leads = r.leadership.follow(&mut r.proc.agent, now).await;
        let report: TickReport = match (leads, react) {
            (false, _) => {
                self.trail.push(format!("{} stands by", r.name));
                return;
            }
            (true, true) => r.proc.agent.react(now).await,
            (true, false) => r.proc.agent.tick(now).await,
        };
        self.trail.push(format!(
            "{} {}: observed {} events {} decisions {}{}",
            r.name,
            if react { "reacts" } else { "ticks" },
            report.observed,
            report.events,
            report.decisions,
            report
                .error
                .map(|e| format!(" error {e}"))
                .unwrap_or_default()
        ));
        // A turn the store refused handed nothing to the engine: it says so, and lists none.
        let by = format!("{} at step {}", r.name, self.step);
        self.count_handled(&report.handled, by);
    }

    fn count_handled(&mut self, ids: &[String], by: String) {
        for id in ids {
            if let Some(first) = self.handled.insert(id.clone(), by.clone()) {
                let msg = format!("event {id} handled twice: by {first}, then by {by}");
                self.fail(msg);
            }
        }
    }

    /// An awake replica renews (or tries to take) the lease out of its period.
    async fn renew_any(&mut self) {
        if let Some(i) = self.pick_awake() {
            self.renew(i).await;
        }
    }

    /// One renewal by replica `i`, then the row as the store now holds it.
    async fn renew(&mut self, i: usize) {
        let now = self.now();
        let Some(r) = self.replicas[i].running.as_mut() else {
            return;
        };
        r.renewed = now;
        let role = r.leadership.turn().await;
        self.trail.push(format!("{} renews: {role:?}", r.name));
        self.read_row().await;
    }

    /// Every awake replica whose period has come renews, in a seeded order.
    async fn renew_due(&mut self) {
        let now = self.now();
        let mut due: Vec<usize> = (0..REPLICAS)
            .filter(|i| {
                let r = &self.replicas[*i];
                r.awake(self.step)
                    && r.running
                        .as_ref()
                        .is_some_and(|r| (now - r.renewed).to_std().unwrap_or_default() >= TTL / 3)
            })
            .collect();
        self.rng.shuffle(&mut due);
        for i in due {
            self.renew(i).await;
        }
    }

    /// Reads the lease row with the harness's own handle, which never fails.
    async fn read_row(&mut self) {
        let r = sqlx::query("SELECT holder, generation, expires_ms FROM leases WHERE name = $1")
            .bind(LEADER)
            .fetch_optional(self.store.pool())
            .await
            .unwrap_or_else(|e| panic!("the harness cannot read the lease row: {e}"));
        let row = r
            .map(|r| Row {
                holder: r.get("holder"),
                generation: r.get::<i64, _>("generation").max(0) as u64,
                expires_ms: r.get("expires_ms"),
            })
            .unwrap_or_default();
        *lock(&self.row) = row;
    }

    /// A pool member dies for a reason nobody asked for.
    fn crash(&mut self) {
        if let Some(id) = crash_member(&self.core, &mut self.rng) {
            self.trail.push(format!("crash {id}"));
        }
    }

    /// kill -9 of the replica the lease names: dropped without saving or giving the lease up.
    fn kill_leader(&mut self) {
        let holder = lock(&self.row).holder.clone();
        let Some(slot) = self
            .replicas
            .iter_mut()
            .find(|r| r.running.as_ref().is_some_and(|p| p.name == holder))
        else {
            return;
        };
        drop(slot.running.take());
        self.trail.push(format!("kill -9 {holder}"));
    }

    /// A replica stops as at SIGTERM (creates awaited, state saved, lease given up) and a new
    /// process starts in its place.
    async fn restart_gracefully(&mut self) {
        let Some(i) = self.pick_awake() else { return };
        self.release_creates().await;
        let Some(mut r) = self.replicas[i].running.take() else {
            return;
        };
        r.proc.agent.settle().await;
        r.proc.agent.persist().await;
        r.leadership.stop().await;
        self.read_row().await;
        self.trail.push(format!("stop {} (graceful)", r.name));
        self.start(i).await;
    }

    /// A dead replica's process starts again (systemd's restart).
    async fn revive(&mut self) {
        let dead: Vec<usize> = (0..REPLICAS)
            .filter(|i| self.replicas[*i].running.is_none())
            .collect();
        if let Some(i) = self.rng.choice(dead) {
            self.start(i).await;
        }
    }

    /// A running replica stops turning and renewing for a while (SIGSTOP ... SIGCONT).
    fn pause(&mut self) {
        let Some(i) = self.pick_awake() else { return };
        let steps = self.rng.u64(3..40);
        self.replicas[i].paused_until = self.step + steps;
        let name = &self.replicas[i].running.as_ref().unwrap().name;
        self.trail.push(format!("pause {name} for {steps} steps"));
    }

    /// The store goes down for every replica for a while, or for one (a partition), or
    /// comes back.
    fn store_weather(&mut self) {
        match self.rng.u8(0..3) {
            0 => {
                let steps = self.rng.u64(3..50);
                self.store_down_until = self.step + steps;
                self.trail.push(format!("store down for {steps} steps"));
            }
            1 => {
                let i = self.rng.usize(0..REPLICAS);
                if let Some(r) = &self.replicas[i].running {
                    let on = !r.history.faults().failing();
                    r.history.faults().fail(on);
                    self.trail
                        .push(format!("{} partitioned from the store: {on}", r.name));
                }
            }
            _ => {
                self.store_down_until = 0;
                for r in self.replicas.iter().filter_map(|r| r.running.as_ref()) {
                    r.history.faults().fail(false);
                }
                self.trail.push("store up".into());
            }
        }
        self.apply_store_weather();
    }

    /// While the store is down, it fails for every replica.
    fn apply_store_weather(&mut self) {
        if self.store_down_until > self.step {
            for r in self.replicas.iter().filter_map(|r| r.running.as_ref()) {
                r.history.faults().fail(true);
            }
        } else if self.store_down_until != 0 {
            self.store_down_until = 0;
            for r in self.replicas.iter().filter_map(|r| r.running.as_ref()) {
                r.history.faults().fail(false);
            }
            self.trail.push("store back".into());
        }
    }

    /// Changes the API's faults: an outage, an error rate, corrupt metrics.
    fn api_weather(&mut self) {
        let w = self.chaos.change_weather(&mut self.rng);
        self.trail.push(w);
    }

    /// Moves virtual time on (the emulator's and tokio's together), lets the replicas whose
    /// period has come renew, and passes the emulator's webhooks on.
    async fn advance(&mut self, by: Duration) {
        let fresh = {
            let mut core = lock(&self.core);
            core.advance(by);
            core.take_outbox()
        };
        tokio::time::advance(by).await;
        let now = self.now().format("%H:%M:%S%.3f");
        self.trail.push(format!("advance {by:?} to {now}"));
        self.renew_due().await;
        let now_batch = route_deliveries(
            &mut self.rng,
            self.step,
            fresh,
            &mut self.held,
            &mut self.trail,
        );
        for d in now_batch {
            self.deliver(d).await;
        }
    }

    /// Posts one delivery to an awake replica's receiver (a load balancer's pick); with none
    /// awake, or a refusal, E2B sends it again later.
    async fn deliver(&mut self, d: Delivery) {
        let Some(i) = self.pick_awake() else {
            self.held.push((self.step + 1, d));
            return;
        };
        let r = self.replicas[i].running.as_ref().unwrap();
        let status = r.proc.receiver.post(&d).await;
        if status.is_server_error() {
            self.held.push((self.step + 1, d));
        } else if !status.is_success() {
            self.fail(format!("the receiver refused a good delivery: {status}"));
        }
    }

    /// Lets every slow create answer: they wait for steps.
    async fn release_creates(&mut self) {
        let_tasks_run().await;
        self.step += MAX_CREATE_DELAY;
        let _ = self.step_tx.send(self.step);
    }

    /// Waits for the creates in flight of every awake replica.
    async fn settle(&mut self) {
        self.release_creates().await;
        for i in 0..REPLICAS {
            if self.replicas[i].awake(self.step)
                && let Some(r) = self.replicas[i].running.as_mut()
            {
                r.proc.agent.settle().await;
            }
        }
        self.trail.push("settle".into());
    }

    /// Prints the trail's entries from `from` on, with `POOLPILOT_SIM_TRACE` set.
    fn trace_since(&self, from: usize) {
        if std::env::var_os("POOLPILOT_SIM_TRACE").is_some() {
            for line in self.trail.iter().skip(from) {
                eprintln!("seed {} step {}: {line}", self.seed, self.step);
            }
        }
    }

    fn fail(&self, msg: String) -> ! {
        let tail: Vec<&str> = self
            .trail
            .iter()
            .rev()
            .take(30)
            .map(String::as_str)
            .collect();
        panic!(
            "seed {}: step {}: {msg}\nreplay: POOLPILOT_SIM_HA_SEED={} cargo test --test simulation_ha\nlast steps, newest first:\n  {}",
            self.seed,
            self.step,
            self.seed,
            tail.join("\n  ")
        );
    }

    /// The promises, after every step: the seats' and the API's findings, and no panic.
    fn check_step(&mut self) {
        if panicked() {
            self.fail("a panic (see above)".into());
        }
        let violations = std::mem::take(&mut self.chaos.st().violations);
        if let Some(v) = violations.into_iter().next() {
            self.fail(v);
        }
    }

    /// The end: calm weather, every replica running and awake, every delivery through; then
    /// the pools are within their bounds and exactly one replica leads.
    async fn finish(&mut self) {
        self.calm().await;
        for _ in 0..120 {
            self.advance(Duration::from_secs(2)).await;
            for i in 0..REPLICAS {
                self.turn(i, false).await;
            }
            self.settle().await;
            self.check_step();
        }
        // The last actions' events: delivered, and event polls go by.
        let held: Vec<Delivery> = self.held.drain(..).map(|(_, d)| d).collect();
        for d in held {
            self.deliver(d).await;
        }
        // Until two rounds bring nothing new: members keep expiring at their E2B timeout and
        // being replaced, and each replacement has its own events.
        let mut quiet = 0;
        for _ in 0..100 {
            let handled = self.handled.len();
            self.advance(Duration::from_secs(6)).await;
            for i in 0..REPLICAS {
                self.turn(i, false).await;
            }
            self.settle().await;
            self.check_step();
            let all = all_events(&self.core).len();
            quiet = if self.handled.len() == handled && all <= handled {
                quiet + 1
            } else {
                0
            };
            if quiet >= 2 {
                break;
            }
        }
        self.check_every_event_once();
        for pool in &self.rules.pools {
            let n = self.chaos.members(&pool.name);
            if n < pool.min || n > pool.max {
                let msg = format!(
                    "after the calm, pool {} has {n} members, outside [{}, {}]",
                    pool.name, pool.min, pool.max
                );
                self.fail(msg);
            }
        }
        self.check_one_leader();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Clears every fault, wakes and starts every replica, delivers what is held.
    async fn calm(&mut self) {
        self.chaos.calm_weather();
        self.store_down_until = 0;
        for i in 0..REPLICAS {
            self.replicas[i].paused_until = 0;
            match &self.replicas[i].running {
                Some(r) => r.history.faults().fail(false),
                None => self.start(i).await,
            }
        }
        self.trail.push("calm".into());
        let held: Vec<Delivery> = self.held.drain(..).map(|(_, d)| d).collect();
        for d in held {
            self.deliver(d).await;
        }
    }

    /// Every event E2B recorded was handed to an engine (at most once is checked as they are).
    fn check_every_event_once(&self) {
        if let Some(msg) = never_handled(&self.core, |id| self.handled.contains_key(id)) {
            self.fail(msg);
        }
    }

    /// Exactly one replica may act, it is the one the live lease row names, and its agent
    /// leads with the row's generation.
    fn check_one_leader(&self) {
        let row = lock(&self.row).clone();
        let acting: Vec<(&str, u64, Option<u64>)> = self
            .replicas
            .iter()
            .filter_map(|r| r.running.as_ref())
            .filter_map(|r| {
                let g = r.leadership.fence.acting()?;
                Some((r.name.as_str(), g, r.proc.agent.leading()))
            })
            .collect();
        let one = acting.len() == 1
            && acting[0] == (row.holder.as_str(), row.generation, Some(row.generation));
        if !one || row.expires_ms < self.now().timestamp_millis() {
            self.fail(format!(
                "after the calm, not exactly one leader: acting {acting:?}, lease row {row:?}"
            ));
        }
    }
}

fn run_seed(seed: u64, steps: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // Tokio's clock moves only when the harness moves it: a blocking task held open
        // keeps it from jumping ahead while the runtime waits for SQLite's threads.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let hold = tokio::task::spawn_blocking(move || {
            let _ = hold_rx.recv();
        });
        let mut sim = Sim::new(seed).await;
        // The replicas start in calm weather and the leader looks at once: the events from
        // before its first poll that it will ever see are those within its look-back.
        for i in 0..REPLICAS {
            sim.renew(i).await;
        }
        for i in 0..REPLICAS {
            sim.turn(i, false).await;
        }
        for _ in 0..steps {
            sim.step().await;
        }
        sim.finish().await;
        drop(hold_tx);
        let _ = hold.await;
    });
}

#[test]
fn two_agents_and_a_failing_store_keep_every_promise() {
    run_seeds("POOLPILOT_SIM_HA", 16, 300, run_seed);
}

#[test]
fn seed_6_a_new_leader_handles_the_webhooks_it_queued_before_once() {
    // Seed 6 found that a replica taking over handed a webhook its receiver had queued as a
    // standby to its engine twice, from the queue and again from its first events poll.
    run_seed(6, 300);
}

#[test]
fn the_harness_catches_a_replica_acting_without_the_lease() {
    let (_tx, step) = watch::channel(0);
    let scenario = Scenario::parse("sim.yaml", SCENARIO).unwrap();
    let start: DateTime<Utc> = "2026-11-27T00:00:00Z".parse().unwrap();
    let core = Arc::new(Mutex::new(Core::new(
        CoreConfig::default(),
        &scenario,
        start,
    )));
    let rules = load(RULES_A).unwrap();
    let chaos = Arc::new(Chaos::new(core, 1, &rules, step));
    let now = start.timestamp_millis();
    let row = Arc::new(Mutex::new(Row {
        holder: "replica-0.1".into(),
        generation: 4,
        expires_ms: now + 9_000,
    }));
    let seat = |name: &str| Seat {
        chaos: chaos.clone(),
        name: name.into(),
        row: row.clone(),
    };
    let g = |g: &str| g.to_string();
    seat("replica-0.1").check_acting("create", "k1", Some(Some(&g("4"))));
    seat("replica-0.1").check_acting("kill", "s1", None);
    assert!(chaos.st().violations.is_empty());
    seat("replica-1.1").check_acting("kill", "s1", None);
    seat("replica-0.1").check_acting("create", "k2", Some(Some(&g("3"))));
    seat("replica-0.1").check_acting("create", "k3", Some(None));
    lock(&row).expires_ms = now - 1;
    seat("replica-0.1").check_acting("pause", "s1", None);
    let v = std::mem::take(&mut chaos.st().violations);
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v[0].contains("the lease names \"replica-0.1\""), "{v:?}");
    assert!(v[1].contains("generation Some(\"3\")"), "{v:?}");
    assert!(v[2].contains("generation None"), "{v:?}");
    assert!(v[3].contains("ran out 1 ms ago"), "{v:?}");
}
