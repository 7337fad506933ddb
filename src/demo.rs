//! `poolpilot demo`: the agent against the embedded emulator under a load spike, in a live view.
//! No account, no network: the emulator listens on a loopback port, the agent talks to it over
//! HTTP with the shipped rules (the guide's pool pattern, its high-CPU alert, crash
//! replacement), and virtual time runs `speed` times faster than the wall clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agent::control::{Agent, AgentOptions};
use crate::agent::dedup::Dedup;
use crate::e2b::{ClientConfig, E2bApi, HttpClient};
use crate::emulator::{Clock, CoreConfig, EmulatorOptions, RunningEmulator, Scenario};
use crate::engine::{Action, AlertStatus};
use crate::rules::load_str;

const SCENARIO: &str = include_str!("../examples/scenarios/workers-spike.yaml");
const RULES: [(&str, &str); 4] = [
    (
        "rules/notifiers.yaml",
        include_str!("../rules/notifiers.yaml"),
    ),
    (
        "rules/guide-pool.yaml",
        include_str!("../rules/guide-pool.yaml"),
    ),
    (
        "rules/high-cpu-alert.yaml",
        include_str!("../rules/high-cpu-alert.yaml"),
    ),
    (
        "rules/lifecycle.yaml",
        include_str!("../rules/lifecycle.yaml"),
    ),
];

fn clock(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// The speeds the demo runs at: the 30-minute scenario takes from 5 hours to 1.8 s.
pub const SPEED_RANGE: (f64, f64) = (0.1, 1000.0);

/// Runs the demo to the end of the scenario. `log_file` is where the agent's log lines go,
/// named in the view's header; the view itself shows each decision once.
pub async fn run(speed: f64, log_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let (lo, hi) = SPEED_RANGE;
    if !(lo..=hi).contains(&speed) {
        anyhow::bail!("--speed must be from {lo} to {hi}, got {speed}");
    }
    let scenario = Scenario::parse("workers-spike.yaml", SCENARIO)?;
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
    let mut cfg = ClientConfig::new(emu.url(), "e2b_0000000000000000000000000000000000demo");
    cfg.create_rate = None; // the emulator enforces E2B's rate in virtual time
    let api: Arc<dyn E2bApi> = Arc::new(HttpClient::new(cfg)?);
    let mut agent = Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(10_000))),
            events_every: Duration::from_secs(5),
            dry_run: false,
            state_dir: None,
        },
    )?;
    println!(
        "poolpilot demo: emulator at {} (virtual time x{speed}), rules: the guide's pool pattern, high-CPU alert, crash replacement",
        emu.url()
    );
    println!(
        "scenario: an empty pool (min 2), demand of 1 busy core, a spike to 14 cores from minute 5 to 15, a sandbox crash at minute 8"
    );
    match log_file {
        Some(f) => println!("the agent's log: {}\n", f.display()),
        None => println!(),
    }
    println!(
        "{:>6}  {:>12}  {:>14}  {:>12}  {:>7}",
        "time", "demand", "capacity", "pool size", "alerts"
    );
    let tick = Duration::from_secs_f64(5.0 / speed);
    let mut shown = 0usize;
    let mut last_line = -60.0;
    let (mut creates, mut kills, mut fired, mut resolved) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let (now, start, stats) = emu.emulator.with_core(|c| (c.now(), c.start(), c.stats()));
        let t = (now - start).as_seconds_f64();
        agent.tick(now).await;
        agent.settle().await;
        let log = agent
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for d in log.iter().skip(shown) {
            let what = match &d.decision.action {
                Action::Create { count, .. } => {
                    creates += *count as u64;
                    format!("▲ +{count}")
                }
                Action::Kill { sandbox_ids, .. } => {
                    kills += sandbox_ids.len() as u64;
                    format!("▼ -{}", sandbox_ids.len())
                }
                Action::Alert(n) if n.status == AlertStatus::Firing && !n.repeat => {
                    fired += 1;
                    "! alert firing".into()
                }
                Action::Alert(n) if n.status == AlertStatus::Resolved => {
                    resolved += 1;
                    "✓ alert resolved".into()
                }
                _ => continue,
            };
            println!("{:>6}  {what:<16} {}", clock(t), d.decision.cause.summary);
        }
        shown = log.len();
        let firing: usize = agent
            .engine()
            .state()
            .alerts
            .values()
            .map(|a| {
                a.values()
                    .filter(|s| s.phase == crate::engine::AlertPhase::Firing)
                    .count()
            })
            .sum();
        if t - last_line >= 60.0 {
            last_line = t;
            let b = stats.templates.get("base");
            println!(
                "{:>6}  {:>7.1} cores  {:>8.0} cores  {:>6} sandboxes  {:>4}",
                clock(t),
                b.map_or(0.0, |b| b.demand_cores),
                b.map_or(0.0, |b| b.capacity_cores),
                b.map_or(0, |b| b.running),
                firing
            );
        }
        if t >= duration {
            println!(
                "\ndone: {creates} creates, {kills} kills, {fired} alerts fired, {resolved} resolved; {:.0} sandbox-seconds, {:.0} core-seconds of demand unmet",
                stats.sandbox_seconds, stats.unmet_core_seconds
            );
            break;
        }
        tokio::time::sleep(tick).await;
    }
    emu.stop().await;
    Ok(())
}
