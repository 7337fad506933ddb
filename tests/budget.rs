//! The team budget end to end over loopback against the emulator on a manual clock: pools
//! whose wants add up past the team's cap share it without ever going past it, and a pool
//! whose creates keep failing stops creating, probes after its backoff, and says so through
//! its notifiers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use chrono::{DateTime, Utc};
use poolpilot::agent::act::ActionResult;
use poolpilot::agent::control::{Agent, AgentOptions};
use poolpilot::agent::dedup::Dedup;
use poolpilot::e2b::{E2bApi, ListQuery, NewSandbox, SandboxState};
use poolpilot::emulator::{Clock, RunningEmulator};
use poolpilot::notify::{Dispatcher, NotifyConfig};
use poolpilot::rules::load_str;
use serde_json::json;
use tokio::sync::mpsc;

async fn emulator() -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.core.metrics_interval = Duration::from_secs(5);
    common::emulator(opts).await
}

async fn advance(emu: &RunningEmulator, by: &str) -> DateTime<Utc> {
    common::advance(&emu.url(), by).await
}

fn agent(emu: &RunningEmulator, rules: &str, dispatcher: Option<Dispatcher>) -> Agent {
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let rules = Arc::new(load_str(&[("r.yaml", rules)]).unwrap_or_else(|e| panic!("{e:?}")));
    Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher,
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(1000))),
            events_every: Duration::from_secs(5),
            dry_run: false,
            state_dir: None,
            clock: None,
        },
    )
    .unwrap()
}

async fn running(emu: &RunningEmulator) -> usize {
    common::client(&emu.url())
        .list_sandboxes(&ListQuery::default())
        .await
        .unwrap()
        .iter()
        .filter(|s| s.state == SandboxState::Running)
        .count()
}

fn posts(emu: &RunningEmulator) -> u64 {
    emu.emulator
        .request_counts()
        .get("POST /v2/sandboxes")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_share_the_team_cap_and_never_go_past_it() {
    let emu = emulator().await;
    // A sandbox nobody's pool owns counts against the team's cap too.
    common::client(&emu.url())
        .create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                timeout: Some(3600),
                ..Default::default()
            },
            "by-hand",
        )
        .await
        .unwrap();
    let rules = "pools:\n  - { name: a, min: 4, max: 4, scale: { interval: 5s } }\n  - { name: b, min: 4, max: 4, scale: { interval: 5s } }\n";
    let mut a = agent(&emu, rules, None);
    a.budget().set_cap(Some(5));
    let mut refused = 0;
    for _ in 0..4 {
        let now = advance(&emu, "5s").await;
        let before = running(&emu).await;
        let sent = a.tick(now).await;
        // The tick observed `before`; every create since is pending until observed.
        let pending: u32 = a.pending().values().sum();
        let total = before + pending as usize;
        assert!(total <= 5, "running + pending {total} past the cap 5");
        refused += sent
            .actions
            .iter()
            .filter(|(k, r)| *k == "create" && *r == ActionResult::Refused)
            .count();
        a.settle().await;
        assert!(running(&emu).await <= 5);
    }
    assert_eq!(running(&emu).await, 5, "the cap is used, not exceeded");
    assert_eq!(refused, 4 * 4, "pool b's 4 creates, refused at each tick");
    let log = a.recent.lock().unwrap().clone();
    assert!(
        log.iter().any(|d| d.result == ActionResult::Refused
            && d.outcome == "refused: team at its concurrency cap 5"),
        "{log:#?}"
    );
    assert_eq!(posts(&emu), 1 + 4, "no create was sent to draw a 429");
}

/// A webhook receiver on loopback that reports each body it gets.
async fn receiver() -> (String, mpsc::UnboundedReceiver<serde_json::Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

async fn next_notice(rx: &mut mpsc::UnboundedReceiver<serde_json::Value>) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notice")
        .expect("the receiver runs")
}

/// One tick at `by` later, with every create it sent returned.
async fn turn(emu: &RunningEmulator, a: &mut Agent, by: &str) {
    let now = advance(emu, by).await;
    a.tick(now).await;
    a.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_creates_keep_failing_stops_probes_and_alerts() {
    let emu = emulator().await;
    // Six creates fail (as with a template that is missing), the seventh works.
    common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"status": 400, "count": 6, "path": "/v2/sandboxes", "method": "POST"}))
        .send()
        .await
        .unwrap();
    let (url, mut notices) = receiver().await;
    let rules = format!(
        "notifiers:\n  - {{ name: hook, kind: webhook, url: \"{url}\" }}\npools:\n  - {{ name: w, min: 1, max: 1, scale: {{ interval: 5s }} }}\n"
    );
    let rule_set = load_str(&[("r.yaml", &rules)]).unwrap();
    let (dispatcher, _workers) = Dispatcher::start(&rule_set.notifiers, NotifyConfig::default());
    let mut a = agent(&emu, &rules, Some(dispatcher));
    for i in 1..=5 {
        turn(&emu, &mut a, "5s").await;
        assert_eq!(posts(&emu), i, "closed: one create a tick");
    }
    // Open from the next tick: no create goes out for 30 s.
    for _ in 0..6 {
        turn(&emu, &mut a, "5s").await;
        assert_eq!(posts(&emu), 5, "no create is sent while open");
    }
    let firing = next_notice(&mut notices).await;
    assert_eq!(firing["alert"], "PoolCreatesFailing");
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["subject"], "w");
    assert_eq!(firing["severity"], "critical");
    let log = a.recent.lock().unwrap().clone();
    let last = log.back().unwrap();
    assert_eq!(last.result, ActionResult::Refused);
    assert!(
        last.outcome
            .starts_with("refused: circuit open after 5 failures until "),
        "{last:?}"
    );
    // Half-open after the backoff: one probe, which fails; the next backoff is 60 s.
    turn(&emu, &mut a, "5s").await;
    assert_eq!(posts(&emu), 6, "one probe");
    for _ in 0..12 {
        turn(&emu, &mut a, "5s").await;
        assert_eq!(posts(&emu), 6, "open again for twice as long");
    }
    turn(&emu, &mut a, "5s").await;
    assert_eq!(posts(&emu), 7, "the second probe, which works");
    turn(&emu, &mut a, "5s").await;
    let resolved = next_notice(&mut notices).await;
    assert_eq!(resolved["alert"], "PoolCreatesFailing");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(running(&emu).await, 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notices.recv())
            .await
            .is_err(),
        "one firing and one resolved notice, no more"
    );
}
