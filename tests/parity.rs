//! One control path: the same scenario and rules run through `poolpilot run` against
//! `poolpilot emulator --speed N` (both in this process, over loopback, on the wall clock) and
//! through `simulate` (virtual time) cost the same sandbox-seconds and leave the same demand
//! unmet, within a few percent. Also: the agent's `speed` refuses to start against anything
//! that is not the emulator.
//!
//! The live run takes about [`WALL_SECONDS`] of wall time. Nothing here asserts on timing:
//! waits are bounded, and the comparison allows for the few virtual seconds that wall-clock
//! jitter (a slow turn, a loaded machine) shifts the agent's reactions by.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AgentDir, KeyIn};
use poolpilot::emulator::{Clock, CoreConfig, EmulatorOptions, Scenario};
use poolpilot::rules::load_str;
use poolpilot::simulate::{SimOptions, simulate};
use serde_json::Value;

/// Quiet, a spike to 14 busy cores for four minutes, quiet again: the guide's pool has to grow
/// from 2 to 8 sandboxes one step at a time and give them back, so when it reacts shows in
/// both the cost and the unmet demand. No noise, no `initial:` sandboxes: every sandbox of
/// the template is a pool member, so the emulator's count and `simulate`'s per-pool count
/// measure the same thing.
const SCENARIO: &str = r#"
duration: 10m
seed: 11
templates:
  base: { cpu_count: 2, memory_mb: 512, disk_mb: 2048, boot: 2s }
load:
  - template: base
    points: [[0s, 1.0], [2m, 1.0], [2m30s, 18.0], [6m, 18.0], [6m30s, 1.0]]
"#;

/// The scenario's length, in virtual seconds.
const DURATION_S: f64 = 600.0;

/// Virtual seconds per wall-clock second: 10 minutes in about [`WALL_SECONDS`]. The agent
/// then ticks every 12.5 ms of wall time ([`POLL`] / 20), longer than a turn takes here.
const SPEED: f64 = 20.0;
const WALL_SECONDS: f64 = DURATION_S / SPEED;

/// The agent's poll interval on both paths. Short beside the pool's 15 s scale interval: on
/// the wall clock a turn that comes a hair early for an evaluation puts it off by a whole
/// poll (about half the time, from jitter alone), which virtual time never does. At 5 s
/// polls that alone made `run` react some 10% slower than `simulate` predicts.
const POLL: Duration = Duration::from_millis(250);

/// The two paths' results: sandbox-seconds, unmet and asked-for core-seconds.
#[derive(Debug)]
struct Outcome {
    sandbox_seconds: f64,
    unmet_core_seconds: f64,
    demand_core_seconds: f64,
}

impl Outcome {
    fn unmet_pct(&self) -> f64 {
        100.0 * self.unmet_core_seconds / self.demand_core_seconds
    }
}

fn rules_text() -> String {
    std::fs::read_to_string("rules/guide-pool.yaml").expect("read rules/guide-pool.yaml")
}

/// `simulate` on the scenario and rules, with E2B's Pro limits (the emulator's defaults).
async fn through_simulate() -> Outcome {
    let rules = load_str(&[("rules/guide-pool.yaml", &rules_text())]).expect("the rules load");
    let scenario = Scenario::parse("parity.yaml", SCENARIO).expect("the scenario loads");
    let report = tokio::task::spawn_blocking(move || {
        let opts = SimOptions {
            tick: POLL,
            ..SimOptions::default()
        };
        simulate(Arc::new(rules), &scenario, &opts)
    })
    .await
    .expect("simulate finishes");
    Outcome {
        sandbox_seconds: report.total.sandbox_seconds,
        unmet_core_seconds: report.total.unmet_core_seconds,
        // The same curve over the same span as the emulator's: its integral, by hand.
        // 2m at 1, 30s rising to 18, 3m30s at 18, 30s falling to 1, 3m30s at 1.
        demand_core_seconds: 120.0 + 30.0 * 9.5 + 210.0 * 18.0 + 30.0 * 9.5 + 210.0,
    }
}

/// `poolpilot run` (speed [`SPEED`], webhooks on) against the emulator at the same speed,
/// until the scenario's end; the emulator's own totals, cut back to the scenario's end.
async fn through_run() -> Outcome {
    let opts = EmulatorOptions {
        core: CoreConfig::default(),
        scenario: Scenario::parse("parity.yaml", SCENARIO).expect("the scenario loads"),
        clock: Clock::Wall { speed: SPEED },
        tick: Duration::from_millis(10),
        ..common::options()
    };
    let emu = common::emulator(opts).await;
    let dir = AgentDir::new(
        "parity",
        &emu.url(),
        &rules_text(),
        KeyIn::File,
        &format!(
            "speed: {SPEED}\npoll: {{ metrics: {}ms }}\n",
            POLL.as_millis()
        ),
    );
    // Webhooks on, registered with the emulator at the agent's own address.
    std::fs::write(dir.dir.join("secret"), "parity-secret").expect("write the secret");
    let webhook = format!(
        "webhook: {{ secret_file: secret, public_url: \"{}/webhooks/e2b\" }}\n",
        dir.base()
    );
    let cfg = std::fs::read_to_string(dir.config_path()).expect("read poolpilot.yaml");
    std::fs::write(dir.config_path(), cfg + &webhook).expect("write poolpilot.yaml");

    let agent = dir.spawn();
    let stats_url = format!("{}/_emulator/stats", emu.url());
    let stats = async || -> Value {
        serde_json::from_str(&common::get(&stats_url).await.1).unwrap_or(Value::Null)
    };
    // Generous: several times the expected wall time, for a loaded machine.
    let bound = (WALL_SECONDS * 6.0) as u64 + 60;
    common::until("the scenario's end", bound, async || {
        stats().await["elapsed_s"].as_f64().unwrap_or(0.0) >= DURATION_S
    })
    .await;
    let end = stats().await;
    let _ = agent.stop.send(());
    let ran = tokio::time::timeout(Duration::from_secs(30), agent.task).await;
    assert!(
        matches!(ran, Ok(Ok(Ok(())))),
        "the agent stops cleanly: {ran:?}"
    );
    let hooks = &end["webhook_deliveries"];
    assert!(
        hooks["delivered"].as_u64().unwrap_or(0) > 0,
        "the agent took webhooks: {hooks}"
    );
    cut_to_end(&end)
}

/// The emulator's totals at `DURATION_S`: the stats are read a moment after it, so the time
/// past it is taken back at the rates of that moment (nothing changes in a few virtual seconds
/// of quiet at the end).
fn cut_to_end(s: &Value) -> Outcome {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let over = (f(&s["elapsed_s"]) - DURATION_S).max(0.0);
    let base = &s["templates"]["base"];
    let (demand, capacity) = (f(&base["demand_cores"]), f(&base["capacity_cores"]));
    Outcome {
        sandbox_seconds: f(&s["sandbox_seconds"]) - over * f(&s["running"]),
        unmet_core_seconds: f(&s["unmet_core_seconds"]) - over * (demand - capacity).max(0.0),
        demand_core_seconds: f(&s["demand_core_seconds"]) - over * demand,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_sped_up_emulator_costs_what_simulate_says() {
    let sim = through_simulate().await;
    let live = through_run().await;
    eprintln!("simulate: {sim:?}, unmet {:.2}% of demand", sim.unmet_pct());
    eprintln!(
        "run --speed {SPEED}: {live:?}, unmet {:.2}% of demand",
        live.unmet_pct()
    );

    // Both saw the same demand: the emulator's integral is the curve's.
    let demand_gap = (live.demand_core_seconds - sim.demand_core_seconds).abs();
    assert!(
        demand_gap / sim.demand_core_seconds < 0.01,
        "demand: {live:?} vs {sim:?}"
    );
    let cost_gap = (live.sandbox_seconds - sim.sandbox_seconds).abs() / sim.sandbox_seconds;
    assert!(
        cost_gap < 0.05,
        "sandbox-seconds differ by {:.1}%: run {:.0}, simulate {:.0}",
        100.0 * cost_gap,
        live.sandbox_seconds,
        sim.sandbox_seconds
    );
    let unmet_gap = (live.unmet_pct() - sim.unmet_pct()).abs();
    assert!(
        unmet_gap < 2.0,
        "unmet differs by {unmet_gap:.2} points of demand: run {:.2}%, simulate {:.2}%",
        live.unmet_pct(),
        sim.unmet_pct()
    );
}

#[tokio::test]
async fn a_speed_against_anything_but_the_emulator_refuses_to_start() {
    // Nothing listens here: no `/_emulator/stats`, as on E2B.
    let url = format!("http://127.0.0.1:{}", common::free_port());
    let dir = AgentDir::new(
        "speed-no-emulator",
        &url,
        &rules_text(),
        KeyIn::File,
        "speed: 10\n",
    );
    let agent = dir.spawn();
    let out = tokio::time::timeout(Duration::from_secs(30), agent.task)
        .await
        .expect("it stops at once")
        .expect("no panic");
    let e = format!("{:#}", out.expect_err("it refuses to start"));
    assert!(e.starts_with("speed 10: "), "{e}");
    assert!(e.contains("/_emulator/stats did not answer"), "{e}");
    assert!(
        e.contains("only for running against `poolpilot emulator --speed N`"),
        "{e}"
    );
}

#[tokio::test]
async fn a_speed_out_of_range_is_refused_with_what_is_valid() {
    let dir = AgentDir::new(
        "speed-range",
        "http://127.0.0.1:9",
        &rules_text(),
        KeyIn::File,
        "speed: 0.5\n",
    );
    let e = poolpilot::agent::config::Config::load(&dir.config_path())
        .expect_err("0.5 is refused")
        .to_string();
    assert!(
        e.contains("`speed` must be from 1 to 1000 virtual seconds per second"),
        "{e}"
    );
    assert!(e.contains("got 0.5"), "{e}");
}
