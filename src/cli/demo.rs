//! `poolpilot demo`: the agent against the embedded emulator under a load spike, in a live view.
//! No account, no network: the emulator listens on a loopback port, the agent talks to it over
//! HTTP with the shipped rules (the guide's pool pattern, its high-CPU alert, crash
//! replacement), and virtual time runs `speed` times faster than the wall clock. It never
//! reaches E2B, and the view shows each decision once.
//!
//! The demo is [`start`] (emulator and agent), [`print_header`], then [`View::turn`] every
//! five virtual seconds until the scenario ends, and [`View::print_totals`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use crate::agent::control::{Agent, AgentOptions};
use crate::agent::dedup::Dedup;
use crate::e2b::{ClientConfig, E2bApi, HttpClient};
use crate::emulator::core::StatsReport;
use crate::emulator::{Clock, CoreConfig, EmulatorOptions, RunningEmulator, Scenario};
use crate::engine::{Action, AlertStatus};
use crate::rules::load_str;

use super::values::number_in;

const SCENARIO: &str = include_str!("../../examples/scenarios/workers-spike.yaml");
const RULES: [(&str, &str); 5] = [
    (
        "rules/notifiers.yaml",
        include_str!("../../rules/notifiers.yaml"),
    ),
    (
        "rules/guide-pool.yaml",
        include_str!("../../rules/guide-pool.yaml"),
    ),
    (
        "rules/high-cpu-alert.yaml",
        include_str!("../../rules/high-cpu-alert.yaml"),
    ),
    (
        "rules/lifecycle.yaml",
        include_str!("../../rules/lifecycle.yaml"),
    ),
    (
        "examples/rules/claims.yaml",
        include_str!("../../examples/rules/claims.yaml"),
    ),
];

/// The claims phase: jobs that claim a member of `jobs` (examples/rules/claims.yaml), hold it
/// for about 45 s and release it, arriving faster from minute 10 to 20.
const JOBS: &str = "
templates:
  code-interpreter-v1: { cpu_count: 2, memory_mb: 1024, boot: 4s }
jobs:
  - { pool: jobs, points: [[0s, 0.02], [9m, 0.02], [10m, 0.3], [20m, 0.3], [21m, 0.02]], hold: 45s, wait: 10s }
";

/// Flags of `poolpilot demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Virtual seconds per wall-clock second: at 30 the 30-minute scenario takes a minute.
    #[arg(long, default_value_t = 30.0, value_name = "FACTOR", value_parser = speed)]
    pub(crate) speed: f64,
}

/// The speeds the demo runs at: the 30-minute scenario takes from 5 hours to 1.8 s.
const SPEED_RANGE: (f64, f64) = (0.1, 1000.0);

/// `demo --speed`: a minute of scenario takes from 10 minutes (0.1) to 60 ms (1000).
fn speed(raw: &str) -> Result<f64, String> {
    let (lo, hi) = SPEED_RANGE;
    number_in(raw, lo, hi, "virtual seconds per wall-clock second")
}

/// `mm:ss` of virtual time.
fn clock(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// Runs the demo to the end of the scenario. `log_file` is where the agent's log lines go,
/// named in the view's header; the view itself shows each decision once.
pub(crate) async fn run(args: &DemoArgs, log_file: Option<&Path>) -> anyhow::Result<()> {
    let speed = args.speed;
    let (lo, hi) = SPEED_RANGE;
    if !(lo..=hi).contains(&speed) {
        anyhow::bail!("--speed must be from {lo} to {hi}, got {speed}");
    }
    let (emu, mut agent, duration) = start(speed).await?;
    print_header(&emu, speed, log_file);
    let tick = Duration::from_secs_f64(5.0 / speed);
    let mut view = View::default();
    let mut jobs = JobsPhase::new(speed, duration)?;
    loop {
        jobs.arrive(&emu, &agent);
        if !view.turn(&emu, &mut agent, duration).await {
            break;
        }
        tokio::time::sleep(tick).await;
    }
    jobs.print_totals();
    emu.stop().await;
    Ok(())
}

/// The jobs of the claims phase, started as virtual time reaches their arrival.
struct JobsPhase {
    jobs: crate::simulate::jobs::Jobs,
    due: std::collections::VecDeque<crate::simulate::jobs::Arrival>,
}

impl JobsPhase {
    fn new(speed: f64, duration: f64) -> anyhow::Result<JobsPhase> {
        let s = Scenario::parse("demo-jobs.yaml", JOBS)?;
        let arrivals =
            crate::simulate::jobs::arrivals(&s.jobs, 7, Duration::from_secs_f64(duration));
        Ok(JobsPhase {
            jobs: crate::simulate::jobs::Jobs::at_speed(speed),
            due: arrivals.into(),
        })
    }

    /// Starts every job whose arrival has come.
    fn arrive(&mut self, emu: &RunningEmulator, agent: &Agent) {
        let t = emu
            .emulator
            .with_core(|c| (c.now() - c.start()).as_seconds_f64());
        while self.due.front().is_some_and(|a| a.at.as_secs_f64() <= t) {
            if let Some(a) = self.due.pop_front() {
                self.jobs.spawn(agent.claims(), a);
            }
        }
    }

    /// What the jobs saw of their claims.
    fn print_totals(&self) {
        for (pool, j) in self.jobs.report(&Default::default()) {
            outln!(
                "jobs on {pool}: {} claims, {} served at once, {} after a wait, {} resumed, {} not served in time; claim latency p50 {:.2}s p99 {:.2}s",
                j.arrived,
                j.immediate,
                j.waited,
                j.resumed,
                j.timed_out,
                j.latency_p50_s,
                j.latency_p99_s
            );
        }
    }
}

/// The emulator on a loopback port, running the spike scenario at `speed`, and the agent
/// with the shipped rules talking to it over HTTP; and the scenario's length in seconds.
async fn start(speed: f64) -> anyhow::Result<(RunningEmulator, Agent, f64)> {
    let mut scenario = Scenario::parse("workers-spike.yaml", SCENARIO)?;
    // The jobs pool's template, with E2B's code interpreter's size and boot time.
    scenario
        .templates
        .extend(Scenario::parse("demo-jobs.yaml", JOBS)?.templates);
    let duration = scenario.duration.map_or(1800.0, |d| d.0.as_secs_f64());
    let rules = Arc::new(load_str(&RULES).map_err(|d| anyhow::anyhow!("{d:?}"))?);
    let opts = EmulatorOptions {
        core: CoreConfig {
            create_rate: 5.0,
            ..CoreConfig::default()
        },
        scenario,
        clock: Clock::Wall { speed },
        ..EmulatorOptions::default()
    };
    let emu = RunningEmulator::bind(opts, "127.0.0.1:0").await?;
    let virt = emu.emulator.clone();
    let mut cfg = ClientConfig::new(emu.url(), "e2b_0000000000000000000000000000000000demo");
    // E2B's 5 creates a second in virtual time: `speed` times as many in wall time, as
    // `poolpilot run --speed` paces them, so bursts are paced rather than refused and retried
    // after a wall-clock second.
    cfg.create_rate = Some(5.0 * speed);
    let api: Arc<dyn E2bApi> = Arc::new(HttpClient::new(cfg)?);
    let agent = Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(10_000))),
            events_every: Duration::from_secs(5),
            dry_run: false,
            state_dir: None,
            // Leases run on the emulator's virtual time, as the agent's turns do.
            clock: Some(Arc::new(move || virt.with_core(|c| c.now()))),
        },
    )?;
    Ok((emu, agent, duration))
}

/// What the demo runs and the column headings of the view.
fn print_header(emu: &RunningEmulator, speed: f64, log_file: Option<&Path>) {
    outln!(
        "poolpilot demo: emulator at {} (virtual time x{speed}), rules: the guide's pool pattern, high-CPU alert, crash replacement",
        emu.url()
    );
    outln!(
        "scenario: an empty pool (min 2), demand of 1 busy core, a spike to 14 cores from minute 5 to 15, a sandbox crash at minute 8;"
    );
    outln!(
        "          and pool `jobs` (examples/rules/claims.yaml) handing one sandbox per job, jobs arriving 15x faster from minute 10 to 20"
    );
    match log_file {
        Some(f) => outln!("the agent's log: {}\n", f.display()),
        None => outln!(),
    }
    outln!(
        "{:>6}  {:>12}  {:>14}  {:>12}  {:>7}  {:>16}",
        "time",
        "demand",
        "capacity",
        "pool size",
        "alerts",
        "jobs: claimed/idle"
    );
}

/// The live view: which decisions it has shown, when it last printed the pool, and totals.
struct View {
    /// Decisions of the agent's log already printed.
    shown: usize,
    /// Virtual time of the last pool line; one is printed per virtual minute.
    last_line: f64,
    creates: u64,
    kills: u64,
    fired: u64,
    resolved: u64,
}

impl Default for View {
    fn default() -> Self {
        View {
            shown: 0,
            last_line: -60.0,
            creates: 0,
            kills: 0,
            fired: 0,
            resolved: 0,
        }
    }
}

impl View {
    /// One turn of the agent, shown: its new decisions, then the pool once a minute. False
    /// once the scenario has ended (the totals printed).
    async fn turn(&mut self, emu: &RunningEmulator, agent: &mut Agent, duration: f64) -> bool {
        let (now, start, stats) = emu.emulator.with_core(|c| (c.now(), c.start(), c.stats()));
        let t = (now - start).as_seconds_f64();
        agent.tick(now).await;
        agent.settle().await;
        self.print_decisions(agent, t);
        if t - self.last_line >= 60.0 {
            self.last_line = t;
            let b = stats.templates.get("base");
            let jobs = agent
                .claims()
                .counts()
                .get("jobs")
                .copied()
                .unwrap_or_default();
            outln!(
                "{:>6}  {:>7.1} cores  {:>8.0} cores  {:>6} sandboxes  {:>4}  {:>9}/{}",
                clock(t),
                b.map_or(0.0, |b| b.demand_cores),
                b.map_or(0.0, |b| b.capacity_cores),
                b.map_or(0, |b| b.running),
                firing_alerts(agent),
                jobs.claimed,
                jobs.idle
            );
        }
        if t >= duration {
            self.print_totals(&stats);
            return false;
        }
        true
    }

    /// Prints each decision not shown yet that changes the workers pool or an alert,
    /// counting it.
    fn print_decisions(&mut self, agent: &Agent, t: f64) {
        let log = agent
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for d in log.iter().skip(self.shown) {
            // The jobs pool changes with every claim: its line each minute says enough.
            if d.decision.rule == "jobs" {
                continue;
            }
            let what = match &d.decision.action {
                Action::Create { count, .. } => {
                    self.creates += *count as u64;
                    format!("▲ +{count}")
                }
                Action::Kill { sandbox_ids, .. } => {
                    self.kills += sandbox_ids.len() as u64;
                    format!("▼ -{}", sandbox_ids.len())
                }
                Action::Alert(n) if n.status == AlertStatus::Firing && !n.repeat => {
                    self.fired += 1;
                    "! alert firing".into()
                }
                Action::Alert(n) if n.status == AlertStatus::Resolved => {
                    self.resolved += 1;
                    "✓ alert resolved".into()
                }
                _ => continue,
            };
            outln!("{:>6}  {what:<16} {}", clock(t), d.decision.cause.summary);
        }
        self.shown = log.len();
    }

    /// The last line: what the agent did and what the scenario cost.
    fn print_totals(&self, stats: &StatsReport) {
        outln!(
            "\ndone: pool workers {} creates, {} kills; {} alerts fired, {} resolved; {:.0} sandbox-seconds in all, {:.0} core-seconds of demand unmet",
            self.creates,
            self.kills,
            self.fired,
            self.resolved,
            stats.sandbox_seconds,
            stats.unmet_core_seconds
        );
    }
}

/// Alerts firing now, over every alert rule and scope.
fn firing_alerts(agent: &Agent) -> usize {
    agent
        .engine()
        .state()
        .alerts
        .values()
        .map(|a| {
            a.values()
                .filter(|s| s.phase == crate::engine::AlertPhase::Firing)
                .count()
        })
        .sum()
}
