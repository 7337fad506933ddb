//! The seeded simulation harness: the real [`Agent`], its ticks and its reactions to webhooks,
//! against the in-process emulator on virtual time. A seeded schedule interleaves ticks,
//! webhook deliveries (on time, late, duplicated, reordered, dropped), API faults (429, 5xx,
//! lost answers, outages), slow creates, sandbox crashes, restarts from saved state (graceful
//! and abrupt), rule reloads (good and broken) and corrupt metrics (missing, NaN, infinite).
//! After every step it checks the promises:
//! - no create is sent while the pool's true size (members plus creates E2B is still making)
//!   is already at max;
//! - no Idempotency-Key makes two sandboxes;
//! - every event is handed to the engine at most once, and by the end every event exactly once;
//! - no sandbox the pools do not own is killed, paused, or has its timeout changed;
//! - no pool moves on missing or non-finite data, except to obey min and max (or, with an idle
//!   band, to follow its claims, which are exact);
//! - no member is handed to two holders (claims, some waiting, some with a reused
//!   Idempotency-Key, releases and short leases run among the rest), and no claimed member is
//!   killed or paused by anyone but its release;
//! - claims survive every restart, graceful or abrupt;
//! - nothing panics;
//!
//! and at the end, after a calm period, every pool is within [min, max].
//!
//! Everything runs on one thread with no real I/O or timers, so a seed replays exactly:
//! - `cargo test --test simulation` runs `POOLPILOT_SIM_SEEDS` seeds (default 48) from
//!   `POOLPILOT_SIM_FIRST` (default 1), `POOLPILOT_SIM_STEPS` steps each (default 400);
//! - a failure prints its seed and its last steps; `POOLPILOT_SIM_SEED=<seed>` replays that
//!   one alone, and `POOLPILOT_SIM_TRACE=1` prints every step as it goes;
//! - the soak: `POOLPILOT_SIM_SEEDS=5000 cargo test --release --test simulation`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use poolpilot::agent::claims::{ClaimError, ClaimRequest, Granted};
use poolpilot::agent::control::{Agent, TickReport};
use poolpilot::e2b::{E2bApi, LifecycleEvent, SandboxState};
use poolpilot::emulator::Core;
use poolpilot::emulator::core::Delivery;
use poolpilot::engine::{Action, Decision};
use poolpilot::rules::{POOL_KEY, RuleSet};
use poolpilot::simulate::world::{AgentWiring, InProcessAgent};
use tokio::sync::watch;

mod sim;
use sim::*;

// ---------------------------------------------------------------------------------------
// The agent's side: one process, with its webhook receiver, that can restart.
// ---------------------------------------------------------------------------------------

/// One running agent process, wired as `simulate` wires it: the agent and its webhook
/// receiver, over the faulty API, resuming from the state dir.
fn start_agent(api: &Arc<Chaos>, rules: &Arc<RuleSet>, dir: &std::path::Path) -> InProcessAgent {
    let core = api.core.clone();
    let wiring = AgentWiring {
        secret: SECRET.into(),
        clock: Arc::new(move || lock(&core).now()),
        events_every: Duration::from_secs(5),
        state_dir: Some(dir.to_path_buf()),
    };
    let chaos = api.clone();
    let api: Arc<dyn E2bApi> = api.clone();
    let p = InProcessAgent::start(api, rules.clone(), wiring)
        .unwrap_or_else(|e| panic!("agent cannot start: {e}"));
    chaos.st().claims = Some(p.agent.claims());
    p
}

// ---------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------

struct Sim {
    seed: u64,
    rng: fastrand::Rng,
    core: Arc<Mutex<Core>>,
    api: Arc<Chaos>,
    step_tx: watch::Sender<u64>,
    step: u64,
    proc: Option<InProcessAgent>,
    rules: Arc<RuleSet>,
    dir: std::path::PathBuf,
    /// Deliveries held back: (the step to deliver at, the delivery).
    held: Vec<(u64, Delivery)>,
    /// Event id -> times handed to the engine.
    handled: HashMap<String, u32>,
    /// The newest decision already checked.
    checked_seq: u64,
    /// What happened, newest last, printed on failure.
    trail: Vec<String>,
    /// Sandbox -> the last claim granted on it.
    granted: HashMap<String, String>,
    /// Idempotency-Keys used so far, some of which claims reuse.
    keys: Vec<(String, String)>,
    /// Claims waiting for a member, spawned so that they interleave with the rest.
    waiting: Vec<tokio::task::JoinHandle<std::result::Result<Granted, ClaimError>>>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let World {
            core,
            chaos: api,
            step_tx,
            rules,
            dir,
        } = World::new(seed, "sim");
        let proc = Some(start_agent(&api, &rules, &dir));
        Sim {
            seed,
            rng: fastrand::Rng::with_seed(seed),
            core,
            api,
            step_tx,
            step: 0,
            proc,
            rules,
            dir,
            held: Vec::new(),
            handled: HashMap::new(),
            checked_seq: 0,
            trail: Vec::new(),
            granted: HashMap::new(),
            keys: Vec::new(),
            waiting: Vec::new(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        lock(&self.core).now()
    }

    fn agent(&mut self) -> &mut Agent {
        &mut self.proc.as_mut().expect("a running agent").agent
    }

    /// One step of the schedule, chosen by the seed.
    async fn step(&mut self, calm: bool) {
        let traced = self.trail.len();
        self.step += 1;
        let _ = self.step_tx.send(self.step);
        let_tasks_run().await;
        let roll = self.rng.u32(0..100);
        match roll {
            _ if calm => {
                self.advance(Duration::from_secs(2)).await;
                self.tick().await;
            }
            0..=34 => {
                let by = Duration::from_millis(self.rng.u64(200..4000));
                self.advance(by).await;
            }
            35..=59 => self.tick().await,
            60..=74 => self.react().await,
            75..=79 => self.crash(),
            80..=82 => self.restart().await,
            83..=85 => self.reload(),
            86..=89 => self.weather(),
            90..=94 => self.claim().await,
            95..=97 => self.release(),
            _ => {
                self.settle().await;
                self.trail.push("settle".into());
            }
        }
        self.trace_since(traced);
        self.take_waiting();
        self.check_step();
    }

    /// A claim on a random pool: at once, or waiting (spawned, so it is served among the
    /// steps that follow); with a new Idempotency-Key, a reused one, or none.
    async fn claim(&mut self) {
        let pools: Vec<String> = self.rules.pools.iter().map(|p| p.name.clone()).collect();
        let Some(pool) = self.rng.choice(pools.iter()).cloned() else {
            return;
        };
        let key = match self.rng.u8(0..4) {
            0 => None,
            1 if !self.keys.is_empty() => {
                let (p, k) = self.keys[self.rng.usize(0..self.keys.len())].clone();
                (p == pool).then_some(k)
            }
            _ => {
                let k = format!("key-{}", self.rng.u64(..));
                self.keys.push((pool.clone(), k.clone()));
                Some(k)
            }
        };
        let req = ClaimRequest {
            holder: Some(format!("job-{}", self.step)),
            lease: Some(Duration::from_secs(self.rng.u64(3..90))),
            idempotency_key: key,
            wait: Duration::ZERO,
            ..Default::default()
        };
        let claims = self.agent().claims();
        if self.rng.bool() {
            let r = claims.claim(&pool, req).await;
            self.trail
                .push(format!("claim on {pool}: {}", describe(&r)));
            self.check_grant(r);
        } else {
            let req = ClaimRequest {
                wait: Duration::from_secs(3),
                ..req
            };
            self.trail
                .push(format!("claim on {pool}, waiting up to 3s"));
            let c = claims.clone();
            self.waiting
                .push(tokio::spawn(async move { c.claim(&pool, req).await }));
        }
    }

    /// Takes the waiting claims that have been answered, and checks them.
    fn take_waiting(&mut self) {
        let (done, open): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|h| h.is_finished());
        self.waiting = open;
        for h in done {
            let Some(r) = h.now_or_never_result() else {
                continue;
            };
            self.trail
                .push(format!("waiting claim answered: {}", describe(&r)));
            self.check_grant(r);
        }
    }

    /// A granted member must not be held by another claim that is still active.
    fn check_grant(&mut self, r: std::result::Result<Granted, ClaimError>) {
        let Ok(g) = r else { return };
        if g.replayed {
            return;
        }
        let (sbx, id) = (g.claim.sandbox_id.clone(), g.claim.claim_id.clone());
        let prev = self.granted.insert(sbx.clone(), id.clone());
        let Some(prev) = prev.filter(|p| *p != id) else {
            return;
        };
        let still = self
            .proc
            .as_ref()
            .is_some_and(|p| p.agent.claims().get(&prev).is_ok());
        if still {
            self.fail(format!(
                "{sbx} handed to claim {id} while claim {prev} holds it"
            ));
        }
    }

    /// Releases a random active claim.
    fn release(&mut self) {
        let claims = self.agent().claims();
        let active = claims.active();
        let Some(c) = self.rng.choice(active.iter()) else {
            return;
        };
        let r = claims.release(&c.claim_id);
        self.trail.push(format!(
            "release {} ({}): {}",
            c.claim_id,
            c.sandbox_id,
            if r.is_ok() { "ok" } else { "gone" }
        ));
    }

    /// Prints the trail's entries from `from` on, with `POOLPILOT_SIM_TRACE` set.
    fn trace_since(&self, from: usize) {
        if std::env::var_os("POOLPILOT_SIM_TRACE").is_some() {
            for line in self.trail.iter().skip(from) {
                eprintln!("seed {} step {}: {line}", self.seed, self.step);
            }
        }
    }

    /// Moves virtual time on, and passes the emulator's webhooks to the receiver: on time,
    /// late, twice, out of order, or never.
    async fn advance(&mut self, by: Duration) {
        let fresh = {
            let mut core = lock(&self.core);
            core.advance(by);
            core.take_outbox()
        };
        self.trail.push(format!("advance {by:?}"));
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

    /// Posts one delivery to the agent's real receiver; a refusal is retried later, as E2B does.
    async fn deliver(&mut self, d: Delivery) {
        let Some(p) = &self.proc else { return };
        if let Ok(e) = serde_json::from_slice::<LifecycleEvent>(&d.body) {
            self.trail.push(format!("deliver {}", e.id));
        }
        let status = p.receiver.post(&d).await;
        if status.is_server_error() {
            let at = self.step + 1;
            self.held.push((at, d));
        } else if !status.is_success() {
            self.fail(format!("the receiver refused a good delivery: {status}"));
        }
    }

    /// Lets every slow create answer: they wait for steps, and the steps would otherwise
    /// wait for them. Creates just sent start first, so that they see the step they were
    /// sent in.
    async fn release_creates(&mut self) {
        let_tasks_run().await;
        self.step += MAX_CREATE_DELAY;
        let _ = self.step_tx.send(self.step);
    }

    /// Waits for every create in flight, as the agent does at shutdown and tests do.
    async fn settle(&mut self) {
        self.release_creates().await;
        self.agent().settle().await;
    }

    async fn tick(&mut self) {
        let now = self.now();
        let report = self.agent().tick(now).await;
        self.trail.push(format!(
            "tick: observed {} events {} decisions {}{}",
            report.observed,
            report.events,
            report.decisions,
            report
                .error
                .map(|e| format!(" error {e}"))
                .unwrap_or_default()
        ));
        self.count_handled(&report.handled);
    }

    async fn react(&mut self) {
        let now = self.now();
        let report: TickReport = self.agent().react(now).await;
        self.trail.push(format!(
            "react: events {} decisions {}",
            report.events, report.decisions
        ));
        self.count_handled(&report.handled);
    }

    fn count_handled(&mut self, ids: &[String]) {
        for id in ids {
            let n = self.handled.entry(id.clone()).or_default();
            *n += 1;
            if *n > 1 {
                let msg = format!("event {id} handled {n} times");
                self.fail(msg);
            }
        }
    }

    /// A pool member dies for a reason nobody asked for.
    fn crash(&mut self) {
        if let Some(id) = crash_member(&self.core, &mut self.rng) {
            self.trail.push(format!("crash {id}"));
        }
    }

    /// Stops the agent and starts a new one from its saved state: gracefully (in-flight
    /// creates awaited, state saved) or abruptly (as after kill -9: what was saved last).
    async fn restart(&mut self) {
        let Some(mut p) = self.proc.take() else {
            return;
        };
        if self.rng.bool() {
            self.release_creates().await;
            p.agent.settle().await;
            p.agent.persist().await;
            self.trail.push("restart (graceful)".into());
        } else {
            self.trail.push("restart (abrupt)".into());
        }
        let before = p.agent.claims().active();
        drop(p);
        self.proc = Some(start_agent(&self.api, &self.rules, &self.dir));
        self.checked_seq = 0;
        let after = self.agent().claims().active();
        if before != after {
            self.fail(format!(
                "claims changed across a restart: {} before, {} after",
                before.len(),
                after.len()
            ));
        }
    }

    /// Reloads the rules: another good set, or a broken one that must change nothing.
    fn reload(&mut self) {
        let text = match self.rng.u8(0..3) {
            0 => RULES_A,
            1 => RULES_B,
            _ => BROKEN,
        };
        match load(text) {
            Ok(set) => {
                let set = Arc::new(set);
                self.api.st().max = maxima(&set);
                self.agent().set_rules(set.clone());
                self.rules = set;
                self.trail.push("reload (good)".into());
            }
            Err(_) => self.trail.push("reload (broken: kept the rules)".into()),
        }
    }

    /// Changes the faults: an outage, an error rate, corrupt metrics.
    fn weather(&mut self) {
        let w = self.api.change_weather(&mut self.rng);
        self.trail.push(w);
    }

    fn clear_weather(&mut self) {
        self.api.calm_weather();
    }

    fn fail(&self, msg: String) -> ! {
        let tail: Vec<&String> = self.trail.iter().rev().take(25).collect();
        panic!(
            "seed {}: step {}: {msg}\nreplay: POOLPILOT_SIM_SEED={} cargo test --test simulation\nlast steps, newest first:\n  {}",
            self.seed,
            self.step,
            self.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }

    /// The invariants, after every step.
    fn check_step(&mut self) {
        if panicked() {
            self.fail("a panic (see above)".into());
        }
        let violations = std::mem::take(&mut self.api.st().violations);
        if let Some(v) = violations.into_iter().next() {
            self.fail(v);
        }
        let decisions: Vec<Decision> = {
            let Some(p) = &self.proc else { return };
            let recent = lock(&p.agent.recent);
            recent
                .iter()
                .filter(|d| d.seq > self.checked_seq)
                .map(|d| d.decision.clone())
                .collect()
        };
        if let Some(p) = &self.proc
            && let Some(last) = lock(&p.agent.recent).back()
        {
            self.checked_seq = self.checked_seq.max(last.seq);
        }
        // A pool decides on bad data when a member it still counts (alive: the dead are out of
        // the agent's view once their kill is known) had no finite sample.
        let bad_members = self.api.st().bad_metrics.clone();
        let alive: HashSet<String> = {
            let core = lock(&self.core);
            bad_members
                .keys()
                .filter(|id| core.get(id).is_ok_and(|s| s.state == SandboxState::Running))
                .cloned()
                .collect()
        };
        let bad: BTreeSet<String> = bad_members
            .into_iter()
            .filter(|(id, _)| alive.contains(id))
            .map(|(_, pool)| pool)
            .collect();
        for d in decisions {
            if let Some(msg) = self.decision_problem(&d, &bad) {
                self.fail(msg);
            }
        }
    }

    /// A decision that uses non-finite numbers, or moves a pool on bad data beyond what min
    /// and max require.
    fn decision_problem(&self, d: &Decision, bad: &BTreeSet<String>) -> Option<String> {
        if let Some((k, v)) = d.cause.values.iter().find(|(_, v)| !v.is_finite()) {
            return Some(format!(
                "decision of {} used {k} = {v}: {}",
                d.rule, d.cause.summary
            ));
        }
        let pool = self.rules.pool(&d.rule)?;
        // A pool with an idle band follows its claims, which are exact data whatever the
        // metrics say (the engine's tests hold its metric rules still on bad data).
        if !bad.contains(&pool.name) || matches!(d.action, Action::Alert(_)) || pool.idle.is_some()
        {
            return None;
        }
        let (Some(from), Some(to)) = (d.cause.current, d.cause.result) else {
            return None;
        };
        let bounded = from.clamp(pool.min, pool.max.max(pool.min));
        (to != bounded).then(|| {
            format!(
                "pool {} moved {from} -> {to} on missing or non-finite metrics: {}",
                pool.name, d.cause.summary
            )
        })
    }

    /// The end: calm weather, every delivery through, then the pools are within their
    /// bounds and every event was handled exactly once.
    async fn finish(&mut self) {
        self.clear_weather();
        // Every holder lets go, so the pools can settle within their bounds.
        for h in self.waiting.drain(..) {
            h.abort();
        }
        let claims = self.agent().claims();
        for c in claims.active() {
            let _ = claims.release(&c.claim_id);
        }
        self.step += 100;
        let _ = self.step_tx.send(self.step);
        let held: Vec<Delivery> = self.held.drain(..).map(|(_, d)| d).collect();
        for d in held {
            self.deliver(d).await;
        }
        // Calm until the pools are still: several turns in a row with nothing to do, so the
        // events of the last actions have come in too.
        let mut still = 0;
        for _ in 0..300 {
            let seq = self.checked_seq;
            self.step(true).await;
            self.settle().await;
            self.check_step();
            still = if self.checked_seq == seq {
                still + 1
            } else {
                0
            };
            if still >= 6 {
                break;
            }
        }
        // The last events (a sandbox that expired in the calm, say) may still be held back or
        // dropped: deliver what is held, and let two event polls go by.
        let traced = self.trail.len();
        let held: Vec<Delivery> = self.held.drain(..).map(|(_, d)| d).collect();
        for d in held {
            self.deliver(d).await;
        }
        // Until a round with nothing new: members keep expiring at their E2B timeout and being
        // replaced, and each replacement has its own events.
        let mut quiet = 0;
        for _ in 0..100 {
            let (seq, handled) = (self.checked_seq, self.handled.len());
            self.advance(Duration::from_secs(6)).await;
            self.tick().await;
            self.settle().await;
            self.check_step();
            quiet = if (self.checked_seq, self.handled.len()) == (seq, handled) {
                quiet + 1
            } else {
                0
            };
            if quiet >= 2 {
                break;
            }
        }
        self.trace_since(traced);
        for pool in &self.rules.pools {
            let n = self.api.members(&pool.name);
            if n < pool.min || n > pool.max {
                let msg = format!(
                    "after the calm, pool {} has {n} members, outside [{}, {}]",
                    pool.name, pool.min, pool.max
                );
                self.fail(msg);
            }
        }
        if let Some(msg) = never_handled(&self.core, |id| self.handled.contains_key(id)) {
            self.fail(msg);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line for a claim's answer.
fn describe(r: &std::result::Result<Granted, ClaimError>) -> String {
    match r {
        Ok(g) => format!(
            "{} {} ({:?}{})",
            g.claim.claim_id,
            g.claim.sandbox_id,
            g.result,
            if g.replayed { ", replayed" } else { "" }
        ),
        Err(e) => format!("refused: {e}"),
    }
}

/// The result of a finished task, without waiting.
trait NowOrNever<T> {
    fn now_or_never_result(self) -> Option<T>;
}

impl<T> NowOrNever<T> for tokio::task::JoinHandle<T> {
    fn now_or_never_result(self) -> Option<T> {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let mut h = self;
        let mut cx = Context::from_waker(Waker::noop());
        match std::pin::Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(Ok(v)) => Some(v),
            _ => None,
        }
    }
}

fn run_seed(seed: u64, steps: u64) {
    // Tokio's clock is paused: the receiver's timers never fire on their own, so nothing
    // depends on how fast this machine is.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sim = Sim::new(seed);
        // The agent starts in calm weather: the events from before its first poll that it
        // will ever see are those within its look-back, so it looks at once.
        sim.tick().await;
        for _ in 0..steps {
            sim.step(false).await;
        }
        sim.finish().await;
    });
}

#[test]
fn seeded_interleavings_keep_every_promise() {
    run_seeds("POOLPILOT_SIM", 48, 400, run_seed);
}

#[test]
fn the_harness_catches_a_pool_that_overshoots() {
    // The check that would have caught issue 9's 3 -> 6: a create sent at max is a violation.
    let sim = Sim::new(7);
    let mut req = sim.rules.pool("w").unwrap().create_request();
    req.metadata
        .get_or_insert_with(Default::default)
        .insert(POOL_KEY.into(), "w".into());
    for _ in 0..6 {
        let key = uuid::Uuid::new_v4().to_string();
        sim.api.check_create(&req);
        sim.api.make(&req, &key).unwrap();
        lock(&sim.core).advance(Duration::from_secs(1));
    }
    sim.api.check_create(&req);
    let v = std::mem::take(&mut sim.api.st().violations);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("max 6"), "{v:?}");
}
