//! The emulator delivers lifecycle events to a real HTTP receiver on loopback: E2B's four
//! headers, the signature in the standard base64 alphabet without padding, and retries with
//! the same delivery id after a failure.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use poolpilot::e2b::{E2bApi, EventType, LifecycleEvent, NewSandbox, NewWebhook, signature};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver that refuses the first `fail_first` deliveries with 500.
async fn receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(0usize));
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (tx, seen) = (tx.clone(), seen.clone());
            async move {
                let n = {
                    let mut s = seen.lock().unwrap();
                    *s += 1;
                    *s
                };
                let _ = tx.send(Received { headers, body });
                if n <= fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test]
async fn deliveries_are_signed_and_retried() {
    let emu = common::emulator(common::options()).await;
    let c = common::client(&emu.url());
    let (url, mut rx) = receiver(1).await;
    let hook = c
        .create_webhook(&NewWebhook {
            name: "test".into(),
            url,
            enabled: true,
            events: vec![EventType::Created],
            signature_secret: "s3cr3t".into(),
        })
        .await
        .unwrap();
    let sbx = c
        .create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            "k",
        )
        .await
        .unwrap();

    let first = rx.recv().await.unwrap();
    let second = rx.recv().await.unwrap();
    for r in [&first, &second] {
        let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(h("e2b-webhook-id"), hook.id);
        assert_eq!(h("e2b-signature-version"), "v1");
        let sig = h("e2b-signature");
        assert_eq!(
            sig,
            signature::sign("s3cr3t", &r.body),
            "standard alphabet, no padding"
        );
        assert!(!sig.ends_with('=') && signature::verify("s3cr3t", &r.body, &sig));
        let ev: LifecycleEvent = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (ev.event_type, ev.sandbox_id.as_str()),
            (EventType::Created, sbx.sandbox_id.as_str())
        );
    }
    assert_eq!(
        first.headers["e2b-delivery-id"], second.headers["e2b-delivery-id"],
        "a retry is the same delivery"
    );
    assert_eq!(first.body, second.body);
    // Both attempts are counted once the retry has been answered.
    let report = loop {
        let r = emu.emulator.delivery_report();
        if r.in_flight == 0 {
            break r;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(
        (report.attempts, report.delivered, report.failed),
        (2, 1, 0)
    );
    // Killed was not subscribed: nothing more arrives for it.
    c.kill_sandbox(&sbx.sandbox_id).await.unwrap();
    c.update_webhook(
        &hook.id,
        &poolpilot::e2b::WebhookPatch {
            events: Some(vec![EventType::Killed]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s2 = c
        .create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            "k2",
        )
        .await
        .unwrap();
    c.kill_sandbox(&s2.sandbox_id).await.unwrap();
    let third = rx.recv().await.unwrap();
    let ev: LifecycleEvent = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(
        (&ev.event_type, &ev.sandbox_id),
        (&EventType::Killed, &s2.sandbox_id)
    );
    assert_eq!(ev.kill_reason(), Some("request"));
}
