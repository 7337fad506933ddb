//! `poolpilot run` in-process against the emulator: ready after the first poll, pools served,
//! a broken rule edit keeps the old rules (and a fix is taken), metrics exposed, a graceful
//! shutdown saves state, and slow clients holding every connection slot starve neither the
//! health endpoints nor the loop. Waits are bounded polls of observable conditions.

mod common;

use std::path::Path;
use std::time::Duration;

use poolpilot::agent::config::Config;

async fn until(what: &str, f: impl AsyncFnMut() -> bool) {
    common::until(what, 20, f).await
}

use common::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_reloads_and_shuts_down_cleanly() {
    let emu = common::emulator(common::options()).await;
    let agent_dir = common::AgentDir::new(
        "run",
        &emu.url(),
        "pools:\n  - { name: w, min: 2, max: 4 }\n",
        common::KeyIn::File,
        "poll: { metrics: 200ms, events: 1s }\n",
    );
    let dir = agent_dir.dir.clone();
    let cfg = Config::load(&agent_dir.config_path()).unwrap();
    assert_eq!(cfg.state_dir, dir.join("state"));
    let common::InProcessAgent {
        task: agent,
        stop: stop_tx,
        ..
    } = agent_dir.spawn();
    let base = agent_dir.base();

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
        metrics.contains("poolpilot_pool_actual_sandboxes{pool=\"w\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("poolpilot_up 1"));
    assert!(
        metrics.contains(
            "poolpilot_e2b_request_duration_seconds_count{method=\"GET\",route=\"/sandboxes/metrics\",code=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "poolpilot_e2b_request_duration_seconds_bucket{method=\"POST\",route=\"/v2/sandboxes\",code=\"201\",le=\"+Inf\"} 2"
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

fn ticks_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("poolpilot_ticks_total{result=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// True when the agent has closed `s`, within a bounded wait.
async fn closed(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_holding_every_slot_starve_neither_health_nor_ticks() {
    use tokio::io::AsyncWriteExt;
    let emu = common::emulator(common::options()).await;
    // Timeouts that never fire within the test: only the connection limit is at work.
    let agent_dir = common::AgentDir::new(
        "run-slow",
        &emu.url(),
        "pools:\n  - { name: w, min: 1, max: 2 }\n",
        common::KeyIn::File,
        "poll: { metrics: 100ms, events: 1s }\nwebhook: { secret_file: secret }\nlimits: { max_connections: 16, header_timeout: 1h, body_timeout: 1h }\n",
    );
    let dir = agent_dir.dir.clone();
    std::fs::write(dir.join("secret"), "whsec").unwrap();
    let common::InProcessAgent {
        task: agent,
        stop: stop_tx,
        ..
    } = agent_dir.spawn();
    let base = agent_dir.base();
    let port = agent_dir.port;
    until("ready", async || {
        get(&format!("{base}/readyz")).await.0 == 200
    })
    .await;

    // The attack of the report, scaled down: each sends its headers and one body byte, and no
    // signature. Four times as many as there are slots.
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            b"POST /webhooks/e2b HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    let answered = async |path: &str| {
        tokio::time::timeout(Duration::from_secs(5), get(&format!("{base}{path}")))
            .await
            .unwrap_or((0, String::new()))
    };
    assert_eq!(answered("/healthz").await.0, 200);
    assert_eq!(answered("/readyz").await.0, 200);
    let before = ticks_ok(&answered("/metrics").await.1);
    until("more ticks under attack", async || {
        ticks_ok(&answered("/metrics").await.1) >= before + 3
    })
    .await;
    let mut closed_count = 0;
    for s in &mut slow {
        if closed(s).await {
            closed_count += 1;
        }
    }
    assert!(
        closed_count >= 64 - 16,
        "at most 16 connections are held; {} slow ones still are",
        64 - closed_count
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .expect("shut down in time, slow clients or not")
        .unwrap()
        .unwrap();
    assert!(dir.join("state/state.json").exists(), "state saved");
    std::fs::remove_dir_all(&dir).ok();
}
