//! Notifiers against real receivers on loopback: retries honour Retry-After, failures are
//! counted and logged, a full queue refuses loudly, payloads are what Slack and webhooks expect,
//! and a real Alertmanager (Debian's prometheus-alertmanager, installed by scripts/test.sh)
//! receives alerts that fire, then resolve. Alertmanager gets firing alerts re-sent on their
//! own cadence, checked over hours of tokio's paused clock, so that a live alert never expires.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use chrono::Utc;
use poolpilot::e2b::retry::RetryPolicy;
use poolpilot::engine::{AlertNotice, AlertStatus};
use poolpilot::notify::{Dispatcher, Notification, NotifyConfig, SendError, WallClock};
use poolpilot::rules::{Notifier, NotifierKind};
use tokio::sync::{Notify, mpsc};

mod common;

fn notice(status: AlertStatus, notify: &str) -> AlertNotice {
    let mut labels = BTreeMap::new();
    labels.insert("team".to_string(), "ml".to_string());
    AlertNotice {
        alert: "high-cpu".into(),
        subject: "sbx123".into(),
        status,
        repeat: false,
        severity: "warning".into(),
        labels,
        message: "sbx123 at 95% CPU".into(),
        notify: vec![notify.into()],
        started_at: Utc::now(),
    }
}

fn fast() -> NotifyConfig {
    NotifyConfig {
        queue: 10,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        },
        timeout: Duration::from_secs(5),
        ..NotifyConfig::default()
    }
}

/// A receiver answering each request with the next scripted status (then 200), reporting bodies.
async fn receiver(
    script: Vec<(u16, Option<&'static str>)>,
    gate: Option<Arc<Notify>>,
) -> (
    String,
    mpsc::UnboundedReceiver<(Instant, serde_json::Value)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let app = Router::new().route(
        "/hook",
        post(move |_h: HeaderMap, body: Bytes| {
            let (tx, script, gate) = (tx.clone(), script.clone(), gate.clone());
            async move {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let _ = tx.send((Instant::now(), v));
                if let Some(g) = gate {
                    g.notified().await;
                }
                let next = script.lock().unwrap().next();
                match next {
                    Some((status, after)) => {
                        let mut r =
                            (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
                        if let Some(a) = after {
                            r.headers_mut().insert("retry-after", a.parse().unwrap());
                        }
                        r
                    }
                    None => (StatusCode::OK, "ok").into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn notifier(name: &str, kind: NotifierKind, url: &str) -> Notifier {
    Notifier {
        name: name.into(),
        kind,
        url: Some(url.into()),
    }
}

async fn settle(
    d: &Dispatcher,
    name: &str,
    done: impl Fn(&poolpilot::notify::NotifierStats) -> bool,
) -> poolpilot::notify::NotifierStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = d.stats()[name].clone();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn slack_429_with_retry_after_is_honoured_and_delivered_once() {
    let (url, mut rx) = receiver(vec![(429, Some("1"))], None).await;
    let (d, _h) = Dispatcher::start(&[notifier("slack", NotifierKind::Slack, &url)], fast());
    d.send(
        "slack",
        Notification {
            notice: notice(AlertStatus::Firing, "slack"),
            at: Utc::now(),
        },
    )
    .unwrap();
    let (t1, body) = rx.recv().await.unwrap();
    let (t2, again) = rx.recv().await.unwrap();
    assert!(
        t2 - t1 >= Duration::from_secs(1),
        "waited Retry-After: {:?}",
        t2 - t1
    );
    assert_eq!(body, again);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("[FIRING] high-cpu (sbx123, warning): sbx123 at 95% CPU"),
        "{text}"
    );
    let s = settle(&d, "slack", |s| s.sent == 1).await;
    assert_eq!((s.sent, s.retries, s.failed), (1, 1, 0));
}

#[tokio::test]
async fn failures_are_retried_then_counted_never_silent() {
    let (url, mut rx) = receiver(vec![(500, None), (502, None), (503, None)], None).await;
    let (d, _h) = Dispatcher::start(&[notifier("hook", NotifierKind::Webhook, &url)], fast());
    d.send(
        "hook",
        Notification {
            notice: notice(AlertStatus::Resolved, "hook"),
            at: Utc::now(),
        },
    )
    .unwrap();
    let s = settle(&d, "hook", |s| s.failed == 1).await;
    assert_eq!((s.sent, s.failed, s.retries), (0, 1, 2));
    let mut bodies = Vec::new();
    while let Ok(b) = rx.try_recv() {
        bodies.push(b.1);
    }
    assert_eq!(bodies.len(), 3, "3 attempts");
    assert_eq!(bodies[0]["status"], "resolved");
    assert_eq!(bodies[0]["labels"]["team"], "ml");
    // A 4xx other than 408/429 is not retried.
    let (url, mut rx) = receiver(vec![(400, None)], None).await;
    let (d, _h) = Dispatcher::start(&[notifier("hook", NotifierKind::Webhook, &url)], fast());
    d.send(
        "hook",
        Notification {
            notice: notice(AlertStatus::Firing, "hook"),
            at: Utc::now(),
        },
    )
    .unwrap();
    let s = settle(&d, "hook", |s| s.failed == 1).await;
    assert_eq!((s.failed, s.retries), (1, 0));
    rx.recv().await.unwrap();
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_full_queue_refuses_loudly() {
    let gate = Arc::new(Notify::new());
    let (url, mut rx) = receiver(vec![], Some(gate.clone())).await;
    let mut cfg = fast();
    cfg.queue = 1;
    let (d, _h) = Dispatcher::start(&[notifier("slow", NotifierKind::Webhook, &url)], cfg);
    let n = || Notification {
        notice: notice(AlertStatus::Firing, "slow"),
        at: Utc::now(),
    };
    d.send("slow", n()).unwrap();
    rx.recv().await.unwrap(); // the first is in flight, held by the gate
    d.send("slow", n()).unwrap(); // the second waits in the queue
    assert_eq!(
        d.send("slow", n()),
        Err(SendError::QueueFull("slow".into()))
    );
    assert_eq!(d.stats()["slow"].queue_full, 1);
    assert_eq!(
        d.send("nope", n()),
        Err(SendError::UnknownNotifier("nope".into()))
    );
    gate.notify_one();
    rx.recv().await.unwrap();
    gate.notify_one();
    let s = settle(&d, "slow", |s| s.sent == 2).await;
    assert_eq!((s.sent, s.queue_full), (2, 1));
}

/// A real Alertmanager on a free loopback port, stopped on drop.
struct Alertmanager {
    url: String,
    _child: tokio::process::Child,
    _dir: tempdir::Dir,
}

#[tokio::test]
async fn a_reload_reroutes_notifiers_and_loses_nothing_queued() {
    // Receiver A holds its first request until the gate opens, so a notice is still in
    // flight with the old settings when the notifier is changed.
    let gate = Arc::new(Notify::new());
    let (url_a, mut rx_a) = receiver(vec![], Some(gate.clone())).await;
    let (url_b, mut rx_b) = receiver(vec![], None).await;
    let (d, _h) = Dispatcher::start(
        &[
            notifier("hook", NotifierKind::Webhook, &url_a),
            notifier("old", NotifierKind::Webhook, &url_a),
            Notifier {
                name: "log".into(),
                kind: NotifierKind::Log,
                url: None,
            },
        ],
        fast(),
    );
    assert!(
        d.send_all(&notice(AlertStatus::Firing, "hook"), Utc::now())
            .is_empty()
    );
    let (_, first) = rx_a.recv().await.unwrap();
    assert_eq!(first["status"], "firing");

    let changed = d.reconfigure(&[
        notifier("hook", NotifierKind::Webhook, &url_b),
        notifier("new", NotifierKind::Webhook, &url_b),
        Notifier {
            name: "log".into(),
            kind: NotifierKind::Log,
            url: None,
        },
    ]);
    assert_eq!(changed.changed, vec!["hook".to_string()]);
    assert_eq!(changed.added, vec!["new".to_string()]);
    assert_eq!(changed.removed, vec!["old".to_string()]);

    for name in ["hook", "new"] {
        assert!(
            d.send_all(&notice(AlertStatus::Resolved, name), Utc::now())
                .is_empty()
        );
    }
    let (_, a) = rx_b.recv().await.unwrap();
    let (_, b) = rx_b.recv().await.unwrap();
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("resolved"), Some("resolved"))
    );
    assert!(matches!(
        d.send_all(&notice(AlertStatus::Firing, "old"), Utc::now())[..],
        [SendError::UnknownNotifier(_)]
    ));
    // The notice taken before the change is still delivered by the old worker.
    gate.notify_one();
    let s = settle(&d, "hook", |s| s.sent == 2).await;
    assert_eq!((s.sent, s.failed), (2, 0), "{s:?}");
    assert!(rx_a.try_recv().is_err(), "nothing else reached the old URL");
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn alertmanager() -> Alertmanager {
    let bin = "prometheus-alertmanager";
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("poolpilot-am-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let child = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}; scripts/test.sh installs it (Debian package prometheus-alertmanager)"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Alertmanager {
        url,
        _child: child,
        _dir: tempdir::Dir(dir),
    }
}

async fn active_alerts(url: &str) -> Vec<serde_json::Value> {
    reqwest::get(format!("{url}/api/v2/alerts?active=true"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Alertmanager's active alerts once some are there (`some`) or none are, within 10 s; the
/// caller asserts on what came back.
async fn wait_for_active(url: &str, some: bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = active_alerts(url).await;
        if a.is_empty() != some || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_real_alertmanager_receives_firing_then_resolved() {
    let am = alertmanager().await;
    // A fast cadence, so that the first endsAt passes within the test.
    let cfg = NotifyConfig {
        alertmanager_resend: Duration::from_millis(300),
        alertmanager_ends_after: Duration::from_millis(1200),
        ..fast()
    };
    let (d, _h) = Dispatcher::start(&[notifier("am", NotifierKind::Alertmanager, &am.url)], cfg);
    d.send(
        "am",
        Notification {
            notice: notice(AlertStatus::Firing, "am"),
            at: Utc::now(),
        },
    )
    .unwrap();
    let alerts = wait_for_active(&am.url, true).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], "high-cpu");
    assert_eq!(a["labels"]["subject"], "sbx123");
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["labels"]["team"], "ml");
    assert_eq!(a["annotations"]["summary"], "sbx123 at 95% CPU");
    assert_eq!(a["status"]["state"], "active");
    // endsAt in the future: the alert expires by itself if poolpilot stops re-sending it.
    let first_ends: chrono::DateTime<Utc> = a["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(first_ends > Utc::now());
    // Past its first endsAt, the re-sends keep it active, with endsAt pushed on.
    let past = (first_ends - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(500);
    tokio::time::sleep(past).await;
    let alerts = active_alerts(&am.url).await;
    assert_eq!(
        alerts.len(),
        1,
        "still active after its first endsAt: {alerts:?}"
    );
    let ends: chrono::DateTime<Utc> = alerts[0]["endsAt"].as_str().unwrap().parse().unwrap();
    assert!(
        ends > first_ends,
        "endsAt moved on: {ends} after {first_ends}"
    );

    d.send(
        "am",
        Notification {
            notice: notice(AlertStatus::Resolved, "am"),
            at: Utc::now(),
        },
    )
    .unwrap();
    assert!(
        wait_for_active(&am.url, false).await.is_empty(),
        "the alert did not resolve"
    );
    let s = settle(&d, "am", |s| s.sent == 2).await;
    assert_eq!((s.sent, s.failed), (2, 0));
    assert!(s.resent >= 3, "{s:?}");
}

/// The whole path: the agent polls the emulator, its alert rule fires on a hot sandbox and
/// resolves when the load ends, and both transitions reach a real Alertmanager and a webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_alert_reaches_alertmanager_and_a_webhook_then_resolves() {
    use poolpilot::agent::control::{Agent, AgentOptions};
    use poolpilot::agent::dedup::Dedup;
    use poolpilot::emulator::{Clock, Scenario};

    let am = alertmanager().await;
    let (hook_url, mut hook) = receiver(vec![], None).await;
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    // Virtual time starts in the past, so the minutes the test advances stay behind
    // Alertmanager's wall clock, as an agent's clock does in production.
    opts.start_at = Some(Utc::now() - chrono::TimeDelta::hours(1));
    opts.core.metrics_interval = Duration::from_secs(5);
    // Two busy cores on one 2-vCPU sandbox for a minute, then none.
    opts.scenario = Scenario::parse(
        "s.yaml",
        "templates:\n  base: { boot: 0s, cpu_count: 2 }\nload:\n  - { template: base, points: [[0s, 2], [1m, 2], [1m 5s, 0]] }\n",
    )
    .unwrap();
    let emu = common::emulator(opts).await;
    let rules = format!(
        "notifiers:
  - {{ name: am, kind: alertmanager, url: \"{am}\" }}
  - {{ name: hook, kind: webhook, url: \"{hook_url}\" }}
pools:
  - {{ name: w, min: 1, max: 1, scale: {{ interval: 1h }} }}
alerts:
  - name: hot-sandbox
    scope: sandbox
    when: cpu_used_pct > 80
    for: 10s
    severity: critical
    labels: {{ team: platform }}
    message: \"{{sandbox_id}} at {{cpu_used_pct}}% CPU\"
    notify: [am, hook]
",
        am = am.url
    );
    let rules = Arc::new(poolpilot::rules::load_str(&[("r.yaml", &rules)]).unwrap());
    let (d, _h) = Dispatcher::start(&rules.notifiers, fast());
    let api: Arc<dyn poolpilot::e2b::E2bApi> = Arc::new(common::client(&emu.url()));
    let mut agent = Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: Some(d.clone()),
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(100))),
            events_every: Duration::from_secs(5),
            dry_run: false,
            state_dir: None,
            clock: None,
        },
    )
    .unwrap();
    let advance = |by: &'static str| {
        let url = emu.url();
        async move {
            let v: serde_json::Value = reqwest::Client::new()
                .post(format!("{url}/_emulator/advance"))
                .json(&serde_json::json!({ "by": by }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["now"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap()
        }
    };

    // Under load for 30 s of virtual time: the alert fires once it has held for 10 s.
    for _ in 0..6 {
        let now = advance("5s").await;
        agent.tick(now).await;
        agent.settle().await;
    }
    let fired = tokio::time::timeout(Duration::from_secs(10), hook.recv())
        .await
        .expect("the webhook got the firing notice")
        .unwrap()
        .1;
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(fired["alert"], "hot-sandbox");
    let sandbox = fired["subject"].as_str().unwrap().to_string();
    assert!(fired["message"].as_str().unwrap().starts_with(&sandbox));
    let alerts = wait_for_active(&am.url, true).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "hot-sandbox");
    assert_eq!(alerts[0]["labels"]["subject"], sandbox.as_str());
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    assert_eq!(alerts[0]["labels"]["team"], "platform");

    // After the load: resolved at both receivers.
    for _ in 0..20 {
        let now = advance("5s").await;
        agent.tick(now).await;
        agent.settle().await;
    }
    let resolved = tokio::time::timeout(Duration::from_secs(10), hook.recv())
        .await
        .expect("the webhook got the resolved notice")
        .unwrap()
        .1;
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["subject"], sandbox.as_str());
    assert!(
        wait_for_active(&am.url, false).await.is_empty(),
        "the alert did not resolve in Alertmanager"
    );
    let s = settle(&d, "am", |s| s.sent == 2).await;
    assert_eq!((s.sent, s.failed), (2, 0), "{s:?}");
    assert!(
        hook.try_recv().is_err(),
        "exactly one firing and one resolved notice"
    );
}

/// A receiver of Alertmanager's API that records each alert it gets with the time, by
/// `clock`, at which it got it.
async fn am_receiver(
    clock: WallClock,
) -> (
    String,
    mpsc::UnboundedReceiver<(chrono::DateTime<Utc>, serde_json::Value)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/api/v2/alerts",
        post(move |body: Bytes| {
            let (tx, clock) = (tx.clone(), clock.clone());
            async move {
                let v: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                for a in v {
                    let _ = tx.send((clock.now(), a));
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

/// Wall-clock time that follows tokio's (paused) clock.
fn virtual_clock() -> WallClock {
    let (start, anchor) = (tokio::time::Instant::now(), Utc::now());
    WallClock::new(move || anchor + chrono::TimeDelta::from_std(start.elapsed()).unwrap())
}

fn ends(a: &serde_json::Value) -> chrono::DateTime<Utc> {
    a["endsAt"].as_str().unwrap().parse().unwrap()
}

/// Everything the receiver has got so far, once it has got at least `n` alerts, within 10
/// minutes of tokio's paused clock (which moves on by itself while the test waits).
async fn received(
    rx: &mut mpsc::UnboundedReceiver<(chrono::DateTime<Utc>, serde_json::Value)>,
    n: usize,
) -> Vec<(chrono::DateTime<Utc>, serde_json::Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(600), rx.recv()).await;
        got.push(next.expect("an alert within 10 minutes").unwrap());
    }
    while let Ok(x) = rx.try_recv() {
        got.push(x);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn alertmanager_keeps_an_alert_firing_for_hours_alive_and_resolves_it_once() {
    let clock = virtual_clock();
    let (url, mut rx) = am_receiver(clock.clone()).await;
    let cfg = NotifyConfig {
        clock: clock.clone(),
        // The rule's repeat_interval (4 h) plays no part: only the cadence re-sends.
        timeout: Duration::from_secs(3600),
        ..fast()
    };
    let (d, _h) = Dispatcher::start(&[notifier("am", NotifierKind::Alertmanager, &url)], cfg);
    let mut firing = notice(AlertStatus::Firing, "am");
    firing.started_at = clock.now();
    let started = clock.now();
    d.send(
        "am",
        Notification {
            notice: firing.clone(),
            at: started,
        },
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(12 * 60)).await;
    let resolved_at = clock.now();
    let mut resolved = firing.clone();
    resolved.status = AlertStatus::Resolved;
    d.send(
        "am",
        Notification {
            notice: resolved,
            at: resolved_at,
        },
    )
    .unwrap();
    let mut got = received(&mut rx, 1).await;
    while got.last().is_none_or(|(_, a)| ends(a) != resolved_at) {
        got.extend(received(&mut rx, 1).await);
    }
    // Nothing more once it resolved, however long it is quiet.
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert!(rx.try_recv().is_err(), "no re-send after the resolve");

    let (last, fired) = got.split_last().unwrap();
    assert_eq!(
        ends(&last.1),
        resolved_at,
        "resolved once, endsAt = resolve time"
    );
    assert_eq!(fired[0].0, started);
    assert!(
        fired.len() >= 12,
        "the first delivery and a re-send a minute: {}",
        fired.len()
    );
    for (i, (at, a)) in fired.iter().enumerate() {
        assert_eq!(a["labels"]["alertname"], "high-cpu");
        assert_eq!(
            ends(a),
            *at + chrono::TimeDelta::minutes(4),
            "alert {i}: endsAt 4 cadences ahead"
        );
        // Alertmanager never saw it expire: the next sending came before this endsAt.
        let next = got[i + 1].0;
        assert!(
            next < ends(a),
            "alert {i} expired at {} before the next at {next}",
            ends(a)
        );
        assert!(
            next - *at <= chrono::TimeDelta::seconds(61),
            "alert {i}: re-sent within a minute"
        );
    }
    let s = d.stats()["am"].clone();
    assert_eq!((s.sent, s.failed), (2, 0), "{s:?}");
    assert_eq!(s.resent as usize, fired.len() - 1, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_moves_alertmanager_keeps_re_sending_what_fires() {
    let clock = virtual_clock();
    let (url_a, mut rx_a) = am_receiver(clock.clone()).await;
    let (url_b, mut rx_b) = am_receiver(clock.clone()).await;
    let cfg = NotifyConfig {
        clock: clock.clone(),
        timeout: Duration::from_secs(3600),
        ..fast()
    };
    let (d, _h) = Dispatcher::start(&[notifier("am", NotifierKind::Alertmanager, &url_a)], cfg);
    d.send(
        "am",
        Notification {
            notice: notice(AlertStatus::Firing, "am"),
            at: clock.now(),
        },
    )
    .unwrap();
    received(&mut rx_a, 1).await;
    d.reconfigure(&[notifier("am", NotifierKind::Alertmanager, &url_b)]);
    let moved = clock.now();
    let (at, a) = received(&mut rx_b, 1).await.remove(0);
    assert!(
        at - moved <= chrono::TimeDelta::seconds(61),
        "re-sent to the new URL within a minute"
    );
    assert_eq!(a["labels"]["subject"], "sbx123");
    // A removed notifier forgets its alerts: nothing is re-sent anywhere.
    d.reconfigure(&[]);
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    while rx_b.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    assert!(rx_a.try_recv().is_err(), "nothing more reached the old URL");
    assert!(
        rx_b.try_recv().is_err(),
        "nothing re-sent after the notifier was removed"
    );
}
