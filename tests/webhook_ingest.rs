//! The webhook receiver over loopback: signed deliveries in either alphabet are taken once;
//! forged, replayed, oversized, malformed and slow ones are refused with the right status; a
//! full queue or a full dedup window asks for a retry; events older than the dedup horizon are
//! not taken again; and the emulator's own deliveries go through end to end.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolpilot::agent::dedup::Dedup;
use poolpilot::agent::http::webhooks::{self, Delivered, WebhookConfig, WebhookStats};
use poolpilot::e2b::{E2bApi, EventType, NewSandbox, NewWebhook, signature};
use tokio::sync::mpsc;

const SECRET: &str = "whsec-test";

struct Rx {
    url: String,
    events: mpsc::Receiver<Delivered>,
    stats: Arc<WebhookStats>,
}

async fn start(max_body: usize, queue: usize) -> Rx {
    start_with(
        max_body,
        queue,
        Arc::new(Mutex::new(Dedup::new(1000))),
        |_| {},
    )
    .await
}

async fn start_with(
    max_body: usize,
    queue: usize,
    dedup: Arc<Mutex<Dedup>>,
    tune: impl FnOnce(&mut WebhookConfig),
) -> Rx {
    let (tx, events) = mpsc::channel(queue);
    let stats = Arc::new(WebhookStats::default());
    let mut cfg = WebhookConfig::new(SECRET);
    cfg.max_body = max_body;
    tune(&mut cfg);
    let app = webhooks::router(cfg, tx, dedup, stats.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/e2b", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Rx { url, events, stats }
}

fn event(id: &str) -> String {
    event_at(id, "2026-01-01T00:00:00Z")
}

fn event_at(id: &str, at: &str) -> String {
    format!(
        r#"{{"version":"v2","id":"{id}","type":"sandbox.lifecycle.killed","eventData":{{"kill_reason":"unknown","sandbox_metadata":{{"poolpilot_pool":"w"}}}},"sandboxId":"sbx-{id}","timestamp":"{at}"}}"#
    )
}

fn signed(body: &str) -> (Vec<u8>, Option<String>) {
    (
        body.as_bytes().to_vec(),
        Some(signature::sign(SECRET, body.as_bytes())),
    )
}

async fn post(
    url: &str,
    body: &[u8],
    sig: Option<&str>,
    delivery: &str,
) -> (u16, serde_json::Value) {
    let mut rb = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("e2b-webhook-id", "wh1")
        .header("e2b-delivery-id", delivery)
        .header("e2b-signature-version", "v1")
        .body(body.to_vec());
    if let Some(s) = sig {
        rb = rb.header("e2b-signature", s);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn valid_deliveries_are_taken_once_in_either_alphabet() {
    let mut rx = start(64 * 1024, 16).await;
    let b1 = event("e1");
    let (s, _) = post(
        &rx.url,
        b1.as_bytes(),
        Some(&signature::sign(SECRET, b1.as_bytes())),
        "d1",
    )
    .await;
    assert_eq!(s, 202);
    let got = rx.events.recv().await.unwrap();
    assert_eq!(
        (got.event.id.as_str(), got.event.event_type.clone()),
        ("e1", EventType::Killed)
    );
    assert_eq!(got.delivery_id.as_deref(), Some("d1"));
    let b2 = event("e2");
    let (s, _) = post(
        &rx.url,
        b2.as_bytes(),
        Some(&signature::sign_url_safe(SECRET, b2.as_bytes())),
        "d2",
    )
    .await;
    assert_eq!(s, 202, "the docs' URL-safe alphabet is accepted too");
    rx.events.recv().await.unwrap();
    // Replays: the same delivery, or the same event in a new delivery.
    let (s, v) = post(
        &rx.url,
        b1.as_bytes(),
        Some(&signature::sign(SECRET, b1.as_bytes())),
        "d1",
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")));
    let (s, _) = post(
        &rx.url,
        b1.as_bytes(),
        Some(&signature::sign(SECRET, b1.as_bytes())),
        "d9",
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        rx.events.try_recv().is_err(),
        "duplicates are not processed again"
    );
    let r = rx.stats.report();
    assert_eq!((r.accepted, r.duplicate), (2, 2));
}

#[tokio::test]
async fn forged_oversized_and_malformed_deliveries_are_refused() {
    let mut rx = start(128 * 1024, 16).await;
    let b = event("e1");
    let good = signature::sign(SECRET, b.as_bytes());
    let cases: Vec<(Vec<u8>, Option<String>, u16)> = vec![
        (b.clone().into_bytes(), None, 401),
        (b.clone().into_bytes(), Some(String::new()), 401),
        (
            b.clone().into_bytes(),
            Some(signature::sign("other-secret", b.as_bytes())),
            401,
        ),
        (
            b.replace("unknown", "request").into_bytes(),
            Some(good.clone()),
            401,
        ),
        (b.clone().into_bytes(), Some("garbage!".into()), 401),
        // Correctly signed, but with bytes after the event: strict parsing refuses it.
        (
            format!("{b} {{}}").into_bytes(),
            Some(signature::sign(SECRET, format!("{b} {{}}").as_bytes())),
            400,
        ),
        // Whitespace too, after or before: a delivery is the event and nothing else.
        {
            let (b, s) = signed(&format!("{b}\n"));
            (b, s, 400)
        },
        {
            let (b, s) = signed(&format!(" {b}"));
            (b, s, 400)
        },
        // An absurd id (the 60 KB ids that filled memory), and one no log line can hold.
        {
            let (b, s) = signed(&event(&"x".repeat(60_000)));
            (b, s, 400)
        },
        {
            let (b, s) = signed(&event("a\\nb"));
            (b, s, 400)
        },
        // An event from the far future would hold a dedup slot forever.
        {
            let (b, s) = signed(&event_at("e-future", "2999-01-01T00:00:00Z"));
            (b, s, 400)
        },
        (
            b"{not json".to_vec(),
            Some(signature::sign(SECRET, b"{not json")),
            400,
        ),
        (b"{}".to_vec(), Some(signature::sign(SECRET, b"{}")), 400),
        (
            vec![b' '; 200_000],
            Some(signature::sign(SECRET, &[b' '; 200_000])),
            413,
        ),
    ];
    for (i, (body, sig, want)) in cases.into_iter().enumerate() {
        let (s, v) = post(&rx.url, &body, sig.as_deref(), &format!("bad{i}")).await;
        assert_eq!(s, want, "case {i}: {v}");
        assert_eq!(v["code"], want, "case {i}: JSON error body {v}");
        assert!(!v.to_string().contains(SECRET));
    }
    assert!(rx.events.try_recv().is_err());
    let r = rx.stats.report();
    assert_eq!(
        (r.bad_signature, r.malformed, r.too_large, r.accepted),
        (5, 8, 1, 0)
    );
}

#[tokio::test]
async fn a_full_queue_asks_e2b_to_retry_and_loses_nothing() {
    let mut rx = start(64 * 1024, 1).await;
    let (a, b) = (event("a"), event("b"));
    let sign = |s: &str| signature::sign(SECRET, s.as_bytes());
    assert_eq!(
        post(&rx.url, a.as_bytes(), Some(&sign(&a)), "da").await.0,
        202
    );
    assert_eq!(
        post(&rx.url, b.as_bytes(), Some(&sign(&b)), "db").await.0,
        503
    );
    assert_eq!(rx.events.recv().await.unwrap().event.id, "a");
    // E2B's retry of the refused delivery is taken, not treated as a duplicate.
    assert_eq!(
        post(&rx.url, b.as_bytes(), Some(&sign(&b)), "db").await.0,
        202
    );
    assert_eq!(rx.events.recv().await.unwrap().event.id, "b");
}

#[tokio::test]
async fn the_emulators_deliveries_go_through() {
    let mut rx = start(64 * 1024, 16).await;
    let emu = common::emulator(common::options()).await;
    let c = common::client(&emu.url());
    c.create_webhook(&NewWebhook {
        name: "agent".into(),
        url: rx.url.clone(),
        enabled: true,
        events: vec![EventType::Created, EventType::Killed],
        signature_secret: SECRET.into(),
    })
    .await
    .unwrap();
    let s = c
        .create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            "k",
        )
        .await
        .unwrap();
    c.kill_sandbox(&s.sandbox_id).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), rx.events.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), rx.events.recv())
        .await
        .unwrap()
        .unwrap();
    let mut types = vec![first.event.event_type, second.event.event_type];
    types.sort();
    assert_eq!(types, vec![EventType::Created, EventType::Killed]);
    assert_eq!(first.event.sandbox_id, s.sandbox_id);
}

#[tokio::test]
async fn a_full_window_asks_for_a_retry_and_stale_events_are_not_taken_again() {
    let dedup = Arc::new(Mutex::new(Dedup::new(2)));
    // The receiver's clock, fixed: the events are stamped just before it.
    let mut rx = start_with(64 * 1024, 16, dedup.clone(), |c| {
        c.clock = Arc::new(|| "2026-01-01T00:00:30Z".parse().unwrap())
    })
    .await;
    let sign = |s: &str| signature::sign(SECRET, s.as_bytes());
    for id in ["a", "b"] {
        let e = event(id);
        assert_eq!(
            post(&rx.url, e.as_bytes(), Some(&sign(&e)), id).await.0,
            202
        );
        rx.events.recv().await.unwrap();
    }
    // Full of live ids: the third is refused with 503 (E2B retries), nothing is forgotten.
    let c = event("c");
    let (s, v) = post(&rx.url, c.as_bytes(), Some(&sign(&c)), "c").await;
    assert_eq!((s, v["code"].as_i64()), (503, Some(503)), "{v}");
    let a = event("a");
    assert_eq!(
        post(&rx.url, a.as_bytes(), Some(&sign(&a)), "a2").await.0,
        200
    );
    // Once the poll's horizon passes them, room is made; the old ones stay refused.
    dedup
        .lock()
        .unwrap()
        .advance_horizon("2026-01-01T00:00:01Z".parse().unwrap());
    let (s, v) = post(&rx.url, a.as_bytes(), Some(&sign(&a)), "a3").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("stale")));
    let c = event_at("c", "2026-01-01T00:00:02Z");
    assert_eq!(
        post(&rx.url, c.as_bytes(), Some(&sign(&c)), "c").await.0,
        202
    );
    assert_eq!(rx.events.recv().await.unwrap().event.id, "c");
    let r = rx.stats.report();
    assert_eq!(
        (r.accepted, r.window_full, r.stale, r.duplicate),
        (3, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_the_connection_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rx = start_with(64 * 1024, 16, Arc::new(Mutex::new(Dedup::new(10))), |c| {
        c.body_timeout = Duration::from_millis(200)
    })
    .await;
    let addr = rx
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /webhooks/e2b HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("the receiver closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":408"#), "{text}");
    assert_eq!(rx.stats.report().timeout, 1);
}
