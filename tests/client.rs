//! The HTTP client against the emulator over loopback: every call, paging, retries, typed
//! errors, and the API key kept out of logs. The emulator runs on a manual clock, so virtual
//! time moves only when a test advances it.

mod common;

use std::time::{Duration, Instant};

use poolpilot::e2b::{
    E2bApi, Error, EventQuery, EventType, ListQuery, Metadata, NewSandbox, NewWebhook,
    SandboxState, WebhookPatch,
};
use poolpilot::emulator::{Clock, RunningEmulator};
use serde_json::json;

async fn manual() -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    common::emulator(opts).await
}

async fn advance(emu: &RunningEmulator, by: &str) {
    let r = common::raw()
        .post(format!("{}/_emulator/advance", emu.url()))
        .json(&json!({ "by": by }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn fault(emu: &RunningEmulator, body: serde_json::Value) {
    let r = common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

fn count(emu: &RunningEmulator, route: &str) -> u64 {
    emu.emulator
        .request_counts()
        .get(route)
        .copied()
        .unwrap_or(0)
}

fn base(meta: &[(&str, &str)]) -> NewSandbox {
    let m: Metadata = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    NewSandbox {
        template_id: "base".into(),
        timeout: Some(600),
        metadata: (!m.is_empty()).then_some(m),
        ..Default::default()
    }
}

#[tokio::test]
async fn sandbox_calls_round_trip() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    let s = c
        .create_sandbox(&base(&[("pool", "a")]), "k-1")
        .await
        .unwrap();
    let info = c.get_sandbox(&s.sandbox_id).await.unwrap();
    assert_eq!(
        (info.template_id.as_str(), info.cpu_count, info.state),
        ("base", 2, SandboxState::Running)
    );
    assert_eq!(info.metadata.unwrap()["pool"], "a");

    c.set_timeout(&s.sandbox_id, 1200).await.unwrap();
    let later = c.get_sandbox(&s.sandbox_id).await.unwrap();
    assert_eq!((later.end_at - later.started_at).num_seconds(), 1200);

    c.pause_sandbox(&s.sandbox_id).await.unwrap();
    assert!(matches!(
        c.pause_sandbox(&s.sandbox_id).await,
        Err(Error::Conflict { .. })
    ));
    let resumed = c.connect_sandbox(&s.sandbox_id, 60).await.unwrap();
    assert!(resumed.resumed);
    let again = c.connect_sandbox(&s.sandbox_id, 60).await.unwrap();
    assert!(!again.resumed);

    advance(&emu, "3s").await;
    let m = c.sandbox_metrics(&s.sandbox_id, None, None).await.unwrap();
    assert!(!m.is_empty());
    let now = m.last().unwrap().timestamp_unix;
    assert_eq!(
        c.sandbox_metrics(&s.sandbox_id, Some(now + 10), None)
            .await
            .unwrap()
            .len(),
        0
    );
    assert!(matches!(
        c.sandbox_metrics(&s.sandbox_id, Some(now), Some(now - 1))
            .await,
        Err(Error::BadRequest { .. })
    ));

    c.kill_sandbox(&s.sandbox_id).await.unwrap();
    match c.get_sandbox(&s.sandbox_id).await {
        Err(Error::NotFound { message }) => assert!(message.contains(&s.sandbox_id), "{message}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        c.kill_sandbox(&s.sandbox_id).await,
        Err(Error::NotFound { .. })
    ));
    match c
        .create_sandbox(
            &NewSandbox {
                template_id: "nope".into(),
                ..Default::default()
            },
            "k-2",
        )
        .await
    {
        Err(Error::NotFound { message }) => assert_eq!(message, "template 'nope' not found"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(
        count(&emu, "POST /sandboxes"),
        0,
        "an unknown template must not fall back to v1"
    );
}

#[tokio::test]
async fn list_follows_every_page_and_filters() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    let mut ids = Vec::new();
    for i in 0..25 {
        let pool = if i % 5 == 0 { "b" } else { "a" };
        ids.push(
            c.create_sandbox(&base(&[("pool", pool)]), &format!("k{i}"))
                .await
                .unwrap()
                .sandbox_id,
        );
        advance(&emu, "10ms").await;
    }
    let q = ListQuery {
        limit: Some(10),
        ..Default::default()
    };
    let all = c.list_sandboxes(&q).await.unwrap();
    assert_eq!(
        count(&emu, "GET /v2/sandboxes"),
        3,
        "25 sandboxes in pages of 10"
    );
    let mut got: Vec<String> = all.iter().map(|s| s.sandbox_id.clone()).collect();
    got.reverse();
    assert_eq!(got, ids);

    let page = c.list_sandboxes_page(&q).await.unwrap();
    assert_eq!((page.items.len(), page.total_running), (10, Some(25)));
    assert!(page.next_token.is_some());

    let mut meta = Metadata::new();
    meta.insert("pool".into(), "b".into());
    let b = c
        .list_sandboxes(&ListQuery {
            metadata: meta,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(b.len(), 5);
    c.pause_sandbox(&ids[0]).await.unwrap();
    let paused = c
        .list_sandboxes(&ListQuery {
            states: vec![SandboxState::Paused],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(paused.len(), 1);
    let asc = c
        .list_sandboxes(&ListQuery {
            order: Some(poolpilot::e2b::Order::Asc),
            limit: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        asc.iter().map(|s| s.sandbox_id.clone()).collect::<Vec<_>>(),
        ids
    );
}

#[tokio::test]
async fn batch_metrics_go_in_chunks_of_100() {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.core.max_concurrent = 1000;
    let emu = common::emulator(opts).await;
    let c = common::client(&emu.url());
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(
            c.create_sandbox(&base(&[]), &format!("k{i}"))
                .await
                .unwrap()
                .sandbox_id,
        );
    }
    ids.push("doesnotexist".into());
    let before = c.latest_metrics(&ids).await.unwrap();
    assert!(before.is_empty(), "no sample before the first second");
    advance(&emu, "2s").await;
    let m = c.latest_metrics(&ids).await.unwrap();
    assert_eq!(m.len(), 150, "every live sandbox, and not the unknown id");
    assert_eq!(
        count(&emu, "GET /sandboxes/metrics"),
        4,
        "two calls of ceil(151/100) requests"
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("id{i}")).collect();
    assert!(matches!(
        c.metrics_batch(&too_many).await,
        Err(Error::BadRequest { .. })
    ));
}

#[tokio::test]
async fn events_page_until_empty_and_filter() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    let mut last = String::new();
    for i in 0..7 {
        let s = c
            .create_sandbox(&base(&[]), &format!("k{i}"))
            .await
            .unwrap();
        advance(&emu, "1s").await;
        c.kill_sandbox(&s.sandbox_id).await.unwrap();
        last = s.sandbox_id;
    }
    let q = EventQuery {
        limit: 3,
        order_asc: true,
        ..Default::default()
    };
    let all = c.all_events(None, &q).await.unwrap();
    assert_eq!(all.len(), 14);
    assert_eq!(
        count(&emu, "GET /events/sandboxes"),
        6,
        "5 pages of at most 3, then the empty page"
    );
    assert!(all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let killed = c
        .all_events(
            None,
            &EventQuery {
                types: vec![EventType::Killed],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 7);
    assert!(killed.iter().all(|e| e.kill_reason() == Some("request")));
    let one = c
        .all_events(Some(&last), &EventQuery::default())
        .await
        .unwrap();
    let types: Vec<EventType> = one.iter().map(|e| e.event_type.clone()).collect();
    assert_eq!(types, vec![EventType::Killed, EventType::Created]);
}

#[tokio::test]
async fn webhooks_crud() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    let w = c
        .create_webhook(&NewWebhook {
            name: "poolpilot".into(),
            url: "http://127.0.0.1:9/webhooks/e2b".into(),
            enabled: true,
            events: vec![EventType::Created, EventType::Killed],
            signature_secret: "s3cr3t".into(),
        })
        .await
        .unwrap();
    assert_eq!(c.list_webhooks().await.unwrap(), vec![w.clone()]);
    assert_eq!(c.get_webhook(&w.id).await.unwrap(), w);
    let patched = c
        .update_webhook(
            &w.id,
            &WebhookPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!patched.enabled);
    assert_eq!(patched.url, w.url);
    c.delete_webhook(&w.id).await.unwrap();
    assert!(matches!(
        c.get_webhook(&w.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(c.list_webhooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    let s = c.create_sandbox(&base(&[]), "k").await.unwrap();
    fault(
        &emu,
        json!({ "status": 429, "count": 1, "retry_after": 1, "path": "/sandboxes/" }),
    )
    .await;
    let started = Instant::now();
    c.get_sandbox(&s.sandbox_id).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited the server's Retry-After"
    );
    assert_eq!(count(&emu, "GET /sandboxes/{id}"), 2);
    // A Retry-After beyond the policy's ceiling is returned, not slept on.
    fault(
        &emu,
        json!({ "status": 429, "count": 1, "retry_after": 3600, "path": "/sandboxes/" }),
    )
    .await;
    match c.get_sandbox(&s.sandbox_id).await {
        Err(e @ Error::RateLimited { .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn retries_5xx_and_never_doubles_a_create() {
    let emu = manual().await;
    let c = common::client(&emu.url());
    fault(
        &emu,
        json!({ "status": 503, "count": 2, "path": "/v2/sandboxes" }),
    )
    .await;
    let s = c.create_sandbox(&base(&[]), "only-once").await.unwrap();
    assert_eq!(count(&emu, "POST /v2/sandboxes"), 3);
    // The same key again (a retry after a lost answer) returns the same sandbox.
    let again = c.create_sandbox(&base(&[]), "only-once").await.unwrap();
    assert_eq!(again.sandbox_id, s.sandbox_id);
    let all = c.list_sandboxes(&ListQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1, "exactly one sandbox created");

    fault(
        &emu,
        json!({ "status": 500, "count": 1, "path": "/sandboxes/" }),
    )
    .await;
    assert!(matches!(
        c.get_sandbox(&s.sandbox_id).await,
        Err(Error::Server { status: 500, .. })
    ));
    fault(
        &emu,
        json!({ "status": 502, "count": 10, "path": "/sandboxes/" }),
    )
    .await;
    assert!(matches!(
        c.get_sandbox(&s.sandbox_id).await,
        Err(Error::Server { status: 502, .. })
    ));
    assert_eq!(
        count(&emu, "GET /sandboxes/{id}"),
        1 + 4,
        "one 500, then 4 tries of 502"
    );
}

#[tokio::test]
async fn falls_back_to_v1_create_and_never_retries_it() {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.serve_v2_create = false;
    let emu = common::emulator(opts).await;
    let c = common::client(&emu.url());
    let s = c.create_sandbox(&base(&[]), "k1").await.unwrap();
    assert_eq!(count(&emu, "POST /sandboxes"), 1);
    let info = c.get_sandbox(&s.sandbox_id).await.unwrap();
    assert_eq!((info.end_at - info.started_at).num_seconds(), 600);
    fault(
        &emu,
        json!({ "status": 503, "count": 1, "path": "/sandboxes" }),
    )
    .await;
    assert!(matches!(
        c.create_sandbox(&base(&[]), "k2").await,
        Err(Error::Server { status: 503, .. })
    ));
    assert_eq!(
        count(&emu, "POST /sandboxes"),
        2,
        "a create without Idempotency-Key is not retried"
    );
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let emu = manual().await;
    let mut cfg = poolpilot::e2b::ClientConfig::new(emu.url(), "e2b_wrong");
    cfg.create_rate = None;
    let c = poolpilot::e2b::HttpClient::new(cfg).unwrap();
    assert!(matches!(
        c.list_webhooks().await,
        Err(Error::Unauthorized { status: 401, .. })
    ));
}

#[tokio::test]
async fn transport_failures_are_typed() {
    // Nothing listens on port 9 of loopback.
    let c = common::client("http://127.0.0.1:9");
    let e = c.get_sandbox("x").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}
