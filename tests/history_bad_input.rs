//! The history store's commands given a history.db that is not what they expect: a file that
//! is not SQLite at all (`store check`, `store migrate`) and an SQLite file without the
//! schema, as an agent of another version or a half-made copy leaves it (`events report`,
//! `record`), and a store in a directory its reader cannot write, which a report must read.
//! Each bad one must fail with one line naming the file, what is wrong and what to do,
//! never a bare driver error or a wait for a connection that cannot come.

mod common;

use std::path::Path;
use std::process::Output;

fn poolpilot(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(args)
        .env_remove("POOLPILOT_CONFIG")
        .env_remove("POOLPILOT_STATE_DIR")
        .output()
        .expect("run poolpilot")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A state dir whose history.db holds `bytes`, and a rules file beside it.
fn state_dir(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = common::fresh_dir(tag);
    std::fs::write(dir.join("history.db"), bytes).expect("write history.db");
    std::fs::write(
        dir.join("rules.yaml"),
        "pools:\n  - { name: p, min: 0, max: 1 }\n",
    )
    .expect("write rules");
    dir
}

fn store(command: &str, dir: &Path) -> Output {
    let d = dir.display().to_string();
    let rules = dir.join("rules.yaml").display().to_string();
    poolpilot(&["store", command, "--state-dir", &d, "--rules", &rules])
}

#[test]
fn a_store_that_is_not_sqlite_is_named_as_such_at_once() {
    let dir = state_dir("store-not-sqlite", b"this is not a database, it is a note");
    for command in ["check", "migrate"] {
        let out = store(command, &dir);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        assert!(
            err.contains("file is not a database") && err.contains("history.db"),
            "{command} says what is wrong with which file: {err}"
        );
        assert!(
            !err.contains("timed out") && !err.contains("after_connect"),
            "{command} neither waits for a connection nor logs the driver's retries: {err}"
        );
    }
}

#[test]
fn a_store_without_the_schema_is_named_as_such_by_its_readers() {
    // A zero-length file is an empty SQLite database: no tables, no schema versions.
    let dir = state_dir("store-no-schema", b"");
    let d = dir.display().to_string();
    let out_file = dir.join("scenario.yaml").display().to_string();
    let runs = [
        poolpilot(&["events", "report", "--state-dir", &d]),
        poolpilot(&["record", "--from", &d, "--out", &out_file]),
    ];
    for out in runs {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("history.db") && err.contains("poolpilot store migrate"),
            "names the file and the way out: {err}"
        );
        assert!(
            !err.contains("no such table"),
            "no bare driver error: {err}"
        );
    }
}

/// `poolpilot args` as a user who cannot write `dir`: nobody when the tests run as root
/// (whom permissions do not stop), else the user itself.
fn as_reader(args: &[&str]) -> Output {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_poolpilot"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"))
    };
    cmd.args(args)
        .env_remove("POOLPILOT_CONFIG")
        .env_remove("POOLPILOT_STATE_DIR")
        .output()
        .expect("run poolpilot (as nobody through setpriv, from util-linux, when root)")
}

/// Moves everything in `file`'s WAL into the file and removes the WAL, as an agent that
/// stops cleanly leaves its store.
fn checkpoint(file: &Path) {
    use sqlx::{Connection as _, Executor as _};
    let url = format!("sqlite://{}", file.display());
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("open");
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            .await
            .expect("checkpoint");
        conn.close().await.expect("close");
    });
    let _ = std::fs::remove_file(file.with_extension("db-wal"));
    let _ = std::fs::remove_file(file.with_extension("db-shm"));
}

#[test]
fn a_store_in_a_read_only_directory_is_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = state_dir("store-read-only", b"");
    std::fs::remove_file(dir.join("history.db")).expect("remove the empty file");
    let out = store("migrate", &dir);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    checkpoint(&dir.join("history.db"));
    for (path, mode) in [(dir.join("history.db"), 0o644), (dir.clone(), 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let d = dir.display().to_string();
    let out = as_reader(&["events", "report", "--state-dir", &d, "--json"]);
    assert!(out.status.success(), "report: {}", stderr(&out));
}
