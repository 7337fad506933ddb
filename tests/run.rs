//! `poolpilot run` in-process against the emulator: ready after the first poll, pools served,
//! a broken rule edit keeps the old rules (and a fix is taken), metrics exposed, and a graceful
//! shutdown saves state. Waits are bounded polls of observable conditions.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use poolpilot::agent::config::Config;

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_reloads_and_shuts_down_cleanly() {
    let emu = common::emulator(common::options()).await;
    let dir = common::fresh_dir("run");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/pool.yaml"),
        "pools:\n  - { name: w, min: 2, max: 4 }\n",
    )
    .unwrap();
    std::fs::write(dir.join("key"), format!("{}\n", common::KEY)).unwrap();
    let port = common::free_port();
    std::fs::write(
        dir.join("poolpilot.yaml"),
        format!("api: {{ url: \"{}\", key_file: key }}\nrules: [rules/]\nstate_dir: state\nlisten: 127.0.0.1:{port}\npoll: {{ metrics: 200ms, events: 1s }}\n", emu.url()),
    )
    .unwrap();
    let cfg = Config::load(&dir.join("poolpilot.yaml")).unwrap();
    assert_eq!(cfg.state_dir, dir.join("state"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let agent = tokio::spawn(poolpilot::agent::run::run(
        cfg,
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    let base = format!("http://127.0.0.1:{port}");

    until("healthz", async || {
        get(&format!("{base}/healthz")).await.0 == 200
    })
    .await;
    until("ready", async || {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;
    until("min 2 running", async || {
        let (_, body) = get(&format!("{base}/api/v1/pools")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v[0]["actual"] == 2
    })
    .await;

    // A broken edit: the old rules stay, the failure is counted; a fixed edit is taken.
    std::fs::write(
        dir.join("rules/pool.yaml"),
        "pools:\n  - { name: w, min: 9, max: 4 }\n",
    )
    .unwrap();
    until("failed reload", async || {
        get(&format!("{base}/metrics"))
            .await
            .1
            .contains("poolpilot_rule_reloads_total{result=\"failed\"} 1")
    })
    .await;
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains("poolpilot_pool_size{pool=\"w\",kind=\"actual\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("poolpilot_up 1"));
    assert!(
        metrics.contains(
            "poolpilot_api_requests_total{endpoint=\"GET /sandboxes/metrics\",status=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "poolpilot_api_request_seconds_bucket{endpoint=\"POST /v2/sandboxes\",le=\"+Inf\"} 2"
        ),
        "{metrics}"
    );
    // Editors replace files by rename: write elsewhere, then move over.
    std::fs::write(
        dir.join("pool.yaml.new"),
        "pools:\n  - { name: w, min: 3, max: 4 }\n",
    )
    .unwrap();
    std::fs::rename(dir.join("pool.yaml.new"), dir.join("rules/pool.yaml")).unwrap();
    until("3 running after the fix", async || {
        let (_, body) = get(&format!("{base}/api/v1/pools")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v[0]["actual"] == 3
    })
    .await;
    let (_, decisions) = get(&format!("{base}/api/v1/decisions")).await;
    let d: Vec<serde_json::Value> = serde_json::from_str(&decisions).unwrap();
    assert!(
        d.iter().any(|d| d["cause"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("raised to min 3")),
        "{decisions}"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/state.json")).unwrap())
            .unwrap();
    assert!(state["engine"]["pools"]["w"].is_object());
    assert!(Path::new(&dir.join("state/decisions.jsonl")).exists());
    std::fs::remove_dir_all(&dir).ok();
}
