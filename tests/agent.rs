//! The agent end to end over loopback against the emulator on a manual clock: each test
//! advances virtual time, then runs one tick, so nothing depends on guessed sleeps.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use poolpilot::agent::control::{Agent, AgentOptions};
use poolpilot::agent::dedup::Dedup;
use poolpilot::agent::http::webhooks::{self, WebhookConfig, WebhookStats};
use poolpilot::e2b::{E2bApi, EventType, ListQuery, NewSandbox, NewWebhook};
use poolpilot::emulator::{Clock, RunningEmulator, Scenario};
use poolpilot::rules::load_str;
use serde_json::json;

async fn emulator(scenario: &str) -> RunningEmulator {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.core.metrics_interval = Duration::from_secs(5);
    opts.scenario = Scenario::parse("s.yaml", scenario).unwrap();
    common::emulator(opts).await
}

async fn advance(emu: &RunningEmulator, by: &str) -> DateTime<Utc> {
    let v: serde_json::Value = common::raw()
        .post(format!("{}/_emulator/advance", emu.url()))
        .json(&json!({ "by": by }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["now"].as_str().unwrap().parse().unwrap()
}

fn agent(emu: &RunningEmulator, rules: &str, state_dir: Option<std::path::PathBuf>) -> Agent {
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let rules = Arc::new(load_str(&[("r.yaml", rules)]).unwrap_or_else(|e| panic!("{e:?}")));
    Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks: None,
            dedup: Arc::new(Mutex::new(Dedup::new(1000))),
            events_every: Duration::from_secs(5),
            dry_run: false,
            state_dir,
            clock: None,
        },
    )
    .unwrap()
}

async fn members(emu: &RunningEmulator, pool: &str) -> usize {
    let c = common::client(&emu.url());
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), pool.into());
    c.list_sandboxes(&q).await.unwrap().len()
}

const SCALING: &str = "
pools:
  - name: w
    min: 1
    max: 5
    busy: cpu_used_pct > 80
    scale:
      interval: 5s
      steps:
        - { when: busy_ratio > 0.5, add: 1 }
        - { when: busy_ratio < 0.2, remove: 1 }
      stabilization: { down: 30s }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_under_load_and_back_down_after_stabilization() {
    // 6 busy cores for 2 minutes, then almost nothing.
    let emu = emulator("templates:\n  base: { boot: 0s }\nload:\n  - { template: base, points: [[0s, 6], [2m, 6], [2m 5s, 0.2]] }\n").await;
    let mut a = agent(&emu, SCALING, None);
    let mut sizes = Vec::new();
    for _ in 0..60 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
        sizes.push(members(&emu, "w").await);
    }
    let peak = *sizes.iter().max().unwrap();
    assert!(peak >= 3, "grew under load: {sizes:?}");
    assert!(peak <= 5, "max held: {sizes:?}");
    assert_eq!(
        *sizes.last().unwrap(),
        1,
        "back to min after the load: {sizes:?}"
    );
    // Scale-in only after 30 s of calm: the first shrink comes at least 6 ticks after the peak ended.
    let decisions = a.recent.lock().unwrap().clone();
    assert!(
        decisions
            .iter()
            .any(|d| d.decision.cause.summary.contains("busy_ratio > 0.5"))
    );
    assert!(decisions.iter().any(|d| d.outcome.contains("killed")));
}

const REPLACE: &str = "
pools:
  - { name: w, min: 2, max: 5, scale: { interval: 1h } }
triggers:
  - { name: replace, on: killed, pool: w, when: 'kill_reason != \"request\"', action: replace }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_is_replaced_on_its_webhook_at_the_next_tick() {
    let emu = emulator("").await;
    // The webhook receiver, fed by the emulator's signed deliveries.
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let dedup = Arc::new(Mutex::new(Dedup::new(1000)));
    let stats = Arc::new(WebhookStats::default());
    let app = webhooks::router(
        WebhookConfig::new("s3cr3t"),
        tx,
        dedup.clone(),
        stats.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/webhooks/e2b", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    common::client(&emu.url())
        .create_webhook(&NewWebhook {
            name: "agent".into(),
            url: hook_url,
            enabled: true,
            events: vec![EventType::Killed],
            signature_secret: "s3cr3t".into(),
        })
        .await
        .unwrap();
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let rules = Arc::new(load_str(&[("r.yaml", REPLACE)]).unwrap());
    let mut a = Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks: Some(rx),
            dedup,
            events_every: Duration::from_secs(3600),
            dry_run: false,
            state_dir: None,
            clock: None,
        },
    )
    .unwrap();
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 2, "min 2 created");
    // A member crashes.
    let c = common::client(&emu.url());
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), "w".into());
    let victim = c.list_sandboxes(&q).await.unwrap()[0].sandbox_id.clone();
    let r = common::raw()
        .post(format!("{}/_emulator/sandboxes/{victim}/kill", emu.url()))
        .json(&json!({"reason": "orphaned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Wait for the delivery to be accepted (bounded), then one tick replaces it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.report().accepted == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // React at once, against the last observation: no new list, no metrics request.
    let lists_before = emu
        .emulator
        .request_counts()
        .get("GET /v2/sandboxes")
        .copied();
    let now = advance(&emu, "1s").await;
    let report = a.react(now).await;
    a.settle().await;
    assert_eq!(report.events, 1);
    assert_eq!(
        emu.emulator
            .request_counts()
            .get("GET /v2/sandboxes")
            .copied(),
        lists_before
    );
    assert_eq!(members(&emu, "w").await, 2, "replaced");
    let log = a.recent.lock().unwrap().clone();
    assert!(
        log.iter().any(|d| d.decision.rule == "replace"
            && d.decision.cause.summary.contains("kill_reason orphaned")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_by_webhooks_are_recovered_by_polling_exactly_once() {
    let emu = emulator("").await;
    let mut a = agent(&emu, REPLACE, None);
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    let c = common::client(&emu.url());
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), "w".into());
    let victim = c.list_sandboxes(&q).await.unwrap()[0].sandbox_id.clone();
    common::raw()
        .post(format!("{}/_emulator/sandboxes/{victim}/kill", emu.url()))
        .json(&json!({"reason": "unknown"}))
        .send()
        .await
        .unwrap();
    let now = advance(&emu, "5s").await;
    a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 2);
    let replaced = |a: &Agent| {
        a.recent
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.decision.rule == "replace")
            .count()
    };
    assert_eq!(replaced(&a), 1);
    for _ in 0..3 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
    }
    assert_eq!(replaced(&a), 1, "the same event is never processed twice");
    assert_eq!(members(&emu, "w").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_cooldowns_and_does_not_repage() {
    let emu = emulator(
        "templates:\n  base: { boot: 0s }\nload:\n  - { template: base, points: [[0s, 8]] }\n",
    )
    .await;
    let dir = common::fresh_dir("agent");
    let rules = "
pools:
  - { name: w, min: 1, max: 10, scale: { interval: 5s, steps: [{ when: busy_ratio > 0.5, add: 1 }], cooldown: { up: 10m } } }
";
    let mut a = agent(&emu, rules, Some(dir.clone()));
    for _ in 0..3 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
    }
    let before = members(&emu, "w").await;
    assert_eq!(before, 2, "min 1, then +1, then the cooldown");
    drop(a);
    assert!(dir.join("state.json").exists() && dir.join("decisions.jsonl").exists());
    let mut b = agent(&emu, rules, Some(dir.clone()));
    for _ in 0..3 {
        let now = advance(&emu, "5s").await;
        b.tick(now).await;
        b.settle().await;
    }
    assert_eq!(
        members(&emu, "w").await,
        before,
        "the cooldown survived the restart"
    );
    let log = std::fs::read_to_string(dir.join("decisions.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "one line per decision: {log}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_it_does_not_own_are_never_touched() {
    let emu = emulator("").await;
    let c = common::client(&emu.url());
    for i in 0..3 {
        c.create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            &format!("u{i}"),
        )
        .await
        .unwrap();
    }
    let rules = "pools:\n  - { name: w, min: 0, max: 1 }\ntriggers:\n  - { name: k, on: created, pool: w, action: kill }\n";
    let mut a = agent(&emu, rules, None);
    for _ in 0..3 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
    }
    assert_eq!(
        c.list_sandboxes(&ListQuery::default()).await.unwrap().len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_create_never_double_a_sandbox() {
    let emu = emulator("").await;
    common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"status": 503, "count": 3, "path": "/v2/sandboxes"}))
        .send()
        .await
        .unwrap();
    let mut a = agent(&emu, "pools:\n  - { name: w, min: 3, max: 3 }\n", None);
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    for _ in 0..2 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
    }
    assert_eq!(members(&emu, "w").await, 3, "exactly min, never more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tick_costs_ceil_n_over_100_metrics_requests_plus_the_list_pages() {
    let mut opts = common::options();
    opts.clock = Clock::Manual;
    opts.core.max_concurrent = 1000;
    let emu = common::emulator(opts).await;
    let c = common::client(&emu.url());
    for i in 0..250 {
        c.create_sandbox(
            &NewSandbox {
                template_id: "base".into(),
                ..Default::default()
            },
            &format!("n{i}"),
        )
        .await
        .unwrap();
    }
    let mut a = agent(&emu, "pools:\n  - { name: w, min: 0, max: 1 }\n", None);
    let now = advance(&emu, "6s").await;
    let count = |route: &str| {
        emu.emulator
            .request_counts()
            .get(route)
            .copied()
            .unwrap_or(0)
    };
    let (metrics0, lists0) = (count("GET /sandboxes/metrics"), count("GET /v2/sandboxes"));
    a.tick(now).await;
    assert_eq!(
        count("GET /sandboxes/metrics") - metrics0,
        3,
        "ceil(250/100)"
    );
    assert_eq!(count("GET /v2/sandboxes") - lists0, 3, "pages of 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_self_registration_is_idempotent() {
    use poolpilot::agent::register::register_webhook;
    let emu = emulator("").await;
    let c = common::client(&emu.url());
    let first = register_webhook(&c, "poolpilot", "http://127.0.0.1:9477/webhooks/e2b", "s1")
        .await
        .unwrap();
    let again = register_webhook(&c, "poolpilot", "http://127.0.0.1:9477/webhooks/e2b", "s1")
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    // Moved to a new address: the same webhook is updated, re-enabled, and subscribed to all.
    c.update_webhook(
        &first.id,
        &poolpilot::e2b::WebhookPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let moved = register_webhook(&c, "poolpilot", "http://127.0.0.1:9555/webhooks/e2b", "s2")
        .await
        .unwrap();
    assert_eq!(moved.id, first.id);
    assert!(moved.enabled);
    assert_eq!(moved.url, "http://127.0.0.1:9555/webhooks/e2b");
    assert_eq!(moved.events.len(), EventType::KNOWN.len());
    assert_eq!(c.list_webhooks().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_slows_creates_down_without_doubling_any() {
    let emu = emulator("").await;
    common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"status": 429, "count": 5, "path": "/v2/sandboxes", "method": "POST", "retry_after": 1}))
        .send()
        .await
        .unwrap();
    let mut a = agent(&emu, "pools:\n  - { name: w, min: 3, max: 3 }\n", None);
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(members(&emu, "w").await, 3, "exactly min, never more");
    let posts = emu
        .emulator
        .request_counts()
        .get("POST /v2/sandboxes")
        .copied()
        .unwrap_or(0);
    assert!(posts >= 3 + 5, "every 429 was retried: {posts} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_and_max_hold_through_a_load_storm_and_the_calm_after() {
    // 60 busy cores for 3 minutes (far beyond max 4 x 2 cores), then nothing at all.
    let emu = emulator("templates:\n  base: { boot: 0s }\nload:\n  - { template: base, points: [[0s, 60], [3m, 60], [3m 5s, 0]] }\n").await;
    let rules = "
pools:
  - name: w
    min: 2
    max: 4
    scale:
      interval: 5s
      steps:
        - { when: busy_ratio > 0.5, add: 3 }
        - { when: busy_ratio < 0.2, remove: 3 }
      stabilization: { down: 10s }
";
    let mut a = agent(&emu, rules, None);
    let mut sizes = Vec::new();
    for _ in 0..72 {
        let now = advance(&emu, "5s").await;
        a.tick(now).await;
        a.settle().await;
        let n = members(&emu, "w").await;
        assert!(n <= 4, "max 4 broken: {n} after {sizes:?}");
        if !sizes.is_empty() {
            assert!(n >= 2, "min 2 broken: {n} after {sizes:?}");
        }
        sizes.push(n);
    }
    assert!(sizes.contains(&4), "reached max under the storm: {sizes:?}");
    assert_eq!(
        *sizes.last().unwrap(),
        2,
        "back to min in the calm: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_is_kept_aside_not_overwritten() {
    let emu = emulator("").await;
    let dir = common::fresh_dir("badstate");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), "{ not json").unwrap();
    let mut a = agent(
        &emu,
        "pools:\n  - { name: w, min: 1, max: 1 }\n",
        Some(dir.clone()),
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("state.json.unreadable")).unwrap(),
        "{ not json"
    );
    let now = advance(&emu, "5s").await;
    a.tick(now).await;
    a.settle().await;
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    assert!(saved.get("engine").is_some(), "fresh state saved: {saved}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A delivery of `event_type` for `sandbox_id`, as the webhook receiver would pass it on.
fn delivered(id: &str, sandbox_id: &str, event_type: EventType) -> webhooks::Delivered {
    let event: poolpilot::e2b::LifecycleEvent = serde_json::from_value(json!({
        "id": id,
        "version": "v1",
        "type": event_type,
        "timestamp": "2026-01-01T00:00:00Z",
        "eventCategory": "lifecycle",
        "eventLabel": "x",
        "sandboxId": sandbox_id,
        "sandboxTemplateId": "base",
        "sandboxTeamId": "t",
        "eventData": null,
    }))
    .unwrap();
    webhooks::Delivered {
        event,
        delivery_id: None,
        received: std::time::Instant::now(),
    }
}

/// An agent over `emu` with `rules`, fed webhook deliveries by `webhooks` and polling events
/// only hourly, so that what it reacts to is what a test sends.
fn agent_with(
    emu: &RunningEmulator,
    rules: &str,
    webhooks: Option<tokio::sync::mpsc::Receiver<webhooks::Delivered>>,
    dry_run: bool,
    state_dir: Option<std::path::PathBuf>,
) -> Agent {
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let rules = Arc::new(load_str(&[("r.yaml", rules)]).unwrap());
    Agent::new(
        api,
        rules,
        AgentOptions {
            dispatcher: None,
            webhooks,
            dedup: Arc::new(Mutex::new(Dedup::new(1000))),
            events_every: Duration::from_secs(3600),
            dry_run,
            state_dir,
            clock: None,
        },
    )
    .unwrap()
}

const FIXED_THREE: &str = "
pools:
  - { name: w, min: 3, max: 3, scale: { interval: 1s } }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_between_ticks_never_counts_finished_creates_as_missing() {
    // Issue 9, item 1: creates that returned after the last observation were counted neither
    // as members nor as pending, so a reaction to any webhook re-created them (3 -> 6).
    let emu = emulator("").await;
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let mut a = agent_with(&emu, FIXED_THREE, Some(rx), false, None);
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 3);
    assert_eq!(a.pending().get("w"), Some(&3), "created, not yet observed");
    // A webhook about a sandbox of nobody's, between two ticks, several times.
    for i in 0..5 {
        tx.send(delivered(&format!("e{i}"), "other", EventType::Created))
            .await
            .unwrap();
        let now = advance(&emu, "1s").await;
        a.react(now).await;
        a.settle().await;
        assert_eq!(
            members(&emu, "w").await,
            3,
            "reaction {i} kept the pool at 3"
        );
    }
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 3);
    assert!(a.pending().is_empty(), "observed now: {:?}", a.pending());
    // The decision log says what each create made.
    let log = a.recent.lock().unwrap().clone();
    let create = log
        .iter()
        .find(|d| matches!(d.decision.action, poolpilot::engine::Action::Create { .. }))
        .unwrap();
    assert_eq!(create.result, poolpilot::agent::act::ActionResult::Ok);
    assert_eq!(create.sandbox_ids.len(), 3, "{create:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_between_ticks_does_not_count_members_killed_since_the_observation() {
    // The pool shrinks from 3 to 1 at a tick; a reaction before the next tick must not count
    // the killed members, or a crash of the survivor would go unreplaced until the next tick.
    let emu = emulator("").await;
    let (tx, rx) = tokio::sync::mpsc::channel(100);
    let api: Arc<dyn E2bApi> = Arc::new(common::client(&emu.url()));
    let mut a = agent_with(&emu, FIXED_THREE, Some(rx), false, None);
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    let one = "pools:\n  - { name: w, min: 1, max: 1, scale: { interval: 1s } }\n";
    a.set_rules(Arc::new(load_str(&[("r.yaml", one)]).unwrap()));
    let now = advance(&emu, "1s").await;
    a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 1);
    // The survivor dies; its webhook arrives before the next tick.
    let mut q = ListQuery::default();
    q.metadata.insert("poolpilot_pool".into(), "w".into());
    let survivor = common::client(&emu.url()).list_sandboxes(&q).await.unwrap()[0]
        .sandbox_id
        .clone();
    api.kill_sandbox(&survivor).await.unwrap();
    tx.send(delivered("k1", &survivor, EventType::Killed))
        .await
        .unwrap();
    let now = advance(&emu, "1s").await;
    a.react(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 1, "replaced at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_logs_each_decision_once_and_says_so() {
    let emu = emulator("").await;
    let dir = common::fresh_dir("agent-dry");
    let mut a = agent_with(&emu, FIXED_THREE, None, true, Some(dir.clone()));
    let now = advance(&emu, "1s").await;
    let report = a.tick(now).await;
    a.settle().await;
    assert_eq!(members(&emu, "w").await, 0, "nothing changed");
    assert_eq!(
        report.actions,
        vec![("create", poolpilot::agent::act::ActionResult::DryRun)]
    );
    let log = std::fs::read_to_string(dir.join("decisions.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["dry_run"], true);
    assert_eq!(lines[0]["result"], "dry_run");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_counted_when_they_return_failed_under_a_503_storm() {
    // Issue 9, item 9: creates answered 503 were counted `ok` when sent.
    let emu = emulator("").await;
    common::raw()
        .post(format!("{}/_emulator/faults", emu.url()))
        .json(&json!({"status": 503, "count": 1000, "path": "/v2/sandboxes", "method": "POST"}))
        .send()
        .await
        .unwrap();
    let mut a = agent(&emu, "pools:\n  - { name: w, min: 2, max: 2 }\n", None);
    let now = advance(&emu, "1s").await;
    let sent = a.tick(now).await;
    assert!(
        sent.actions.is_empty(),
        "nothing known yet: {:?}",
        sent.actions
    );
    let returned = a.settle().await;
    assert_eq!(
        returned.actions,
        vec![
            ("create", poolpilot::agent::act::ActionResult::Failed),
            ("create", poolpilot::agent::act::ActionResult::Failed)
        ]
    );
    let log = a.recent.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].result, poolpilot::agent::act::ActionResult::Failed);
    assert!(
        log[0].outcome.contains("2 create(s) failed"),
        "{:?}",
        log[0]
    );
    assert_eq!(a.pending().get("w"), Some(&2), "503: they may exist");
}
