//! `poolpilot record` end to end: the real agent plays the spike shape
//! (examples/scenarios/shapes/spike.yaml) under the recommended rules in virtual time, as
//! `simulate` runs it, keeping its history in a state dir; `poolpilot record` turns that
//! history into a scenario; and `simulate` replays the recording with the same rules. The
//! replayed demand and its minute-by-minute curve match the original run's within 5% (10% of
//! the peak per minute), its perfect-foresight floor within 10%. Deterministic: virtual time, seeded scenario, and the
//! history's writer flushed before the store is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use poolpilot::emulator::{CoreConfig, Scenario};
use poolpilot::rules::{RuleSet, load_str};
use poolpilot::simulate::world::{AgentSetup, World};
use poolpilot::simulate::{SimOptions, SimReport, simulate};
use poolpilot::store::{History, Retention};

const RULES: &str = "examples/rules/recommended.yaml";
const SPIKE: &str = "examples/scenarios/shapes/spike.yaml";
const TICK: Duration = Duration::from_secs(5);

fn rules() -> Arc<RuleSet> {
    let text = std::fs::read_to_string(RULES).expect("read the rules");
    Arc::new(load_str(&[(RULES, &text)]).expect("the rules load"))
}

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_787_200, 0).expect("a time")
}

fn state_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolpilot-record-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the state dir");
    dir
}

/// The agent over `scenario` in virtual time, as `simulate` drives it (webhooks every second,
/// a tick every [`TICK`]), keeping its history in `dir`. The store's writer runs on a runtime
/// of its own with real time: SQLite works on its own thread, which a paused clock would not
/// wait for. Returns once everything recorded is written.
fn play_with_history(scenario: &Scenario, dir: &Path) {
    let side = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the store");
    let clock: poolpilot::store::Clock = Arc::new(start);
    let history = side
        .block_on(History::open_in(dir, Retention::default(), clock))
        .expect("open the history store");
    let sim = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    let seconds = scenario.duration.expect("a duration").0.as_secs();
    sim.block_on(async {
        let setup = AgentSetup {
            events_every: Duration::from_secs(10),
        };
        let mut world = World::new(rules(), scenario, CoreConfig::default(), start(), setup);
        world.agent.keep_history(history.clone());
        let t0 = tokio::time::Instant::now();
        for s in 0..=seconds {
            tokio::time::sleep_until(t0 + Duration::from_secs(s)).await;
            world.deliver_webhooks().await;
            if s % TICK.as_secs() == 0 {
                world.tick().await;
            }
        }
        world.agent.settle().await;
    });
    side.block_on(history.flush());
}

/// `poolpilot record` on `dir`, writing `out`; its stdout.
fn record(dir: &Path, out: &Path) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["record", "--from"])
        .arg(dir)
        .args(["--step", "30s", "--out"])
        .arg(out)
        .output()
        .expect("run poolpilot record");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "record failed: {stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

fn run(scenario: &Scenario) -> SimReport {
    simulate(rules(), scenario, &SimOptions::default())
}

/// Mean demand of `template` per minute of a run, from its frames.
fn per_minute(r: &SimReport, template: &str) -> Vec<f64> {
    let mut sums: Vec<(f64, u32)> = Vec::new();
    for f in &r.frames {
        let m = (f.t_s / 60.0) as usize;
        if sums.len() <= m {
            sums.resize(m + 1, (0.0, 0));
        }
        sums[m].0 += f.demand.get(template).copied().unwrap_or(0.0);
        sums[m].1 += 1;
    }
    sums.iter()
        .map(|(s, n)| s / f64::from((*n).max(1)))
        .collect()
}

/// The minutes the recording's comment says were saturated.
fn saturated_minutes(text: &str) -> Vec<usize> {
    let Some(line) = text
        .lines()
        .find_map(|l| l.split("likely higher): ").nth(1))
    else {
        return Vec::new();
    };
    let secs = |t: &str| {
        humantime::parse_duration(t.trim())
            .expect("a span")
            .as_secs() as usize
    };
    line.split(", ")
        .flat_map(|span| {
            let (a, b) = span.split_once('-').expect("from-to");
            secs(a) / 60..secs(b).div_ceil(60)
        })
        .collect()
}

fn within(a: f64, b: f64, share: f64) -> bool {
    (a - b).abs() <= share * a.abs().max(b.abs())
}

#[test]
fn a_recorded_spike_replays_with_the_same_demand() {
    let spike = Scenario::load(Path::new(SPIKE)).expect("the spike loads");
    let dir = state_dir("spike");
    play_with_history(&spike, &dir);
    let out = dir.join("recorded.yaml");
    let said = record(&dir, &out);
    assert!(said.starts_with("recorded 40m of pools workers"), "{said}");
    let text = std::fs::read_to_string(&out).expect("the recording");
    let recorded = Scenario::load(&out).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let t = &recorded.templates["base"];
    assert_eq!(
        (t.cpu_count, t.memory_mb, t.disk_mb),
        (2, 512, 2048),
        "{text}"
    );
    // The emulator stamps a created event at the call: the boot cannot be measured.
    assert_eq!(t.boot.0, Duration::from_secs(1), "{text}");
    assert!(text.contains("boot not measurable"), "{text}");

    let original = run(&spike);
    let replay = run(&recorded);
    let (a, b) = (&original.total, &replay.total);
    assert!(
        within(a.demand_core_seconds, b.demand_core_seconds, 0.05),
        "demand: {} recorded as {}\n{text}",
        a.demand_core_seconds,
        b.demand_core_seconds
    );
    // The floor rounds demand up to whole sandboxes, and the spike sits on exact multiples of
    // 2 cores: the ±1% of sampling noise left after averaging tips some steps over to one more
    // sandbox. Hence 10% here where demand itself is held to 5%.
    assert!(
        within(a.floor_sandbox_seconds, b.floor_sandbox_seconds, 0.10),
        "floor: {} recorded as {}",
        a.floor_sandbox_seconds,
        b.floor_sandbox_seconds
    );
    let saturated = saturated_minutes(&text);
    assert!(
        saturated.contains(&10),
        "the spike's ramp is saturated: {text}"
    );
    let (m1, m2) = (per_minute(&original, "base"), per_minute(&replay, "base"));
    for (m, (x, y)) in m1.iter().zip(&m2).enumerate() {
        if saturated.contains(&m) {
            // Capped at the pool's capacity: what the agent saw, no more.
            assert!(
                y <= &(x + 4.0),
                "minute {m}: {x:.2} recorded as {y:.2}\n{text}"
            );
            continue;
        }
        // Within 10% of the peak (40 cores), minute by minute.
        assert!(
            (x - y).abs() <= 4.0,
            "minute {m}: {x:.2} recorded as {y:.2}\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_says_what_is_wrong_with_its_input() {
    let dir = state_dir("empty");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["record", "--from"])
        .arg(&dir)
        .args(["--out", "-"])
        .output()
        .expect("run poolpilot record");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no history store at"), "{err}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["record", "--from", ".", "--since", "soon", "--out", "-"])
        .output()
        .expect("run poolpilot record");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
