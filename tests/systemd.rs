//! systemd: the shipped unit passes `systemd-analyze verify`, and the real binary speaks the
//! notify protocol to a socket the test owns, the way systemd runs it: READY=1 after the first
//! poll, WATCHDOG=1 while healthy, RELOADING=1 (with MONOTONIC_USEC) then READY=1 on SIGHUP, and
//! STOPPING=1 on SIGTERM, with a clean exit.

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
    let dir = common::fresh_dir("notify");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/pool.yaml"),
        "pools:\n  - { name: w, min: 1, max: 2 }\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("creds")).unwrap();
    std::fs::write(dir.join("creds/e2b-api-key"), common::KEY).unwrap();
    let port = common::free_port();
    std::fs::write(
        dir.join("poolpilot.yaml"),
        format!("api: {{ url: \"{}\" }}\nrules: [rules/]\nstate_dir: state\nlisten: 127.0.0.1:{port}\npoll: {{ metrics: 200ms }}\n", emu.url()),
    )
    .unwrap();
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
