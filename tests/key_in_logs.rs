//! The API key never reaches a log line, a Debug output or an error, across a session with
//! retries and failures. Its own test binary: the subscriber must be the global default,
//! because tracing caches callsite interest process-wide and a thread-local subscriber would
//! miss callsites first hit by other tests.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use poolpilot::e2b::{E2bApi, NewSandbox};
use serde_json::json;

/// A writer that keeps everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_reaches_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let mut opts = common::options();
    opts.clock = poolpilot::emulator::Clock::Manual;
    let emu = common::emulator(opts).await;
    let c = common::client(&emu.url());
    let req = NewSandbox {
        template_id: "base".into(),
        ..Default::default()
    };
    let s = c.create_sandbox(&req, "k").await.unwrap();
    let r = common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({ "status": 503, "count": 1, "path": "/sandboxes/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    c.get_sandbox(&s.sandbox_id).await.unwrap();
    let mut errors = vec![c.get_sandbox("missing").await.unwrap_err()];
    let mut bad =
        poolpilot::e2b::ClientConfig::new(emu.url(), common::KEY.replace("01234567", "76543210"));
    bad.create_rate = None;
    let bad = poolpilot::e2b::HttpClient::new(bad).unwrap();
    errors.push(bad.list_webhooks().await.unwrap_err());
    errors.push(
        common::client("http://127.0.0.1:9")
            .get_sandbox("x")
            .await
            .unwrap_err(),
    );

    // A Slack incoming-webhook URL is a credential too: a failing notifier must not log it.
    let slack_token = "T0000/B0000/slackSecretToken42";
    let mut cfg = poolpilot::notify::NotifyConfig::default();
    cfg.retry.max_attempts = 2;
    cfg.retry.base_delay = std::time::Duration::from_millis(1);
    let (dispatcher, _workers) = poolpilot::notify::Dispatcher::start(
        &[poolpilot::rules::Notifier {
            name: "slack".into(),
            kind: poolpilot::rules::NotifierKind::Slack,
            url: Some(format!("http://127.0.0.1:9/services/{slack_token}")),
        }],
        cfg,
    );
    let notice = poolpilot::engine::AlertNotice {
        alert: "a".into(),
        subject: "s".into(),
        status: poolpilot::engine::AlertStatus::Firing,
        repeat: false,
        severity: "warning".into(),
        labels: Default::default(),
        message: "m".into(),
        notify: vec!["slack".into()],
        started_at: chrono::Utc::now(),
    };
    assert!(dispatcher.send_all(&notice, chrono::Utc::now()).is_empty());
    // Wait for the outcome (two quick tries on a closed port), bounded.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while dispatcher.stats()["slack"].failed == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the delivery to a closed port fails");

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("notification failed"),
        "the notifier's failure was logged: {logs}"
    );
    assert!(!logs.contains(slack_token), "Slack URL in logs: {logs}");
    assert!(
        logs.contains("e2b request"),
        "the calls were logged: {logs}"
    );
    assert!(logs.contains("retrying"), "the retry was logged: {logs}");
    let secret = &common::KEY[4..];
    assert!(!logs.contains(secret), "key in logs: {logs}");
    for e in &errors {
        assert!(
            !format!("{e} {e:?}").contains(secret),
            "key in error: {e:?}"
        );
    }
    assert!(!format!("{c:?}").contains(secret));
}
