//! The history store against a real SQLite (in memory and on disk): every record kind written
//! and read back, idempotent writes, paging, retention. The same queries run on PostgreSQL in
//! `tests/store_postgres.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

use super::read::{self, AlertFilter, Cursor, EventFilter};
use super::*;
use crate::e2b::{EventType, LifecycleEvent};
use crate::engine::{AlertNotice, AlertStatus};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
}

fn event(id: &str, sandbox: &str, ty: EventType, at: DateTime<Utc>) -> LifecycleEvent {
    serde_json::from_value(serde_json::json!({
        "id": id, "type": ty.as_str(), "timestamp": at, "sandboxId": sandbox,
        "sandboxTemplateId": "base",
    }))
    .unwrap()
}

fn record_event(h: &History, id: &str, sandbox: &str, ty: EventType, at: DateTime<Utc>) {
    h.record(Record::Event {
        event: Box::new(event(id, sandbox, ty, at)),
        pool: Some("w".into()),
        source: Source::Poll,
    });
}

fn fixed_clock(now: Arc<Mutex<DateTime<Utc>>>) -> Clock {
    Arc::new(move || *now.lock().unwrap())
}

#[tokio::test]
async fn an_event_recorded_twice_is_kept_once_and_pages_run_newest_first() {
    let h = History::in_memory(Arc::new(|| t(0))).await.unwrap();
    for i in 0..5 {
        record_event(&h, &format!("e{i}"), "sb1", EventType::Created, t(i));
    }
    record_event(&h, "e3", "sb1", EventType::Created, t(3));
    h.flush().await;
    let mut f = EventFilter {
        limit: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = read::events(h.pool(), &f).await.unwrap();
        seen.extend(page.events.iter().map(|e| e.event.id.clone()));
        match page.next_cursor {
            Some(c) => f.cursor = Some(Cursor::parse(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ["e4", "e3", "e2", "e1", "e0"]);
}

#[tokio::test]
async fn events_filter_by_sandbox_type_and_time() {
    let h = History::in_memory(Arc::new(|| t(0))).await.unwrap();
    record_event(&h, "a", "sb1", EventType::Created, t(1));
    record_event(&h, "b", "sb1", EventType::Killed, t(2));
    record_event(&h, "c", "sb2", EventType::Killed, t(3));
    h.flush().await;
    let page = read::events(
        h.pool(),
        &EventFilter {
            types: vec!["sandbox.lifecycle.killed".into()],
            since: Some(t(2)),
            until: Some(t(3)),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ids: Vec<_> = page.events.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, ["b"]);
    let mine = read::events_since(h.pool(), t(0), Some("w")).await.unwrap();
    assert_eq!(mine.len(), 3);
}

fn decision(seq: u64, at: DateTime<Utc>, result: &str, ids: &[&str]) -> DecisionRow {
    DecisionRow {
        seq,
        at,
        rule: "w".into(),
        kind: "create".into(),
        result: result.into(),
        summary: "below min".into(),
        outcome: format!("{result} {}", ids.join(", ")),
        sandbox_ids: ids.iter().map(|s| s.to_string()).collect(),
        body: serde_json::json!({ "seq": seq, "result": result }),
    }
}

#[tokio::test]
async fn a_timeline_joins_events_decisions_claims_and_samples_in_time_order() {
    let h = History::in_memory(Arc::new(|| t(0))).await.unwrap();
    h.record(Record::Decision(Box::new(decision(1, t(0), "sent", &[]))));
    h.record(Record::Decision(Box::new(decision(
        1,
        t(0),
        "ok",
        &["sb1"],
    ))));
    record_event(&h, "e1", "sb1", EventType::Created, t(1));
    h.record(Record::ClaimGranted {
        claim_id: "c1".into(),
        pool: "w".into(),
        sandbox_id: "sb1".into(),
        holder: "job-7".into(),
        at: t(2),
        expires_at: t(62),
    });
    h.record(Record::ClaimRenewed {
        claim_id: "c1".into(),
        expires_at: t(122),
    });
    h.record(Record::ClaimEnded {
        claim_id: "c1".into(),
        at: t(5),
        how: ClaimEnd::Released,
    });
    h.record(Record::SandboxSamples(vec![SandboxSample {
        sandbox_id: "sb1".into(),
        at: t(3),
        pool: Some("w".into()),
        cpu_pct: f64::NAN,
        cpu_count: 2,
        mem_used: 1,
        mem_total: 2,
        disk_used: 3,
        disk_total: u64::MAX,
    }]));
    h.flush().await;
    let tl = read::timeline(h.pool(), "sb1").await.unwrap().unwrap();
    let what: Vec<_> = tl.entries.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "below min -> ok sb1",
            "sandbox.lifecycle.created",
            "claimed by job-7",
            "claim by job-7 ended: released"
        ]
    );
    assert_eq!(
        tl.entries[0].detail["result"], "ok",
        "the final outcome wins"
    );
    assert_eq!(
        tl.entries[2].detail["expires_at"],
        serde_json::json!(t(122))
    );
    assert_eq!(tl.pool.as_deref(), Some("w"));
    assert_eq!(tl.samples.len(), 1);
    assert_eq!(tl.samples[0].cpu_pct, 0.0, "NaN is stored as 0");
    assert_eq!(tl.samples[0].disk_total, i64::MAX as u64);
    assert!(read::timeline(h.pool(), "nope").await.unwrap().is_none());
}

fn notice(status: AlertStatus, started: DateTime<Utc>) -> AlertNotice {
    AlertNotice {
        alert: "idle-empty".into(),
        subject: "w".into(),
        status,
        repeat: false,
        severity: "warning".into(),
        labels: BTreeMap::from([("pool".into(), "w".into())]),
        message: "no idle members".into(),
        notify: vec![],
        started_at: started,
    }
}

#[tokio::test]
async fn an_alert_episode_opens_on_firing_and_closes_on_resolve() {
    let h = History::in_memory(Arc::new(|| t(0))).await.unwrap();
    h.record(Record::Alert {
        notice: Box::new(notice(AlertStatus::Firing, t(10))),
        at: t(10),
    });
    h.flush().await;
    let firing = read::alerts(h.pool(), AlertFilter::Firing, t(0))
        .await
        .unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].state, "firing");
    h.record(Record::Alert {
        notice: Box::new(notice(AlertStatus::Resolved, t(10))),
        at: t(70),
    });
    h.flush().await;
    assert!(
        read::alerts(h.pool(), AlertFilter::Firing, t(0))
            .await
            .unwrap()
            .is_empty()
    );
    let resolved = read::alerts(h.pool(), AlertFilter::Resolved, t(0))
        .await
        .unwrap();
    assert_eq!(resolved[0].resolved_at, Some(t(70)));
    assert_eq!(resolved[0].labels["pool"], "w");
    assert!(
        read::alerts(h.pool(), AlertFilter::All, t(71))
            .await
            .unwrap()
            .is_empty()
    );
}

fn sample(pool: &str, at: DateTime<Utc>, actual: u32) -> PoolSample {
    PoolSample {
        pool: pool.into(),
        at,
        desired: Some(actual),
        actual,
        pending: 0,
        min: Some(1),
        max: None,
        claimed: 0,
        idle: actual,
        paused: 0,
        waiting: 0,
        busy_cores: f64::INFINITY,
    }
}

#[tokio::test]
async fn retention_deletes_old_history_and_thins_old_pool_samples() {
    let dir = std::env::temp_dir().join(format!("pp-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = Arc::new(Mutex::new(t(0)));
    let retention = Retention {
        history: std::time::Duration::from_secs(86_400),
        samples: std::time::Duration::from_secs(3600),
    };
    let h = History::open_in(&dir, retention, fixed_clock(now.clone()))
        .await
        .unwrap();
    record_event(&h, "old", "sb1", EventType::Created, t(0));
    // Pool samples every 10 s for 20 minutes.
    h.record(Record::PoolSamples(
        (0..120).map(|i| sample("w", t(i * 10), i as u32)).collect(),
    ));
    h.flush().await;
    drop(h);
    // Reopened 7 hours later: the samples are older than 6 h and are thinned to one per 5
    // minutes; the event is within the day's retention.
    *now.lock().unwrap() = t(7 * 3600);
    let h = History::open_in(&dir, retention, fixed_clock(now.clone()))
        .await
        .unwrap();
    h.flush().await;
    let kept = read::pool_history(h.pool(), "w", t(-1)).await.unwrap();
    let at: Vec<i64> = kept.iter().map(|s| (s.at - t(0)).num_seconds()).collect();
    assert_eq!(at, [0, 300, 600, 900]);
    assert_eq!(kept[0].busy_cores, 0.0, "infinity is stored as 0");
    assert_eq!(
        read::events_since(h.pool(), t(-1), None)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(h);
    *now.lock().unwrap() = t(2 * 86_400);
    let h = History::open_in(&dir, retention, fixed_clock(now))
        .await
        .unwrap();
    h.flush().await;
    assert!(
        read::events_since(h.pool(), t(-1), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        read::pool_history(h.pool(), "w", t(-1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.stats().expired.load(Ordering::Relaxed) > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let h = History::in_memory(Arc::new(|| t(0))).await.unwrap();
    // The writer is not given a chance to run on this single-threaded runtime until the
    // loop ends, so the queue fills.
    for i in 0..(QUEUE + 10) {
        record_event(&h, &format!("e{i}"), "sb", EventType::Created, t(0));
    }
    assert_eq!(h.stats().dropped.load(Ordering::Relaxed), 10);
    h.flush().await;
    assert_eq!(h.stats().written.load(Ordering::Relaxed), QUEUE as u64);
}

#[test]
fn a_password_never_shows_in_a_message() {
    assert_eq!(
        redact("postgres://pp:s3cret@127.0.0.1:5432/pp"),
        "postgres://pp:***@127.0.0.1:5432/pp"
    );
    assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
}
