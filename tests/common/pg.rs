//! A throwaway PostgreSQL cluster on loopback for the tests that need a real one: `initdb`
//! into a temporary folder, `pg_ctl start` on a free port, trust authentication for the
//! `poolpilot` role on 127.0.0.1 only. Debian's `postgresql` package provides the binaries
//! (scripts/test.sh installs it); a test fails, never skips, when they are missing. As root
//! (initdb refuses root) the cluster runs as the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; stopped (immediately) and removed when dropped.
pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

/// The folder of Debian's PostgreSQL binaries (the newest version installed).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql is missing): run scripts/test.sh, which installs Debian's postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin: install Debian's postgresql")
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL binary's command, as `postgres` when this process is root.
fn command(bin: &Path) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Runs a PostgreSQL binary; fails the test when it fails.
fn run(bin: &Path, args: &[&str]) {
    let out = command(bin)
        .args(args)
        .output()
        .expect("run a PostgreSQL binary");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// Creates and starts a cluster named by `tag`.
    pub fn start(tag: &str) -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("poolpilot-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster's folder");
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success(), "chown the cluster's folder to postgres");
        }
        let data = dir.join("data");
        run(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "poolpilot",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let pg = Postgres {
            dir,
            port: super::free_port(),
            bin,
        };
        pg.start_again();
        pg
    }

    /// Starts the (stopped) cluster again, waiting until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the cluster at once (`-m immediate`: as a crash would).
    pub fn stop(&self) {
        run(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// The URL of database `db`, created when missing.
    pub async fn database(&self, db: &str) -> String {
        sqlx::any::install_default_drivers();
        let admin = format!("postgres://poolpilot@127.0.0.1:{}/postgres", self.port);
        let pool = sqlx::AnyPool::connect(&admin)
            .await
            .expect("connect to the cluster");
        let _ = sqlx::query(&format!("CREATE DATABASE \"{db}\""))
            .execute(&pool)
            .await;
        pool.close().await;
        format!("postgres://poolpilot@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = command(&self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
