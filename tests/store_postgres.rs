//! The store on a real PostgreSQL (a throwaway cluster on loopback, `common::pg`): the same
//! migrations and queries as SQLite for the history, and what replicas share (issue 14): the
//! leader's lease with its generation, fenced writes of the saved state and of the ids of
//! events acted on, and a store that goes away and comes back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use poolpilot::e2b::LifecycleEvent;
use poolpilot::store::lease::{LEADER, Lease};
use poolpilot::store::read::{self, AlertFilter, Cursor, EventFilter};
use poolpilot::store::shared::{Shared, SharedError};
use poolpilot::store::{History, Record, Retention, Source};

fn at(s: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn event(id: &str, sandbox: &str, ty: &str, s: i64) -> LifecycleEvent {
    serde_json::from_value(serde_json::json!({
        "id": id, "type": ty, "timestamp": at(s), "sandboxId": sandbox,
        "sandboxTemplateId": "base",
    }))
    .unwrap()
}

async fn open(url: &str) -> History {
    History::open(url, Retention::default(), Arc::new(Utc::now))
        .await
        .expect("open the store on PostgreSQL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_reads_back_the_same_on_postgresql() {
    let pg = common::pg::Postgres::start("history");
    let url = pg.database("history").await;
    let h = open(&url).await;
    // A second open runs the migrations again: nothing to do, no error.
    let h2 = open(&url).await;
    for (i, ty) in ["created", "paused", "resumed", "killed"]
        .iter()
        .enumerate()
    {
        let e = event(
            &format!("e{i}"),
            "sb1",
            &format!("sandbox.lifecycle.{ty}"),
            i as i64,
        );
        for _ in 0..2 {
            h.record(Record::Event {
                event: Box::new(e.clone()),
                pool: Some("w".into()),
                source: Source::Webhook,
            });
        }
    }
    h.record(Record::ClaimGranted {
        claim_id: "c1".into(),
        pool: "w".into(),
        sandbox_id: "sb1".into(),
        holder: "job".into(),
        at: at(1),
        expires_at: at(61),
    });
    h.flush().await;
    let mut f = EventFilter {
        pool: Some("w".into()),
        limit: 3,
        ..Default::default()
    };
    let first = read::events(h2.pool(), &f).await.expect("a page");
    assert_eq!(first.events.len(), 3);
    f.cursor = Some(Cursor::parse(first.next_cursor.as_deref().unwrap()).unwrap());
    let second = read::events(h2.pool(), &f).await.expect("the next page");
    let ids: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.event.id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["e3", "e2", "e1", "e0"],
        "each event once, newest first"
    );
    assert!(second.next_cursor.is_none());
    let t = read::timeline(h2.pool(), "sb1").await.unwrap().unwrap();
    assert_eq!(t.entries.len(), 5, "{:?}", t.entries);
    assert!(
        read::alerts(h2.pool(), AlertFilter::All, at(0))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_deposed_one_cannot_write() {
    let pg = common::pg::Postgres::start("lease");
    let url = pg.database("lease").await;
    let (ha, hb) = (open(&url).await, open(&url).await);
    let ttl = Duration::from_millis(400);
    let a = Lease::new(&ha, LEADER, "a", ttl).await.unwrap();
    let b = Lease::new(&hb, LEADER, "b", ttl).await.unwrap();
    let ga = a.hold().await.unwrap().expect("a takes the free lease");
    assert_eq!(b.hold().await.unwrap(), None, "b waits while a holds it");
    assert_eq!(
        a.hold().await.unwrap(),
        Some(ga),
        "a renewal keeps the generation"
    );
    let (sa, sb) = (Shared::new(&ha, "a"), Shared::new(&hb, "b"));
    sa.save(ga, "{\"by\":\"a\"}", 1)
        .await
        .expect("the leader saves");
    sa.record_seen(ga, &[("ev1".into(), 5)]).await.unwrap();

    // a stops renewing (paused, dead or cut off): b takes over once the lease runs out.
    let mut gb = None;
    common::until("b takes the lease after it runs out", 10, async || {
        gb = b.hold().await.unwrap();
        gb.is_some()
    })
    .await;
    let gb = gb.unwrap();
    assert_eq!(gb, ga + 1, "a new holder, a new generation");
    // a wakes: its writes are fenced, and the lease is not its own any more.
    assert!(matches!(
        sa.save(ga, "{\"by\":\"stale a\"}", 2).await,
        Err(SharedError::Fenced(g)) if g == ga
    ));
    assert!(matches!(
        sa.record_seen(ga, &[("ev2".into(), 6)]).await,
        Err(SharedError::Fenced(_))
    ));
    assert_eq!(a.hold().await.unwrap(), None);
    let (body, g) = sb.load().await.unwrap().unwrap();
    assert_eq!(
        (body.as_str(), g),
        ("{\"by\":\"a\"}", ga),
        "b resumes from a's last save"
    );
    let seen = sb.seen_since(0, 100).await.unwrap();
    assert_eq!(
        seen,
        vec![("ev1".to_string(), 5)],
        "and skips what a acted on"
    );
    sb.save(gb, "{\"by\":\"b\"}", 3)
        .await
        .expect("the new leader saves");

    // b gives the lease up at shutdown: a takes it at once, with the next generation.
    b.release().await.unwrap();
    assert_eq!(a.hold().await.unwrap(), Some(gb + 1));
    let current = b.current().await.unwrap().unwrap();
    assert_eq!((current.holder.as_str(), current.live), ("a", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_is_an_error_and_then_works_again() {
    let pg = common::pg::Postgres::start("restart");
    let url = pg.database("restart").await;
    let h = open(&url).await;
    let lease = Lease::new(&h, LEADER, "a", Duration::from_secs(5))
        .await
        .unwrap();
    let g = lease.hold().await.unwrap().expect("the lease");
    pg.stop();
    assert!(lease.hold().await.is_err(), "no database, no lease");
    pg.start_again();
    let mut again = None;
    common::until(
        "the lease held again once PostgreSQL is back",
        30,
        async || {
            again = lease.hold().await.ok().flatten();
            again.is_some()
        },
    )
    .await;
    assert_eq!(again, Some(g), "still ours: nobody else took it");
}

/// Runs the binary with `args` and `env`; (exit code, stdout and stderr).
fn poolpilot(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_poolpilot"));
    cmd.args(args).env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run poolpilot");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_and_check_on_postgresql_never_print_the_password() {
    let pg = common::pg::Postgres::start("cli");
    let url = pg.database("cli").await;
    let dir = common::fresh_dir("store-cli");
    std::fs::write(
        dir.join("rules.yaml"),
        "pools: [{ name: w, min: 1, max: 2 }]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("poolpilot.yaml"),
        format!("rules: [rules.yaml]\nstate_dir: state\nstore: \"{url}\"\n"),
    )
    .unwrap();
    let config = dir.join("poolpilot.yaml");
    let config = config.to_str().unwrap();
    let secret = [("POOLPILOT_STORE_PASSWORD", "s3cret-pw")];

    let (code, out) = poolpilot(&["store", "check", "--config", config], &secret);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pending 1, 2"), "{out}");
    let (code, out) = poolpilot(&["store", "migrate", "--config", config], &secret);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied 1, 2"), "{out}");
    let (code, out) = poolpilot(&["store", "check", "--config", config], &secret);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("leader: none") && out.contains("rows: events 0"),
        "{out}"
    );
    assert!(
        out.contains("poolpilot:***@127.0.0.1"),
        "the password, redacted: {out}"
    );
    let (_, out) = poolpilot(&["config", "print", "--config", config], &secret);
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(
        !poolpilot(&["store", "check", "--config", config], &secret)
            .1
            .contains("s3cret-pw")
    );

    // A password in the URL itself is refused, saying where it belongs.
    let (code, out) = poolpilot(
        &[
            "config",
            "print",
            "--config",
            config,
            "--store",
            "postgres://pp:pw@127.0.0.1/db",
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("store_password_file"), "{out}");
    assert!(!out.contains(":pw@"), "{out}");
}
