//! systemd: the shipped unit passes `systemd-analyze verify`, and the real binary speaks the
//! notify protocol to a socket the test owns, the way systemd runs it: READY=1 after the first
//! poll, WATCHDOG=1 while healthy, RELOADING=1 (with MONOTONIC_USEC) then READY=1 on SIGHUP, and
//! STOPPING=1 on SIGTERM, with a clean exit. During an E2B outage readiness and `poolpilot_up`
//! drop, with the reason, and come back when it ends, while WATCHDOG=1 keeps coming: the
//! watchdog says the loop is alive, readiness says it can see E2B.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(root().join("examples/poolpilot.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/poolpilot", env!("CARGO_BIN_EXE_poolpilot"));
    let dir = std::env::temp_dir().join(format!("poolpilot-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("poolpilot.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}); scripts/test.sh installs systemd")
        });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    assert!(
        !err.contains("Unknown key") && !err.contains("Failed to parse"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

async fn next(sock: &tokio::net::UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} from poolpilot; got {seen:?}"))
            .unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_speaks_the_notify_protocol() {
    let emu = common::emulator(common::options()).await;
    let agent_dir = common::AgentDir::new(
        "notify",
        &emu.url(),
        "pools:\n  - { name: w, min: 1, max: 2 }\n",
        common::KeyIn::Credentials,
        "poll: { metrics: 200ms }\n",
    );
    let dir = agent_dir.dir.clone();
    let sock_path = dir.join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["run", "--config"])
        .arg(dir.join("poolpilot.yaml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        // The key comes from the systemd credential, as LoadCredential= provides it.
        .env("CREDENTIALS_DIRECTORY", dir.join("creds"))
        .env_remove("E2B_API_KEY")
        .env("POOLPILOT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut seen = Vec::new();
    next(&sock, &mut seen, "READY=1").await;
    next(&sock, &mut seen, "WATCHDOG=1").await;
    seen.clear();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    next(&sock, &mut seen, "RELOADING=1").await;
    assert!(
        seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    next(&sock, &mut seen, "READY=1").await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    next(&sock, &mut seen, "STOPPING=1").await;
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit: {status:?}");
    assert!(dir.join("state/state.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Reads every notification as it comes, as systemd does (a reader that falls behind would
/// make the agent's sends block once the socket's queue is full), into a channel.
fn drain(sock: tokio::net::UnixDatagram) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf).await {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Waits up to 20 s for a notification with the line `want`, dropping the ones before it.
async fn next_drained(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} from poolpilot"))
            .expect("the socket is open");
        if m.lines().any(|l| l == want) {
            return;
        }
    }
}

/// `/readyz`'s status and JSON body.
async fn readyz(base: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The value of `poolpilot_up` in `/metrics`.
async fn up(base: &str) -> String {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("poolpilot_up "))
        .unwrap_or("missing")
        .to_string()
}

/// Asks `/readyz` every 50 ms until it answers `want`, for at most `secs` seconds.
async fn until_ready_is(base: &str, want: u16, secs: u64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = readyz(base).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {status} after {secs}s, not {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_e2b_outage_makes_it_unready_while_the_watchdog_keeps_beating() {
    let emu = common::emulator(common::options()).await;
    let agent_dir = common::AgentDir::new(
        "outage",
        &emu.url(),
        "pools:\n  - { name: w, min: 1, max: 2 }\n",
        common::KeyIn::File,
        "poll: { metrics: 200ms }\n",
    );
    let dir = agent_dir.dir.clone();
    let port = agent_dir.port;
    let sock_path = dir.join("notify.sock");
    let mut notes = drain(tokio::net::UnixDatagram::bind(&sock_path).unwrap());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(["run", "--config"])
        .arg(dir.join("poolpilot.yaml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("E2B_API_KEY")
        .env("POOLPILOT_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    next_drained(&mut notes, "READY=1").await;
    until_ready_is(&base, 200, 10).await;
    assert_eq!(up(&base).await, "1");

    // Every E2B request answers 503 for 10 s; a turn retries for about 1.5 s before it fails,
    // so three turns in a row fail well within it.
    let fault = common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&serde_json::json!({ "status": 503, "for": "10s" }))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let body = until_ready_is(&base, 503, 10).await;
    assert_eq!(body["ready"], false, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("in a row"), "{body}");
    assert!(reason.contains("503"), "the last error is named: {body}");
    assert!(body["last_success"].is_string(), "{body}");
    assert_eq!(up(&base).await, "0");
    // The loop is alive: the watchdog keeps beating while E2B cannot be seen.
    while notes.try_recv().is_ok() {}
    next_drained(&mut notes, "WATCHDOG=1").await;
    assert_eq!(readyz(&base).await.0, 503, "still in the outage");

    // The outage ends: ready again.
    let body = until_ready_is(&base, 200, 20).await;
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(up(&base).await, "1");
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().unwrap().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "exit: {status:?}");
    std::fs::remove_dir_all(&dir).ok();
}
