//! `poolpilot events report --from-api` end to end: the real binary against the emulator on
//! loopback, after sandboxes were created, paused, resumed and killed through the client, and
//! one was crashed by a scenario fault. Asserts on the JSON, the table, the pool filter and
//! the errors for a missing source and a bad `--since`.

mod common;

use std::process::Output;

use chrono::Utc;
use poolpilot::e2b::{E2bApi, Metadata, NewSandbox};
use poolpilot::emulator::{Clock, RunningEmulator, Scenario};
use serde_json::Value;

/// Runs the binary with the emulator's URL and key in the environment.
async fn poolpilot(emu: &RunningEmulator, args: &[&str]) -> Output {
    let url = emu.url();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(&args)
            .env("E2B_API_URL", url)
            .env("E2B_API_KEY", common::KEY)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("POOLPILOT_API_KEY_FILE")
            .output()
            .expect("run poolpilot")
    })
    .await
    .expect("the command's thread")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An emulator on a manual clock that started an hour ago, whose scenario crashes one running
/// `base` sandbox 30 minutes in.
async fn emulator() -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.start_at = Some(Utc::now() - chrono::Duration::hours(1));
    opts.scenario = Scenario::parse(
        "s.yaml",
        "templates:\n  base: { boot: 0s }\nfaults:\n  - { at: 30m, kill: 1, template: base }\n",
    )
    .expect("the scenario");
    common::emulator(opts).await
}

async fn create(api: &dyn E2bApi, key: &str, pool: Option<&str>) -> String {
    let metadata = pool.map(|p| Metadata::from([("poolpilot_pool".to_string(), p.to_string())]));
    api.create_sandbox(
        &NewSandbox {
            template_id: "base".into(),
            timeout: Some(3600),
            metadata,
            ..Default::default()
        },
        key,
    )
    .await
    .expect("create")
    .sandbox_id
}

/// Three `workers` sandboxes and one unowned: two workers and the unowned killed on request
/// at 10 minutes (one of them paused and resumed first), the third worker crashed at 30.
async fn history(emu: &RunningEmulator) {
    let api = common::client(&emu.url());
    let w: Vec<String> = [
        create(&api, "w1", Some("workers")).await,
        create(&api, "w2", Some("workers")).await,
        create(&api, "w3", Some("workers")).await,
    ]
    .into();
    let free = create(&api, "free", None).await;
    api.pause_sandbox(&w[0]).await.expect("pause");
    api.connect_sandbox(&w[0], 3600).await.expect("resume");
    common::advance(&emu.url(), "10m").await;
    for id in [&w[0], &w[1], &free] {
        api.kill_sandbox(id).await.expect("kill");
    }
    common::advance(&emu.url(), "25m").await;
}

fn group<'a>(report: &'a Value, pool: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["pool"] == pool)
        .unwrap_or_else(|| panic!("no group of pool {pool}: {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_from_api_counts_lifetimes_kills_and_crashes_per_pool() {
    let emu = emulator().await;
    history(&emu).await;

    let o = poolpilot(
        &emu,
        &["events", "report", "--from-api", "--since", "2h", "--json"],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let w = group(&r, "workers");
    assert_eq!(w["template"], "base", "{r:#}");
    assert_eq!(
        (w["created"].as_u64(), w["killed"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        w["kill_reasons"],
        serde_json::json!({"request": 2, "unknown": 1})
    );
    let crash = w["crash_rate"].as_f64().expect("a crash rate");
    assert!((crash - 1.0 / 3.0).abs() < 1e-9, "{w:#}");
    assert_eq!(
        (w["paused"].as_u64(), w["resumed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(w["lifetime_seconds"]["count"], 3);
    assert_eq!(w["lifetime_seconds"]["p50"], 600.0);
    assert_eq!(w["lifetime_seconds"]["p99"], 1800.0);
    assert_eq!(w["creates_per_hour"], 1.5);
    assert_eq!(w["busiest_hours_utc"][0]["creates"], 3);
    let free = group(&r, "-");
    assert_eq!(free["created"], 1);
    assert_eq!(free["crash_rate"], 0.0);
    assert_eq!(r["events"], 10, "{r:#}");

    let only = poolpilot(
        &emu,
        &[
            "events",
            "report",
            "--from-api",
            "--since",
            "2h",
            "--json",
            "--pool",
            "-",
        ],
    )
    .await;
    let only: Value = serde_json::from_slice(&only.stdout).expect("JSON");
    assert_eq!(only["groups"].as_array().map(Vec::len), Some(1), "{only:#}");
    assert_eq!(only["pool"], "-");

    let table = poolpilot(&emu, &["events", "report", "--from-api", "--since", "2h"]).await;
    let t = text(&table);
    assert!(table.status.success(), "{t}");
    assert!(t.contains("TEMPLATE  POOL"), "{t}");
    let row = t
        .lines()
        .find(|l| l.contains("workers"))
        .expect("a workers row");
    for cell in ["10m0s", "30m0s", "33.3%", "request=2 unknown=1"] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_without_a_source_or_with_a_bad_since_says_what_would_do() {
    let emu = emulator().await;
    let o = poolpilot(&emu, &["events", "report"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--from-api"), "{}", text(&o));
    assert!(text(&o).contains("history store"), "{}", text(&o));
    for bad in ["30s", "3651d", "soon"] {
        let o = poolpilot(&emu, &["events", "report", "--from-api", "--since", bad]).await;
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(text(&o).contains("from 1m to 3650d"), "{bad}: {}", text(&o));
    }
    emu.stop().await;
}
