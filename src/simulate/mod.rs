//! `poolpilot simulate`: the real agent against the emulator core in virtual time, reporting
//! what its rules would have cost and missed.
//!
//! One control path: the agent that runs here is [`crate::agent::control::Agent`], with its
//! ticks, its reactions to (real, signed) webhooks, its ledger of creates in flight, its
//! pacing and its retries, exactly as `poolpilot run` runs it ([`world`]). What differs is
//! E2B: the emulator core behind [`api::Modeled`], which keeps E2B's create rate, concurrency
//! cap, boot time and pause/resume latency in virtual time on a paused tokio clock.
//!
//! Accounting ([`account`]): `sandbox_seconds` per pool integrates its running members as the
//! agent observes them each tick; `demand_core_seconds` and `unmet_core_seconds` are the
//! emulator's exact integrals of demand, and of demand above capacity, per template; the
//! perfect-foresight [`floor`] is taken per template over the same span, and `cost_vs_floor`
//! divides the sandbox-seconds of the template's pools by it (pools that share a template
//! share its figures; the total counts each template once). Creates, kills and alerts are
//! counted from the agent's own decision records, with what came of them.

pub mod account;
pub mod api;
pub mod floor;
pub mod jobs;
pub mod record;
pub mod svg;
pub mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::emulator::{CoreConfig, Scenario};
use crate::engine::Decision;
use crate::rules::RuleSet;
use crate::sync::lock;
use account::Accounts;
use world::{AgentSetup, World};

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Time between two engine steps (the agent's poll interval).
    pub tick: Duration,
    /// How often the agent also reads the events API (the agent's `poll.events`).
    pub events_every: Duration,
    /// Used when the scenario has no `duration`.
    pub default_duration: Duration,
    pub core: CoreConfig,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            tick: Duration::from_secs(5),
            events_every: Duration::from_secs(10),
            default_duration: Duration::from_secs(1800),
            core: CoreConfig::default(),
        }
    }
}

/// Totals for the whole run or one pool.
///
/// Demand, its floor and what went unmet belong to a template, not a pool: a pool reports
/// those of its template, and its `cost_vs_floor` is the sandbox-seconds of every pool on that
/// template over the template's floor (with one pool per template, as usual, that is the
/// pool's own). The total counts each template that has a pool once.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub sandbox_seconds: f64,
    /// The perfect-foresight floor ([`floor`]): the fewest sandbox-seconds that serve all demand.
    pub floor_sandbox_seconds: f64,
    /// `sandbox_seconds / floor_sandbox_seconds`; `None` (JSON null) when the floor is 0.
    pub cost_vs_floor: Option<f64>,
    /// The busy core-seconds asked of the template: the emulator's integral of its demand.
    pub demand_core_seconds: f64,
    pub unmet_core_seconds: f64,
    /// `unmet_core_seconds / demand_core_seconds x 100`; `None` (JSON null) without demand.
    pub unmet_pct: Option<f64>,
    pub peak_pool_size: u32,
    pub creates: u64,
    pub kills: u64,
    pub alerts_fired: u64,
    pub alerts_resolved: u64,
}

/// One sample of the run, for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub t_s: f64,
    /// Demand and capacity in cores, per template.
    pub demand: BTreeMap<String, f64>,
    pub capacity: BTreeMap<String, f64>,
    /// Running members per pool.
    pub pool_size: BTreeMap<String, u32>,
    /// Running sandboxes that belong to no pool of the rules: no `pool` metadata, or a pool
    /// the rules do not have (a scenario's `initial` sandboxes, say).
    pub unmanaged: u32,
    /// The names of the alert rules firing now (any subject), each once, sorted.
    pub alerts_firing: Vec<String>,
}

/// A scale action, for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub t_s: f64,
    pub pool: String,
    /// Positive for creates, negative for kills.
    pub change: i64,
}

/// What `simulate` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub duration_s: f64,
    pub tick_s: f64,
    #[serde(flatten)]
    pub total: Totals,
    pub pools: BTreeMap<String, Totals>,
    pub create_failures: u64,
    pub dry_run_decisions: u64,
    /// Per pool, what the scenario's jobs saw of their claims.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, jobs::JobsReport>,
    #[serde(skip)]
    pub frames: Vec<Frame>,
    #[serde(skip)]
    pub marks: Vec<Mark>,
    #[serde(skip)]
    pub decisions: Vec<Decision>,
}

/// How often, between ticks, the emulator's webhooks are delivered and the agent reacts: E2B
/// delivers within about a second.
const WEBHOOK_EVERY: Duration = Duration::from_secs(1);

/// Runs `rules` against `scenario` and reports. The run has a thread and a paused tokio runtime
/// of its own, so that its time is virtual whoever calls it, and no logger: the agent's log
/// lines would carry wall-clock times of a run that happens in virtual time (the report and
/// the chart say what it did).
pub fn simulate(rules: Arc<RuleSet>, scenario: &Scenario, opts: &SimOptions) -> SimReport {
    let scenario = scenario.clone();
    let opts = opts.clone();
    let run = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| e.to_string())?;
        let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        Ok::<_, String>(rt.block_on(run(rules, &scenario, &opts)))
    });
    match run.join() {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => panic!("simulate cannot start a runtime: {e}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The run itself: turns of the agent every `tick` of virtual time, with webhooks delivered
/// in between, then the accounts.
async fn run(rules: Arc<RuleSet>, scenario: &Scenario, opts: &SimOptions) -> SimReport {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_787_200, 0).unwrap_or_default(); // 2026-01-07T12:00Z, a Wednesday
    let duration = scenario
        .duration
        .map(|d| d.0)
        .unwrap_or(opts.default_duration);
    let tick = opts.tick.max(Duration::from_millis(100));
    let setup = AgentSetup {
        events_every: opts.events_every,
    };
    let mut world = World::new(rules.clone(), scenario, opts.core.clone(), start, setup);
    let mut accounts = Accounts::new(&rules, start, duration, tick);
    let t0 = tokio::time::Instant::now();
    let jobs = jobs::Jobs::default();
    let arrivals = jobs::arrivals(&scenario.jobs, scenario.seed, duration);
    let claims = world.agent.claims();
    let driver = {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            for a in arrivals {
                tokio::time::sleep_until(t0 + a.at).await;
                jobs.spawn(claims.clone(), a);
            }
        })
    };
    let steps = (duration.as_nanos() / tick.as_nanos()) as u32;
    for k in 0..=steps {
        let at = t0 + tick * k;
        webhooks_until(&mut world, &mut accounts, at).await;
        tokio::time::sleep_until(at).await;
        let report = world.tick().await;
        accounts.turn(&world, &report, k < steps).await;
    }
    // The books close at the last tick, the end of the sandbox-seconds billed: the demand and
    // unmet integrals are read there, before creates still in flight move the clock on, and
    // the floor is taken over the same span.
    let horizon = tick * steps;
    let books = {
        let mut core = lock(&world.core);
        if let Some(end) = chrono::TimeDelta::from_std(horizon).ok().map(|d| start + d) {
            core.advance_to(end);
        }
        core.stats()
    };
    let floors = floor::floor(scenario, horizon.as_secs_f64());
    driver.abort();
    world.agent.settle().await;
    accounts.read_decisions(&world);
    let mut report = accounts.finish(&books, &floors);
    let paid: BTreeMap<String, f64> = report
        .pools
        .iter()
        .map(|(name, t)| (name.clone(), t.sandbox_seconds))
        .collect();
    report.jobs = jobs.report(&paid);
    report
}

/// Delivers webhooks every [`WEBHOOK_EVERY`] until `at`, the agent reacting to each batch;
/// and as `poolpilot run` does when a claim finds no member free, evaluates its pool in an
/// early tick (here within a second of virtual time, at most once a second, as there).
async fn webhooks_until(world: &mut World, accounts: &mut Accounts, at: tokio::time::Instant) {
    loop {
        let next = tokio::time::Instant::now() + WEBHOOK_EVERY;
        if next >= at {
            return;
        }
        tokio::time::sleep_until(next).await;
        if world.deliver_webhooks().await.is_some() {
            accounts.read_decisions(world);
        }
        if world.agent.expedite_starved() {
            world.tick().await;
            accounts.read_decisions(world);
        }
    }
}

/// What in `scenario` cannot work with `rules`: jobs that claim from a pool the rules do not
/// have (every one would time out), and pools whose template the scenario does not declare
/// (every create would fail). Each as a sentence naming the field.
pub fn mismatches(rules: &RuleSet, scenario: &Scenario) -> Vec<String> {
    let mut out = Vec::new();
    for (i, j) in scenario.jobs.iter().enumerate() {
        if rules.pool(&j.pool).is_none() {
            let names: Vec<&str> = rules.pools.iter().map(|p| p.name.as_str()).collect();
            out.push(format!(
                "jobs[{i}].pool: no pool named {:?} in the rules (they have: {}); name one of them",
                j.pool,
                names.join(", ")
            ));
        }
    }
    for p in &rules.pools {
        let known = p.template == "base"
            || scenario.templates.iter().any(|(name, t)| {
                *name == p.template || t.alias.as_deref() == Some(p.template.as_str())
            });
        if !known {
            out.push(format!(
                "pool {}: template {:?} is not in the scenario's `templates` (only `base` is known without one); declare it, such as `templates: {{ {}: {{ boot: 4s }} }}`",
                p.name, p.template, p.template
            ));
        }
    }
    out
}

/// A few lines for a person.
pub fn summary(r: &SimReport) -> String {
    let t = &r.total;
    let mut out = format!(
        "simulated {} in steps of {}: {:.0} sandbox-seconds = {} the floor of {:.0}, {:.0} unmet core-seconds = {} of {:.0} demanded, peak {} sandboxes, {} creates, {} kills, {} alerts fired, {} resolved",
        humantime::format_duration(Duration::from_secs_f64(r.duration_s)),
        humantime::format_duration(Duration::from_secs_f64(r.tick_s)),
        t.sandbox_seconds,
        times(t.cost_vs_floor),
        t.floor_sandbox_seconds,
        t.unmet_core_seconds,
        percent(t.unmet_pct),
        t.demand_core_seconds,
        t.peak_pool_size,
        t.creates,
        t.kills,
        t.alerts_fired,
        t.alerts_resolved
    );
    if r.create_failures > 0 {
        out.push_str(&format!(
            ", {} creates refused (rate limit or concurrency cap)",
            r.create_failures
        ));
    }
    if r.dry_run_decisions > 0 {
        out.push_str(&format!(
            ", {} dry-run decisions not carried out",
            r.dry_run_decisions
        ));
    }
    for (name, t) in &r.pools {
        out.push_str(&format!(
            "\n  pool {name}: {:.0} sandbox-seconds, {:.0} unmet core-seconds (template: {} the floor, {} unmet), peak {}, +{} -{}, alerts {} fired {} resolved",
            t.sandbox_seconds, t.unmet_core_seconds, times(t.cost_vs_floor), percent(t.unmet_pct), t.peak_pool_size, t.creates, t.kills, t.alerts_fired, t.alerts_resolved
        ));
    }
    for (name, j) in &r.jobs {
        out.push_str(&format!(
            "\n  jobs on {name}: {} arrived, {} served at once, {} after a wait, {} resumed, {} timed out; claim latency p50 {:.2}s p99 {:.2}s; {} the sandbox-seconds held",
            j.arrived, j.immediate, j.waited, j.resumed, j.timed_out, j.latency_p50_s, j.latency_p99_s, times(j.cost_vs_held)
        ));
    }
    out
}

/// `1.52x`, or `n/a` for a ratio over nothing.
fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}x"))
}

/// `0.4%`, or `n/a` for a share of nothing.
fn percent(pct: Option<f64>) -> String {
    pct.map_or_else(|| "n/a".to_string(), |x| format!("{x:.1}%"))
}
