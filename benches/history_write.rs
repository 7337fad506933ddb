//! Benchmark: the history store's writer on SQLite (a file in a temp dir, WAL), end to end:
//! queue one turn's records and wait until they are written. A turn at 1,000 members is
//! 1,000 members' samples, 10 pools' samples, 20 events and 5 decisions; the goal is a turn
//! written well within the 5 s the loop takes between turns (the writer runs beside the loop,
//! which only queues). Also: queueing alone, which is all the loop pays.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use poolpilot::e2b::LifecycleEvent;
use poolpilot::store::{
    DecisionRow, History, PoolSample, Record, Retention, SandboxSample, Source,
};

const MEMBERS: usize = 1000;

fn turn(n: usize) -> Vec<Record> {
    let at = Utc::now() + TimeDelta::milliseconds(n as i64 * 5000);
    let mut out = vec![Record::SandboxSamples(
        (0..MEMBERS)
            .map(|i| SandboxSample {
                sandbox_id: format!("sb{i}"),
                at,
                pool: Some(format!("p{}", i % 10)),
                cpu_pct: 42.0,
                cpu_count: 2,
                mem_used: 1 << 28,
                mem_total: 1 << 29,
                disk_used: 1 << 30,
                disk_total: 1 << 31,
            })
            .collect(),
    )];
    out.push(Record::PoolSamples(
        (0..10)
            .map(|p| PoolSample {
                pool: format!("p{p}"),
                at,
                desired: Some(100),
                actual: 100,
                pending: 0,
                min: Some(10),
                max: Some(200),
                claimed: 40,
                idle: 60,
                paused: 0,
                waiting: 0,
                busy_cores: 84.0,
            })
            .collect(),
    ));
    for e in 0..20 {
        let event: LifecycleEvent = serde_json::from_value(serde_json::json!({
            "id": format!("ev-{n}-{e}"), "type": "sandbox.lifecycle.created",
            "timestamp": at, "sandboxId": format!("sb{e}"),
        }))
        .unwrap();
        out.push(Record::Event {
            event: Box::new(event),
            pool: Some("p1".into()),
            source: Source::Webhook,
        });
    }
    for d in 0..5 {
        out.push(Record::Decision(Box::new(DecisionRow {
            seq: (n * 5 + d) as u64,
            at,
            rule: "p1".into(),
            kind: "create".into(),
            result: "ok".into(),
            summary: "below the idle band".into(),
            outcome: "created sb1".into(),
            sandbox_ids: vec!["sb1".into()],
            body: serde_json::json!({"seq": n * 5 + d}),
        })));
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("pp-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = rt
        .block_on(History::open_in(
            &dir,
            Retention::default(),
            Arc::new(Utc::now),
        ))
        .unwrap();
    let mut n = 0;
    c.bench_function(
        "history: one turn at 1000 members, queued and written",
        |b| {
            b.iter(|| {
                n += 1;
                for r in turn(n) {
                    h.record(r);
                }
                rt.block_on(h.flush());
            })
        },
    );
    c.bench_function(
        "history: one turn at 1000 members, queued only (the loop's cost)",
        |b| {
            b.iter_batched(
                || {
                    n += 1;
                    turn(n)
                },
                |records| {
                    for r in records {
                        h.record(r);
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        },
    );
    rt.block_on(h.flush());
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
