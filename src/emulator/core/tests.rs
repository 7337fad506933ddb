//! Unit tests of the emulator core, all in virtual time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::e2b::{
    EventQuery, EventType, ListQuery, Metadata, NewSandbox, NewWebhook, SandboxState, WebhookPatch,
};
use crate::emulator::scenario::Scenario;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn scenario(yaml: &str) -> Scenario {
    Scenario::parse("test.yaml", yaml).unwrap()
}

fn core_with(yaml: &str, cfg: CoreConfig) -> Core {
    Core::new(cfg, &scenario(yaml), t0())
}

fn unlimited() -> CoreConfig {
    CoreConfig {
        create_rate: 0.0,
        max_concurrent: 100_000,
        ..CoreConfig::default()
    }
}

fn new_sbx(template: &str) -> NewSandbox {
    NewSandbox {
        template_id: template.into(),
        ..Default::default()
    }
}

const FLAT_3: &str = "templates:
  base: { cpu_count: 2, boot: 0s }
load:
  - { template: base, points: [[0s, 3.0]] }
";

#[test]
fn demand_is_shared_by_booted_sandboxes() {
    let mut c = core_with(FLAT_3, unlimited());
    let a = c.create(&new_sbx("base"), true, None).unwrap();
    let b = c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_secs(6));
    for id in [&a.sandbox_id, &b.sandbox_id] {
        let m = c.metrics(id, None, None).unwrap();
        // 3 cores over two 2-core sandboxes: 1.5 cores each, 75 %.
        assert_eq!(m.last().unwrap().cpu_used_pct, 75.0);
        assert_eq!(m.last().unwrap().cpu_count, 2);
    }
    // A lone sandbox is saturated at 100 %, never above.
    c.kill(&a.sandbox_id).unwrap();
    c.advance(Duration::from_secs(5));
    let m = c.metrics(&b.sandbox_id, None, None).unwrap();
    assert_eq!(m.last().unwrap().cpu_used_pct, 100.0);
}

#[test]
fn samples_start_after_a_second_and_follow_the_interval() {
    let mut c = core_with("", unlimited());
    let s = c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_millis(900));
    assert!(c.metrics(&s.sandbox_id, None, None).unwrap().is_empty());
    assert!(
        c.metrics_batch(std::slice::from_ref(&s.sandbox_id))
            .unwrap()
            .is_empty()
    );
    c.advance(Duration::from_millis(200));
    assert_eq!(c.metrics(&s.sandbox_id, None, None).unwrap().len(), 1);
    c.advance(Duration::from_secs(20));
    let m = c.metrics(&s.sandbox_id, None, None).unwrap();
    assert_eq!(m.len(), 5, "samples at 1s, 6s, 11s, 16s, 21s");
    assert!(
        m.iter()
            .all(|x| x.cpu_used_pct > 0.0 && x.cpu_used_pct < 5.0),
        "idle load"
    );
    let batch = c
        .metrics_batch(std::slice::from_ref(&s.sandbox_id))
        .unwrap();
    assert_eq!(batch[&s.sandbox_id], *m.last().unwrap());
}

#[test]
fn unmet_demand_and_sandbox_seconds_are_integrated_exactly() {
    let mut c = core_with(
        "templates:
  base: { cpu_count: 2, boot: 0s }
load:
  - { template: base, points: [[0s, 0.0], [100s, 4.0]] }
",
        unlimited(),
    );
    c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_secs(100));
    let s = c.stats();
    // Demand ramps 0 -> 4 cores over 100 s; capacity is 2 cores; the excess is the triangle
    // from 50 s to 100 s: 0.5 * 50 s * 2 cores = 50 core-seconds.
    assert!(
        (s.unmet_core_seconds - 50.0).abs() < 1e-6,
        "{}",
        s.unmet_core_seconds
    );
    assert!((s.demand_core_seconds - 200.0).abs() < 1e-6);
    assert!((s.sandbox_seconds - 100.0).abs() < 1e-6);
    assert_eq!(s.templates["base"].capacity_cores, 2.0);
    assert_eq!(s.templates["base"].demand_cores, 4.0);
}

#[test]
fn booting_sandboxes_add_no_capacity() {
    let mut c = core_with(
        "templates:
  base: { cpu_count: 2, boot: 10s }
load:
  - { template: base, points: [[0s, 2.0]] }
",
        unlimited(),
    );
    c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_secs(30));
    // 10 s of boot with 2 cores unmet, then covered.
    assert!((c.stats().unmet_core_seconds - 20.0).abs() < 1e-6);
}

#[test]
fn sandboxes_expire_killed_or_paused() {
    let mut c = core_with("", unlimited());
    let plain = c
        .create(
            &NewSandbox {
                timeout: Some(10),
                ..new_sbx("base")
            },
            true,
            None,
        )
        .unwrap();
    let pausing = c
        .create(
            &NewSandbox {
                timeout: Some(10),
                auto_pause: Some(true),
                ..new_sbx("base")
            },
            true,
            None,
        )
        .unwrap();
    c.advance(Duration::from_secs(9));
    assert!(c.get(&plain.sandbox_id).is_ok());
    c.advance(Duration::from_secs(2));
    assert_eq!(c.get(&plain.sandbox_id).unwrap_err().status, 404);
    assert_eq!(
        c.get(&pausing.sandbox_id).unwrap().state,
        SandboxState::Paused
    );
    let q = EventQuery {
        order_asc: true,
        ..EventQuery::default()
    };
    let killed: Vec<_> = c
        .events(Some(&plain.sandbox_id), &q)
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == EventType::Killed)
        .collect();
    assert_eq!(killed.len(), 1);
    assert_eq!(killed[0].kill_reason(), Some("timeout"));
    let exec = killed[0]
        .event_data
        .as_ref()
        .unwrap()
        .execution
        .as_ref()
        .unwrap();
    assert_eq!(exec.execution_time, Some(10_000));
    let paused = c.events(Some(&pausing.sandbox_id), &q).unwrap();
    assert_eq!(paused.last().unwrap().event_type, EventType::Paused);
}

#[test]
fn set_timeout_moves_the_end_and_emits_updated() {
    let mut c = core_with("", unlimited());
    let s = c
        .create(
            &NewSandbox {
                timeout: Some(10),
                ..new_sbx("base")
            },
            true,
            None,
        )
        .unwrap();
    c.advance(Duration::from_secs(5));
    c.set_timeout(&s.sandbox_id, 60).unwrap();
    c.advance(Duration::from_secs(30));
    assert!(c.get(&s.sandbox_id).is_ok(), "the old expiry must not fire");
    let ev = c
        .events(Some(&s.sandbox_id), &EventQuery::default())
        .unwrap();
    assert_eq!(ev[0].event_type, EventType::Updated);
    let end = c.get(&s.sandbox_id).unwrap().end_at;
    assert_eq!(end, t0() + TimeDelta::seconds(65));
    assert_eq!(
        ev[0].event_data.as_ref().unwrap().set_timeout.as_deref(),
        Some("2026-01-01T00:01:05Z")
    );
}

#[test]
fn pause_connect_and_resume_follow_e2b() {
    let mut c = core_with("", unlimited());
    let s = c.create(&new_sbx("base"), true, None).unwrap();
    let id = s.sandbox_id.clone();
    c.pause(&id).unwrap();
    assert_eq!((c.stats().running, c.stats().paused), (0, 1));
    c.advance(Duration::from_secs(10));
    assert_eq!(
        c.stats().sandbox_seconds,
        0.0,
        "a paused sandbox is not running"
    );
    assert_eq!(c.pause(&id).unwrap_err().status, 409);
    let (_, resumed) = c.connect(&id, 60).unwrap();
    assert!(resumed);
    assert_eq!((c.stats().running, c.stats().paused), (1, 0));
    c.advance(Duration::from_secs(10));
    assert_eq!(c.stats().sandbox_seconds, 10.0);
    let (_, resumed) = c.connect(&id, 60).unwrap();
    assert!(!resumed);
    assert_eq!(c.resume(&id, 30).unwrap_err().status, 409);
    // Ids with a client suffix resolve; two dashes are a 400.
    assert!(c.get(&format!("{id}-{}", s.client_id)).is_ok());
    assert_eq!(c.get(&format!("{id}-a-b")).unwrap_err().status, 400);
    let types: Vec<EventType> = c
        .events(
            Some(&id),
            &EventQuery {
                order_asc: true,
                ..Default::default()
            },
        )
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    // The second connect, 10 s after the resume, extends the end by 10 s: `updated`.
    let want = [
        EventType::Created,
        EventType::Paused,
        EventType::Resumed,
        EventType::Updated,
    ];
    assert_eq!(types, want);
}

#[test]
fn lists_page_with_e2b_cursors() {
    let mut c = core_with("", unlimited());
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(c.create(&new_sbx("base"), true, None).unwrap().sandbox_id);
        c.advance(Duration::from_millis(10));
    }
    let mut q = ListQuery {
        limit: Some(10),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.list(&q).unwrap();
        pages += 1;
        assert_eq!(page.total_running, Some(25));
        seen.extend(page.items.iter().map(|s| s.sandbox_id.clone()));
        match page.next_token {
            Some(t) => q.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    ids.reverse(); // newest first by default
    assert_eq!(seen, ids);
    q.next_token = Some("bm90LWEtY3Vyc29y".into());
    assert_eq!(c.list(&q).unwrap_err().status, 400);
    q.next_token = Some("%%%".into());
    assert_eq!(c.list(&q).unwrap_err().status, 400);
    q.next_token = None;
    q.limit = Some(0);
    assert_eq!(c.list(&q).unwrap_err().status, 400);
    q.limit = Some(101);
    assert_eq!(c.list(&q).unwrap_err().status, 400);
}

#[test]
fn lists_filter_by_state_metadata_and_template() {
    let mut c = core_with(
        "templates:\n  big: { cpu_count: 8, memory_mb: 4096, alias: large }\n",
        unlimited(),
    );
    let mut meta = Metadata::new();
    meta.insert("pool".into(), "web".into());
    let a = c
        .create(
            &NewSandbox {
                metadata: Some(meta.clone()),
                ..new_sbx("base")
            },
            true,
            None,
        )
        .unwrap();
    let b = c.create(&new_sbx("large"), true, None).unwrap();
    c.pause(&b.sandbox_id).unwrap();
    let q = ListQuery {
        metadata: meta,
        ..Default::default()
    };
    let got = c.list(&q).unwrap().items;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sandbox_id, a.sandbox_id);
    let q = ListQuery {
        states: vec![SandboxState::Paused],
        ..Default::default()
    };
    let got = c.list(&q).unwrap();
    assert_eq!(got.items.len(), 1);
    assert_eq!(got.items[0].cpu_count, 8);
    assert_eq!(
        got.total_running, None,
        "no running requested, no X-Total-Running"
    );
    let q = ListQuery {
        template: Some("big".into()),
        ..Default::default()
    };
    assert_eq!(c.list(&q).unwrap().items.len(), 1);
    assert_eq!(b.alias.as_deref(), Some("large"));
}

#[test]
fn idempotency_keys_make_creates_safe_to_retry() {
    let mut c = core_with("", unlimited());
    let a = c.create(&new_sbx("base"), true, Some("key-1")).unwrap();
    let again = c.create(&new_sbx("base"), true, Some("key-1")).unwrap();
    assert_eq!(a, again);
    assert_eq!(c.stats().creates, 1);
    let other = NewSandbox {
        timeout: Some(5),
        ..new_sbx("base")
    };
    assert_eq!(
        c.create(&other, true, Some("key-1")).unwrap_err().status,
        409
    );
    assert_eq!(
        c.create(&other, true, Some("Bad_Key")).unwrap_err().status,
        400
    );
}

#[test]
fn create_rate_and_concurrency_answer_429() {
    let cfg = CoreConfig {
        create_rate: 1.0,
        max_concurrent: 2,
        ..CoreConfig::default()
    };
    let mut c = core_with("", cfg);
    c.create(&new_sbx("base"), true, None).unwrap();
    let e = c.create(&new_sbx("base"), true, None).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str(), e.retry_after),
        (429, "Rate limit exceeded", Some(1))
    );
    c.advance(Duration::from_secs(1));
    c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_secs(1));
    let e = c.create(&new_sbx("base"), true, None).unwrap_err();
    assert_eq!(e.status, 429);
    assert!(
        e.message
            .contains("maximum number of concurrent E2B sandboxes (2)"),
        "{}",
        e.message
    );
    let s = c.stats();
    assert_eq!((s.rejected_rate_limit, s.rejected_concurrency), (1, 1));
}

#[test]
fn unknown_templates_are_404_like_e2b() {
    let mut c = core_with("", unlimited());
    let e = c.create(&new_sbx("python-latest"), true, None).unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (404, "template 'python-latest' not found")
    );
}

#[test]
fn events_page_newest_first_and_filter_by_type() {
    let mut c = core_with("", unlimited());
    for _ in 0..7 {
        let s = c.create(&new_sbx("base"), true, None).unwrap();
        c.advance(Duration::from_secs(1));
        c.kill(&s.sandbox_id).unwrap();
    }
    let all = c
        .events(
            None,
            &EventQuery {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(all.len(), 14);
    assert!(all.windows(2).all(|w| w[0].timestamp >= w[1].timestamp));
    let killed = c
        .events(
            None,
            &EventQuery {
                types: vec![EventType::Killed],
                limit: 3,
                offset: 3,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(killed.len(), 3);
    assert!(killed.iter().all(|e| e.kill_reason() == Some("request")));
    assert_eq!(
        c.events(
            None,
            &EventQuery {
                limit: 0,
                ..Default::default()
            }
        )
        .unwrap_err()
        .status,
        400
    );
    assert_eq!(
        c.events(
            None,
            &EventQuery {
                limit: 101,
                ..Default::default()
            }
        )
        .unwrap_err()
        .status,
        400
    );
}

#[test]
fn webhooks_receive_subscribed_events_only() {
    let mut c = core_with("", unlimited());
    let hook = c
        .create_webhook(&NewWebhook {
            name: "h".into(),
            url: "http://127.0.0.1:9/hook".into(),
            enabled: true,
            events: vec![EventType::Killed],
            signature_secret: "s3cr3t".into(),
        })
        .unwrap();
    let s = c.create(&new_sbx("base"), true, None).unwrap();
    assert!(c.take_outbox().is_empty(), "created is not subscribed");
    c.kill(&s.sandbox_id).unwrap();
    let out = c.take_outbox();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].webhook_id, hook.id);
    let ev: LifecycleEvent = serde_json::from_slice(&out[0].body).unwrap();
    assert_eq!(ev.event_type, EventType::Killed);
    c.update_webhook(
        &hook.id,
        &WebhookPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    let s = c.create(&new_sbx("base"), true, None).unwrap();
    c.kill(&s.sandbox_id).unwrap();
    assert!(c.take_outbox().is_empty(), "disabled");
    // E2B requires https; the emulator also takes http on loopback only.
    let mut bad = NewWebhook {
        name: "x".into(),
        url: "http://example.com/hook".into(),
        enabled: true,
        events: vec![EventType::Created],
        signature_secret: "s".into(),
    };
    assert_eq!(c.create_webhook(&bad).unwrap_err().status, 400);
    bad.url = "https://example.com/hook".into();
    bad.events = vec![EventType::Other("sandbox.lifecycle.exploded".into())];
    assert_eq!(c.create_webhook(&bad).unwrap_err().status, 400);
    c.delete_webhook(&hook.id).unwrap();
    assert_eq!(c.get_webhook(&hook.id).unwrap_err().status, 404);
}

#[test]
fn scenario_faults_kill_and_break_the_api() {
    let mut c = core_with(
        "initial:
  - { template: base, count: 3, metadata: { pool: w } }
faults:
  - { at: 10s, kill: 2, template: base }
  - { at: 20s, api_error: { status: 503, for: 5s, path: /v2/sandboxes } }
",
        unlimited(),
    );
    assert_eq!(c.stats().running, 3);
    c.advance(Duration::from_secs(11));
    let s = c.stats();
    assert_eq!((s.running, s.kills_by_reason.get("unknown")), (1, Some(&2)));
    c.advance(Duration::from_secs(10));
    assert_eq!(
        c.api_fault_for("/v2/sandboxes").map(|r| r.status),
        Some(503)
    );
    assert_eq!(c.api_fault_for("/sandboxes/x"), None);
    c.advance(Duration::from_secs(5));
    assert_eq!(c.api_fault_for("/v2/sandboxes"), None);
}

#[test]
fn counted_api_faults_run_out() {
    let mut c = core_with("", unlimited());
    c.inject_api_fault(
        ApiFault {
            status: 429,
            until: None,
            remaining: Some(2),
            path: None,
            method: Some("POST".into()),
            retry_after: None,
        },
        None,
    );
    assert!(
        c.api_fault_for_request("GET", "/anything").is_none(),
        "only POSTs"
    );
    let first = c.api_fault_for_request("POST", "/anything").unwrap();
    assert_eq!((first.status, first.retry_after), (429, Some(1)));
    assert!(c.api_fault_for("/anything").is_some());
    assert!(c.api_fault_for("/anything").is_none());
}

#[test]
fn same_seed_same_run() {
    let run = || {
        let mut c = core_with(
            "seed: 9\nload:\n  - { template: base, points: [[0s, 1], [1m, 6]], noise: 0.1 }\n",
            unlimited(),
        );
        let ids: Vec<String> = (0..5)
            .map(|_| c.create(&new_sbx("base"), true, None).unwrap().sandbox_id)
            .collect();
        c.advance(Duration::from_secs(120));
        let m: Vec<_> = ids
            .iter()
            .map(|i| c.metrics(i, None, None).unwrap())
            .collect();
        let e = c.events(None, &EventQuery::default()).unwrap();
        (ids, m, e)
    };
    assert_eq!(run(), run());
}

#[test]
fn thirty_minutes_of_a_thousand_sandboxes() {
    // The scale the issue asks to step "well under a second" in release; here we check the
    // totals (the time is measured by `cargo bench --bench emulator_core`).
    let mut c = core_with(
        "initial:\n  - { template: base, count: 1000 }\nload:\n  - { template: base, points: [[0s, 500], [15m, 2500], [30m, 500]], noise: 0.05 }\n",
        unlimited(),
    );
    c.advance(Duration::from_secs(1800));
    let s = c.stats();
    assert_eq!(s.running, 1000);
    assert!((s.sandbox_seconds - 1_800_000.0).abs() < 1e-3);
    // Capacity 2000 cores; demand above it between 11m15s and 18m45s, peaking 500 over;
    // plus the first second, while the initial sandboxes boot and all demand is unmet.
    let boot = 500.0 + 0.5 * 2000.0 / 900.0;
    let spike = 0.5 * 450.0 * 500.0;
    assert!(
        (s.unmet_core_seconds - (spike + boot)).abs() < 1e-3,
        "{}",
        s.unmet_core_seconds
    );
    let ids: Vec<String> = c
        .list(&ListQuery::default())
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.sandbox_id)
        .collect();
    assert_eq!(c.metrics(&ids[0], None, None).unwrap().len(), 360);
}

/// Item 12 of issue 9: absurd timeouts and durations are refused or ignored, never a panic.
#[test]
fn absurd_timeouts_and_durations_never_panic() {
    let mut c = core_with("", unlimited());
    let a = c.create(&new_sbx("base"), true, None).unwrap();
    c.pause(&a.sandbox_id).unwrap();
    for huge in [i64::MAX as u64, u64::MAX, MAX_TIMEOUT_SECS + 1] {
        let e = c.resume(&a.sandbox_id, huge).unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
        assert!(e.message.contains("24 hours"), "{e:?}");
        let e = c.connect(&a.sandbox_id, huge).unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
        let e = c.set_timeout(&a.sandbox_id, huge).unwrap_err();
        assert_eq!(e.status, 400, "{e:?}");
    }
    c.resume(&a.sandbox_id, MAX_TIMEOUT_SECS).unwrap();
    // Virtual time can be pushed to the end of chrono's range: what cannot be scheduled any
    // more is dropped, and the core keeps answering.
    let huge = humantime::parse_duration("300000years").unwrap();
    let fault = ApiFault {
        status: 503,
        until: None,
        remaining: None,
        path: Some("/nothing".into()),
        method: None,
        retry_after: None,
    };
    c.inject_api_fault(fault, Some(huge));
    assert!(
        c.try_advance(huge).is_err(),
        "300000 years is past chrono's range"
    );
    c.advance(huge);
    c.advance(Duration::MAX);
    c.advance_to(DateTime::<Utc>::MAX_UTC);
    c.advance(Duration::from_secs(5));
    let b = c.create(&new_sbx("base"), true, None);
    assert!(
        b.is_err_and(|e| e.status == 400),
        "no end time can be given"
    );
    assert_eq!(c.stats().running, 0);
    let _ = c.list(&ListQuery::default()).unwrap();
    let _ = c.metrics(&a.sandbox_id, Some(0), Some(i64::MAX)).unwrap();
}

/// A config or scenario built in code, not parsed, cannot hang or panic the core either.
#[test]
fn degenerate_configs_built_in_code_never_hang() {
    let cfg = CoreConfig {
        metrics_interval: Duration::ZERO,
        metrics_retention: Duration::MAX,
        event_retention: Duration::MAX,
        create_rate: f64::NAN,
        ..unlimited()
    };
    let mut s = Scenario::default();
    s.load.push(crate::emulator::scenario::LoadSpec {
        template: "base".into(),
        points: Vec::new(),
        noise: 0.0,
    });
    let mut c = Core::new(cfg, &s, t0());
    c.create(&new_sbx("base"), true, None).unwrap();
    c.advance(Duration::from_secs(10));
    assert_eq!(c.stats().running, 1);
    assert_eq!(c.demand("base"), 0.0);
}
