//! Engine tests: each behaviour of pools, alerts and triggers, plus property tests of the
//! invariants (min <= size <= max; no action inside a cooldown; no scale-down on missing data).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::*;
use crate::e2b::{EventData, EventType, LifecycleEvent, SandboxMetric, SandboxState};
use crate::rules::{POOL_KEY, load_str};

fn t0() -> DateTime<Utc> {
    // A Wednesday, 12:00 UTC.
    DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(s: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(s)
}

fn rules(yaml: &str) -> Arc<RuleSet> {
    Arc::new(load_str(&[("t.yaml", yaml)]).unwrap_or_else(|e| panic!("{e:?}")))
}

fn sbx(pool: &str, i: usize, cpu: Option<f64>, now: DateTime<Utc>) -> ObservedSandbox {
    let mut metadata = crate::e2b::Metadata::new();
    metadata.insert(POOL_KEY.into(), pool.into());
    ObservedSandbox {
        id: format!("{pool}-{i}"),
        template: "base".into(),
        started_at: t0() - TimeDelta::minutes(10) + TimeDelta::seconds(i as i64),
        end_at: t0() + TimeDelta::hours(1),
        state: SandboxState::Running,
        metadata,
        metric: cpu.map(|c| SandboxMetric {
            timestamp: now - TimeDelta::seconds(2),
            timestamp_unix: (now - TimeDelta::seconds(2)).timestamp(),
            cpu_count: 2,
            cpu_used_pct: c,
            mem_used: 100,
            mem_total: 1000,
            mem_cache: 10,
            disk_used: 500,
            disk_total: 1000,
        }),
    }
}

fn pool_of(pool: &str, cpus: &[Option<f64>], now: DateTime<Utc>) -> Vec<ObservedSandbox> {
    cpus.iter()
        .enumerate()
        .map(|(i, c)| sbx(pool, i, *c, now))
        .collect()
}

fn step(e: &mut Engine, now: DateTime<Utc>, sandboxes: &[ObservedSandbox]) -> Vec<Decision> {
    let pending = BTreeMap::new();
    e.step(
        now,
        &Observations {
            sandboxes,
            events: &[],
            pending_creates: &pending,
            claims: &crate::engine::NO_CLAIMS,
        },
    )
}

const GUIDE: &str = "
pools:
  - name: workers
    min: 2
    max: 10
    busy: cpu_used_pct > 80
    scale:
      interval: 15s
      steps:
        - { when: busy_ratio > 0.5, add: 1 }
        - { when: busy_ratio < 0.2, remove: 1 }
";

fn creates(d: &[Decision]) -> u32 {
    d.iter()
        .map(|d| match &d.action {
            Action::Create { count, .. } => *count,
            _ => 0,
        })
        .sum()
}

fn kills(d: &[Decision]) -> Vec<String> {
    d.iter()
        .flat_map(|d| match &d.action {
            Action::Kill { sandbox_ids, .. } => sandbox_ids.clone(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn the_guides_pattern_adds_one_when_most_are_busy() {
    let mut e = Engine::new(rules(GUIDE));
    let d = step(
        &mut e,
        t0(),
        &pool_of(
            "workers",
            &[Some(90.0), Some(95.0), Some(85.0), Some(10.0)],
            t0(),
        ),
    );
    assert_eq!(creates(&d), 1);
    let c = &d[0].cause;
    assert_eq!((c.current, c.raw, c.result), (Some(4), Some(5), Some(5)));
    assert_eq!(c.values["busy_ratio"], 0.75);
    assert!(
        c.summary
            .starts_with("pool workers: busy_ratio > 0.5 (busy_ratio 0.75), +1"),
        "{}",
        c.summary
    );
    assert!(c.summary.ends_with("size 4 -> 5"), "{}", c.summary);
    // Not due again until the interval has passed.
    assert!(
        step(
            &mut e,
            at(10),
            &pool_of("workers", &[Some(90.0); 5], at(10))
        )
        .is_empty()
    );
}

#[test]
fn scale_in_waits_for_the_stabilization_window() {
    let mut e = Engine::new(rules(GUIDE));
    let busy = pool_of("workers", &[Some(90.0); 4], t0());
    assert_eq!(creates(&step(&mut e, t0(), &busy)), 1);
    // Load drops: raw says -1, but 5 recommended 15 s ago holds the size.
    let idle: Vec<_> = pool_of("workers", &[Some(5.0); 5], at(15));
    assert!(step(&mut e, at(15), &idle).is_empty());
    let st = e.state().pools["workers"].status.clone().unwrap();
    assert_eq!((st.raw, st.desired), (4, 5));
    assert_eq!(st.clamps[0].kind, ClampKind::Stabilization);
    assert_eq!(st.clamps[0].until, Some(t0() + TimeDelta::minutes(5)));
    assert!(
        st.summary.contains("scale-in held by stabilization"),
        "{}",
        st.summary
    );
    // After the window, it scales in, one at a time, idle first.
    let mut t = 30;
    let mut first_kill = None;
    while t <= 400 {
        let d = step(&mut e, at(t), &pool_of("workers", &[Some(5.0); 5], at(t)));
        if !kills(&d).is_empty() {
            first_kill = Some(t);
            break;
        }
        t += 15;
    }
    assert_eq!(
        first_kill,
        Some(300),
        "the +1 at t0 leaves the 5-minute window at t0+5m"
    );
}

#[test]
fn max_min_and_cooldown_hold() {
    let yaml = "
pools:
  - name: w
    min: 3
    max: 4
    scale:
      steps: [{ when: busy_ratio > 0.5, add: 2 }]
      cooldown: { up: 1m }
";
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("w", &[Some(99.0); 3], t0()));
    assert_eq!(creates(&d), 1, "5 capped by max 4");
    assert!(
        d[0].cause.summary.contains("capped by max 4: 5 -> 4"),
        "{}",
        d[0].cause.summary
    );
    // Below min, with no data at all: min still holds.
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("w", &[None], t0()));
    assert_eq!(creates(&d), 2);
    // In cooldown: no scale-out although busy.
    let mut e = Engine::new(rules(&yaml.replace("max: 4", "max: 10")));
    assert_eq!(
        creates(&step(&mut e, t0(), &pool_of("w", &[Some(99.0); 3], t0()))),
        2
    );
    let d = step(&mut e, at(15), &pool_of("w", &[Some(99.0); 5], at(15)));
    assert!(d.is_empty());
    let st = e.state().pools["w"].status.clone().unwrap();
    assert_eq!(st.clamps.last().unwrap().kind, ClampKind::Cooldown);
    assert_eq!(st.clamps.last().unwrap().until, Some(at(60)));
    assert_eq!(
        creates(&step(
            &mut e,
            at(60),
            &pool_of("w", &[Some(99.0); 5], at(60))
        )),
        2
    );
}

#[test]
fn missing_data_never_reads_as_zero() {
    let mut e = Engine::new(rules(GUIDE));
    // Idle sandboxes would say -1, but one member has no sample: hold.
    let d = step(
        &mut e,
        t0(),
        &pool_of("workers", &[Some(1.0), Some(1.0), None], t0()),
    );
    assert!(d.is_empty());
    let st = e.state().pools["workers"].status.clone().unwrap();
    assert_eq!(st.clamps[0].kind, ClampKind::MissingData);
    // A stale sample counts as missing too.
    let mut stale = pool_of("workers", &[Some(1.0); 3], t0());
    stale[0].metric.as_mut().unwrap().timestamp = t0() - TimeDelta::minutes(5);
    let mut e = Engine::new(rules(GUIDE));
    assert!(step(&mut e, t0(), &stale).is_empty());
    // up_only lets a busy pool grow on partial data, still never shrink.
    let mut e = Engine::new(rules(&GUIDE.replace(
        "interval: 15s",
        "interval: 15s\n      on_missing_metrics: up_only",
    )));
    assert_eq!(
        creates(&step(
            &mut e,
            t0(),
            &pool_of("workers", &[Some(99.0), Some(99.0), None], t0())
        )),
        1
    );
    assert!(
        kills(&step(
            &mut e,
            at(400),
            &pool_of("workers", &[Some(1.0), Some(1.0), None, None], at(400))
        ))
        .is_empty()
    );
}

#[test]
fn target_tracking_follows_hpa() {
    let yaml = "
pools:
  - name: t
    min: 1
    max: 20
    scale:
      target: { metric: avg_cpu_used_pct, value: 60, tolerance: 0.1 }
";
    let mut e = Engine::new(rules(yaml));
    // avg 90 vs 60: ceil(4 * 1.5) = 6.
    assert_eq!(
        creates(&step(&mut e, t0(), &pool_of("t", &[Some(90.0); 4], t0()))),
        2
    );
    // Within tolerance: nothing.
    let mut e = Engine::new(rules(yaml));
    assert!(step(&mut e, t0(), &pool_of("t", &[Some(64.0); 4], t0())).is_empty());
}

#[test]
fn up_beats_down_and_the_larger_change_wins() {
    let yaml = "
pools:
  - name: p
    min: 0
    max: 50
    scale:
      steps:
        - { when: size > 0, remove: 3 }
        - { when: busy_ratio > 0.1, add: 1 }
        - { when: busy_ratio > 0.2, add: 4 }
";
    let mut e = Engine::new(rules(yaml));
    assert_eq!(
        creates(&step(&mut e, t0(), &pool_of("p", &[Some(99.0); 4], t0()))),
        4
    );
}

#[test]
fn victims_respect_policy_protection_and_age() {
    let yaml = "
pools:
  - name: p
    min: 0
    max: 10
    scale:
      steps: [{ when: size > 2, remove: 3 }]
      stabilization: { down: 0s }
    scale_in:
      victims: idle_first
      min_age: 5m
      protect: metadata.keep == \"yes\"
";
    let mut e = Engine::new(rules(yaml));
    let mut s = pool_of(
        "p",
        &[Some(50.0), Some(5.0), Some(1.0), Some(30.0), Some(0.0)],
        t0(),
    );
    s[2].metadata.insert("keep".into(), "yes".into());
    s[4].started_at = t0() - TimeDelta::minutes(1);
    let d = step(&mut e, t0(), &s);
    // Lowest CPU first, skipping the protected (p-2) and the young (p-4).
    assert_eq!(kills(&d), vec!["p-1", "p-3", "p-0"]);
    let mut e = Engine::new(rules(&yaml.replace("idle_first", "newest")));
    assert_eq!(kills(&step(&mut e, t0(), &s)), vec!["p-3", "p-1", "p-0"]);
    // Not enough eligible members: kill what may be killed and say so.
    let mut e = Engine::new(rules(&yaml.replace("remove: 3", "remove: 5")));
    let d = step(&mut e, t0(), &s);
    assert_eq!(kills(&d).len(), 3);
    assert!(
        d[0].cause
            .clamps
            .iter()
            .any(|c| c.kind == ClampKind::Victims)
    );
}

#[test]
fn protect_spares_members_and_missing_data_blocks_scale_in() {
    // A member without a sample blocks scale-in under up_only; with full data, protected members
    // are skipped. (That a missing sample never reads another member's values is checked by
    // bindings_are_cleared_for_sandboxes_without_data.)
    let yaml = "
pools:
  - name: p
    min: 0
    max: 10
    scale:
      steps: [{ when: size > 0, remove: 2 }]
      stabilization: { down: 0s }
      on_missing_metrics: up_only
    scale_in:
      protect: cpu_used_pct > 50
";
    let mut e = Engine::new(rules(yaml));
    let mut s = pool_of("p", &[Some(10.0), None, Some(90.0)], t0());
    s.swap(0, 2); // p-2 (90 %, protected) is bound just before p-1 (no sample)
    let d = step(&mut e, t0(), &s);
    // up_only blocks the scale-in on missing data; with full data only the idle one goes.
    assert!(kills(&d).is_empty(), "{d:?}");
    let mut e = Engine::new(rules(&yaml.replace(
        "on_missing_metrics: up_only",
        "on_missing_metrics: up_only\n      stale_after: 1h",
    )));
    let mut s = pool_of("p", &[Some(10.0), Some(20.0), Some(90.0)], t0());
    s[1].metric = None;
    s.swap(0, 2);
    let d = step(&mut e, t0(), &s);
    assert!(kills(&d).is_empty(), "missing data blocks scale-in: {d:?}");
    let mut e = Engine::new(rules(
        &yaml.replace("      on_missing_metrics: up_only\n", ""),
    ));
    let s = pool_of("p", &[Some(90.0), Some(10.0), Some(95.0)], t0());
    assert_eq!(
        kills(&step(&mut e, t0(), &s)),
        vec!["p-1"],
        "only the unprotected one"
    );
}

#[test]
fn bindings_are_cleared_for_sandboxes_without_data() {
    use crate::expr::Bindings;
    let s = pool_of("p", &[Some(90.0), None], t0());
    let prepared = super::prepare::prepare(&s, &NO_CLAIMS, super::prepare::Needs::default());
    let mut b = Bindings::new(&crate::rules::scopes::SANDBOX);
    assert!(super::prepare::bind_sandbox(
        &mut b,
        &prepared.sandboxes[0],
        t0(),
        Duration::from_secs(30)
    ));
    assert_eq!(b.num("cpu_used_pct"), Some(90.0));
    assert!(!super::prepare::bind_sandbox(
        &mut b,
        &prepared.sandboxes[1],
        t0(),
        Duration::from_secs(30)
    ));
    assert_eq!(
        b.num("cpu_used_pct"),
        None,
        "the previous sandbox's value must not leak"
    );
    let protect = crate::expr::compile(
        "cpu_used_pct > 50",
        &crate::rules::scopes::SANDBOX,
        crate::expr::Kind::Bool,
    )
    .unwrap();
    assert!(
        protect.eval_bool(&b).is_err(),
        "no data is an evaluation error, never a stale value"
    );
}

#[test]
fn schedules_change_the_bounds() {
    let yaml = "
pools:
  - name: s
    min: 1
    max: 10
    schedules:
      - { name: mornings, cron: \"0 8 * * 1-5\", timezone: Europe/Paris, min: 5 }
      - { name: evenings, cron: \"0 19 * * 1-5\", timezone: Europe/Paris, min: 1 }
";
    let mut e = Engine::new(rules(yaml));
    // Wednesday 12:00 UTC is 13:00 in Paris: the morning schedule applies.
    let d = step(&mut e, t0(), &pool_of("s", &[Some(10.0); 2], t0()));
    assert_eq!(creates(&d), 3);
    assert!(
        d[0].cause.summary.contains("schedule \"mornings\""),
        "{}",
        d[0].cause.summary
    );
    // 20:00 UTC is 21:00 in Paris: back to min 1, nothing to create (the members, whose
    // observed end has passed, are only kept alive).
    let mut e = Engine::new(rules(yaml));
    let d = step(
        &mut e,
        at(8 * 3600),
        &pool_of("s", &[Some(10.0); 2], at(8 * 3600)),
    );
    assert!(
        d.iter()
            .all(|d| matches!(d.action, Action::KeepAlive { .. })),
        "{d:?}"
    );
}

const ALERTS: &str = "
notifiers: [{ name: log, kind: log }]
pools: [{ name: p, min: 0, max: 10 }]
alerts:
  - name: hot
    scope: sandbox
    pool: p
    when: cpu_used_pct > 90
    for: 1m
    keep_firing_for: 30s
    repeat_interval: 10m
    message: \"{sandbox_id} at {cpu_used_pct}%\"
    notify: [log]
";

fn notices(d: &[Decision]) -> Vec<(String, AlertStatus, bool)> {
    d.iter()
        .filter_map(|d| match &d.action {
            Action::Alert(n) => Some((n.subject.clone(), n.status, n.repeat)),
            _ => None,
        })
        .collect()
}

#[test]
fn alerts_go_pending_firing_resolved() {
    let mut e = Engine::new(rules(ALERTS));
    let hot = |t| pool_of("p", &[Some(95.0), Some(10.0)], at(t));
    let cool = |t| pool_of("p", &[Some(10.0), Some(10.0)], at(t));
    assert!(notices(&step(&mut e, at(0), &hot(0))).is_empty(), "pending");
    assert_eq!(e.state().alerts["hot"]["p-0"].phase, AlertPhase::Pending);
    assert!(notices(&step(&mut e, at(30), &hot(30))).is_empty());
    let d = step(&mut e, at(60), &hot(60));
    assert_eq!(
        notices(&d),
        vec![("p-0".into(), AlertStatus::Firing, false)]
    );
    match &d[0].action {
        Action::Alert(n) => assert_eq!(n.message, "p-0 at 95%"),
        _ => unreachable!(),
    }
    // Condition clears: keeps firing for 30 s, then resolves.
    assert!(notices(&step(&mut e, at(70), &cool(70))).is_empty());
    assert!(notices(&step(&mut e, at(90), &cool(90))).is_empty());
    assert_eq!(
        notices(&step(&mut e, at(100), &cool(100))),
        vec![("p-0".into(), AlertStatus::Resolved, false)]
    );
    // A pending alert that clears sends nothing.
    step(&mut e, at(200), &hot(200));
    assert!(notices(&step(&mut e, at(215), &cool(215))).is_empty());
    assert!(e.state().alerts["hot"].is_empty());
}

#[test]
fn alerts_hold_on_missing_data_repeat_and_resolve_when_gone() {
    let mut e = Engine::new(rules(&ALERTS.replace("for: 1m", "for: 0s")));
    assert_eq!(
        notices(&step(&mut e, at(0), &pool_of("p", &[Some(95.0)], at(0)))).len(),
        1
    );
    // No sample: neither resolved nor re-sent.
    assert!(notices(&step(&mut e, at(60), &pool_of("p", &[None], at(60)))).is_empty());
    assert_eq!(e.state().alerts["hot"]["p-0"].phase, AlertPhase::Firing);
    // Repeat after repeat_interval.
    assert_eq!(
        notices(&step(
            &mut e,
            at(600),
            &pool_of("p", &[Some(95.0)], at(600))
        )),
        vec![("p-0".into(), AlertStatus::Firing, true)]
    );
    // The sandbox is gone: resolved.
    assert_eq!(
        notices(&step(&mut e, at(615), &[])),
        vec![("p-0".into(), AlertStatus::Resolved, false)]
    );
}

#[test]
fn state_survives_a_restart_without_repaging_or_forgetting_cooldowns() {
    let yaml = format!("{}\n", ALERTS.replace("for: 1m", "for: 0s").replace("pools: [{ name: p, min: 0, max: 10 }]", "pools:\n  - { name: p, min: 0, max: 10, scale: { steps: [{ when: busy_ratio > 0.5, add: 1 }], cooldown: { up: 10m } } }"));
    let mut e = Engine::new(rules(&yaml));
    let d = step(&mut e, at(0), &pool_of("p", &[Some(95.0)], at(0)));
    assert_eq!((creates(&d), notices(&d).len()), (1, 1));
    let saved = serde_json::to_string(e.state()).unwrap();
    let restored: EngineState = serde_json::from_str(&saved).unwrap();
    assert_eq!(&restored, e.state());
    let mut e2 = Engine::with_state(rules(&yaml), restored);
    let d = step(
        &mut e2,
        at(60),
        &pool_of("p", &[Some(95.0), Some(85.0)], at(60)),
    );
    assert!(
        d.is_empty(),
        "no re-page, no create inside the cooldown: {d:?}"
    );
}

fn killed(pool: Option<&str>, reason: &str) -> LifecycleEvent {
    let mut meta = crate::e2b::Metadata::new();
    if let Some(p) = pool {
        meta.insert(POOL_KEY.into(), p.into());
    }
    LifecycleEvent {
        id: "e1".into(),
        version: Some("v2".into()),
        event_type: EventType::Killed,
        timestamp: t0(),
        event_data: Some(EventData {
            sandbox_metadata: Some(meta),
            kill_reason: Some(reason.into()),
            ..Default::default()
        }),
        sandbox_id: "dead1".into(),
        sandbox_build_id: None,
        sandbox_execution_id: None,
        sandbox_template_id: Some("base".into()),
        sandbox_team_id: None,
        extra: Default::default(),
    }
}

#[test]
fn a_member_that_timed_out_is_noted_with_why_it_was_not_kept() {
    let notes = |yaml: &str, ev: LifecycleEvent| -> Vec<String> {
        let mut e = Engine::new(rules(yaml));
        let obs = Observations {
            sandboxes: &[],
            events: std::slice::from_ref(&ev),
            pending_creates: &BTreeMap::new(),
            claims: &crate::engine::NO_CLAIMS,
        };
        e.step(t0(), &obs)
            .into_iter()
            .filter(|d| matches!(d.action, Action::Note { .. }))
            .map(|d| d.cause.summary)
            .collect()
    };
    let off = "pools: [{ name: w, min: 0, max: 3, keepalive: false, sandbox: { timeout: 2m } }]";
    let n = notes(off, killed(Some("w"), "timeout"));
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(
        n[0].contains("member dead1 expired at its E2B timeout"),
        "{}",
        n[0]
    );
    assert!(
        n[0].contains("keep-alive is off and its timeout was 2m"),
        "{}",
        n[0]
    );
    let on = "pools: [{ name: w, min: 0, max: 3 }]";
    let n = notes(on, killed(Some("w"), "timeout"));
    assert!(
        n[0].contains("keep-alive is on but did not reach it in time"),
        "{}",
        n[0]
    );
    // Other deaths, other pools' members and unowned sandboxes are not this note.
    assert!(notes(on, killed(Some("w"), "request")).is_empty());
    assert!(notes(on, killed(Some("other"), "timeout")).is_empty());
    assert!(notes(on, killed(None, "timeout")).is_empty());
}

#[test]
fn triggers_replace_only_their_pools_crashed_sandboxes() {
    let yaml = "
pools: [{ name: w, min: 0, max: 3 }]
triggers:
  - name: replace-crashed
    on: killed
    pool: w
    when: kill_reason != \"request\" && kill_reason != \"timeout\"
    action: replace
";
    let mut e = Engine::new(rules(yaml));
    let members = pool_of("w", &[Some(10.0); 2], t0());
    let pending = BTreeMap::new();
    let run = |e: &mut Engine, ev: LifecycleEvent, members: &[ObservedSandbox]| {
        e.step(
            t0(),
            &Observations {
                sandboxes: members,
                events: &[ev],
                pending_creates: &pending,
                claims: &crate::engine::NO_CLAIMS,
            },
        )
    };
    let d = run(&mut e, killed(Some("w"), "unknown"), &members);
    assert_eq!(creates(&d), 1);
    assert!(
        d[0].cause.summary.contains("kill_reason unknown"),
        "{}",
        d[0].cause.summary
    );
    assert_eq!(
        creates(&run(&mut e, killed(Some("w"), "request"), &members)),
        0
    );
    assert_eq!(
        creates(&run(&mut e, killed(Some("other"), "unknown"), &members)),
        0
    );
    assert_eq!(creates(&run(&mut e, killed(None, "unknown"), &members)), 0);
    // At max: no replacement.
    let full = pool_of("w", &[Some(10.0); 3], t0());
    assert_eq!(
        creates(&run(&mut e, killed(Some("w"), "unknown"), &full)),
        0
    );
    // At max as observed, but one of the three is the sandbox the event says is gone (it died
    // after the observation a reaction works from): two are left, so it is replaced.
    let mut stale = pool_of("w", &[Some(10.0); 2], t0());
    let mut dead = stale[0].clone();
    dead.id = "dead1".into();
    stale.push(dead);
    assert_eq!(
        creates(&run(&mut e, killed(Some("w"), "unknown"), &stale)),
        1
    );
}

#[test]
fn dry_run_pools_mark_their_decisions() {
    let mut e = Engine::new(rules(
        &GUIDE.replace("max: 10", "max: 10\n    dry_run: true"),
    ));
    let d = step(&mut e, t0(), &pool_of("workers", &[Some(99.0); 3], t0()));
    assert!(d[0].dry_run);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold(
        min in 0u32..5,
        extra in 0u32..8,
        series in proptest::collection::vec(proptest::collection::vec(proptest::option::weighted(0.85, 0.0f64..100.0), 0..14), 1..30),
        cooldown_s in 0u64..120,
    ) {
        let max = min + extra + 1;
        let yaml = format!("
pools:
  - name: p
    min: {min}
    max: {max}
    scale:
      target: {{ metric: avg_cpu_used_pct, value: 50 }}
      steps:
        - {{ when: busy_ratio > 0.5, add: 2 }}
        - {{ when: busy_ratio < 0.3, remove: 2 }}
      cooldown: {{ up: {cooldown_s}s, down: {cooldown_s}s }}
      stabilization: {{ down: 30s }}
");
        let mut e = Engine::new(rules(&yaml));
        let mut last_up: Option<DateTime<Utc>> = None;
        let mut last_down: Option<DateTime<Utc>> = None;
        for (k, cpus) in series.iter().enumerate() {
            let now = at(15 * k as i64);
            let members = pool_of("p", cpus, now);
            let size = members.len() as u32;
            let missing = cpus.iter().any(|c| c.is_none());
            let d = step(&mut e, now, &members);
            let st = e.state().pools["p"].status.clone().unwrap();
            let added = creates(&d);
            let removed = kills(&d).len() as u32;
            let result = size + added - removed;
            // min <= result <= max (victims are all eligible here).
            prop_assert!(result >= min && result <= max, "size {size} -> {result}, bounds [{min}, {max}]");
            prop_assert_eq!(result, st.desired);
            let within = size >= min && size <= max;
            // No metric-driven action inside a cooldown.
            if within && added > 0 && cooldown_s > 0 {
                prop_assert!(last_up.is_none_or(|t| now - t >= TimeDelta::seconds(cooldown_s as i64)));
            }
            if within && removed > 0 && cooldown_s > 0 {
                prop_assert!(last_down.is_none_or(|t| now - t >= TimeDelta::seconds(cooldown_s as i64)));
            }
            // No scale-down while data is missing under hold, unless max forces it.
            if missing && size <= max {
                prop_assert_eq!(removed, 0);
            }
            if added > 0 && within { last_up = Some(now); }
            if removed > 0 && within { last_down = Some(now); }
        }
        let _ = Duration::ZERO;
    }
}

fn target_pool(metric: &str) -> Arc<RuleSet> {
    rules(&format!(
        "
pools:
  - name: p
    min: 1
    max: 20
    scale:
      target: {{ metric: \"{metric}\", value: 50 }}
      stabilization: {{ down: 0s }}
"
    ))
}

#[test]
fn a_nan_target_holds_the_pool_and_says_why() {
    let mut e = Engine::new(target_pool(
        "(busy_count - busy_count) / (busy_count - busy_count)",
    ));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(50.0); 6], t0()));
    assert!(d.is_empty(), "a NaN target must not cut the pool: {d:?}");
    let st = e.state().pools["p"].status.clone().unwrap();
    assert_eq!((st.size, st.desired), (6, 6));
    let clamp = &st.clamps[0];
    assert_eq!(clamp.kind, ClampKind::MissingData);
    assert!(
        clamp.note.contains("scale.target.metric") && clamp.note.contains("NaN"),
        "{}",
        clamp.note
    );
}

#[test]
fn an_infinite_target_holds_the_pool_and_says_why() {
    let mut e = Engine::new(target_pool("avg_cpu_used_pct / (busy_count - busy_count)"));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(50.0); 4], t0()));
    assert!(
        d.is_empty(),
        "an infinite target must not send the pool to max: {d:?}"
    );
    let st = e.state().pools["p"].status.clone().unwrap();
    assert_eq!(st.desired, 4);
    assert!(st.clamps[0].note.contains("inf"), "{:?}", st.clamps);
    // min still holds while the rule has no value.
    let d = step(&mut e, at(15), &[]);
    assert_eq!(creates(&d), 1, "{d:?}");
}

#[test]
fn a_step_that_cannot_be_evaluated_holds_every_metric_driven_change() {
    let yaml = "
pools:
  - name: p
    min: 0
    max: 10
    scale:
      stabilization: { down: 0s }
      steps:
        - { when: busy_ratio < 0.2, remove: 1 }
        - { when: avg_cpu_used_pct / (size - size) > 1, add: 1 }
";
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(1.0); 3], t0()));
    assert!(d.is_empty(), "{d:?}");
    let st = e.state().pools["p"].status.clone().unwrap();
    assert!(st.summary.contains("scale.steps[1].when"), "{}", st.summary);
}

#[test]
fn step_conditions_compare_numbers_by_value() {
    let yaml = "
pools:
  - name: p
    min: 0
    max: 10
    scale:
      stabilization: { down: 0s }
      steps:
        - { when: busy_count == 0 && size != 1, remove: 1 }
";
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(1.0); 3], t0()));
    assert_eq!(
        kills(&d).len(),
        1,
        "busy_count == 0 holds when none is busy"
    );
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(1.0)], t0()));
    assert!(d.is_empty(), "size != 1 is false when size is 1: {d:?}");
}

#[test]
fn a_resolve_carries_the_value_that_resolved_it() {
    let yaml = "
notifiers: [{ name: log, kind: log }]
alerts:
  - { name: hot, scope: sandbox, when: cpu_used_pct > 80, notify: [log], message: \"at {value}\" }
";
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &pool_of("p", &[Some(86.65)], t0()));
    assert_eq!(
        notices(&d),
        vec![("p-0".into(), AlertStatus::Firing, false)]
    );
    let d = step(&mut e, at(15), &pool_of("p", &[Some(12.5)], at(15)));
    assert_eq!(
        notices(&d),
        vec![("p-0".into(), AlertStatus::Resolved, false)]
    );
    assert_eq!(d[0].cause.values["value"], 12.5, "{:?}", d[0].cause);
    let Action::Alert(n) = &d[0].action else {
        panic!("{d:?}")
    };
    assert!(n.message.contains("at 12.5"), "{}", n.message);
}

/// Instants across chrono's whole range, the ends included.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (lo, hi) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        (-3_000_000_000i64..3_000_000_000).prop_map(at),
        (lo..=hi).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(t0())),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::from_secs(24 * 3600)),
        (0u64..10_000).prop_map(Duration::from_secs),
    ]
}

const EXTREME: &str = "
notifiers: [{ name: n, kind: log }]
pools:
  - name: p
    min: 0
    max: 100000
    sandbox: { timeout: 24h }
    scale:
      interval: 1day
      target: { metric: avg_cpu_used_pct * 1e300, value: 0.0000001 }
      steps:
        - { when: busy_ratio > 0.5, add: 100000 }
        - { when: busy_ratio < 0.2, remove: 100000 }
      cooldown: { up: 1day, down: 1day }
      stabilization: { up: 1day, down: 1day }
      max_step: { up: 100000, down: 100000 }
      stale_after: 1day
    scale_in: { min_age: 1day, victims: oldest }
    schedules:
      - { cron: \"0 8 * * 1-5\", timezone: Europe/Paris, min: 100000 }
      - { cron: \"59 23 31 12 *\", max: 1 }
alerts:
  - { name: a, scope: sandbox, when: cpu_used_pct / age_s > 1, for: 7days, keep_firing_for: 7days, repeat_interval: 30days, notify: [n] }
  - { name: b, scope: pool, when: size > 0, notify: [n], repeat_interval: 1s }
  - { name: c, scope: team, when: running > 0, for: 0s, notify: [n] }
triggers:
  - { name: r, on: killed, pool: p, action: replace }
  - { name: t, on: killed, pool: p, action: set_timeout, timeout: 24h }
";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Rule sets with the largest loadable durations and values, and durations beyond any
    /// that load, never panic `step` at any `now`, far past and far future included.
    #[test]
    fn extreme_durations_and_instants_never_panic_step(
        nows in proptest::collection::vec(any_instant(), 1..6),
        overrides in proptest::collection::vec(any_duration(), 9),
        starts in proptest::collection::vec((any_instant(), any_instant(), any_instant(), proptest::option::of(0.0f64..1e6)), 0..5),
        event_at in any_instant(),
    ) {
        let mut set = load_str(&[("x.yaml", EXTREME)]).unwrap_or_else(|e| panic!("{e:?}"));
        if let [a, b, c, d, e, f, g, h, i] = overrides[..] {
            let p = &mut set.pools[0];
            p.interval = a;
            p.cooldown = crate::rules::UpDown { up: b, down: c };
            p.stabilization = crate::rules::UpDown { up: d, down: e };
            p.stale_after = f;
            p.min_age = g;
            set.alerts[0].for_ = h;
            set.alerts[0].keep_firing_for = i;
            set.alerts[1].repeat_interval = a;
        }
        let mut e = Engine::new(Arc::new(set));
        let sandboxes: Vec<ObservedSandbox> = starts
            .iter()
            .enumerate()
            .map(|(i, (start, end, sample, cpu))| {
                let mut s = sbx("p", i, *cpu, t0());
                s.started_at = *start;
                s.end_at = *end;
                if let Some(m) = &mut s.metric {
                    m.timestamp = *sample;
                }
                s
            })
            .collect();
        let mut ev = killed(Some("p"), "unknown");
        ev.timestamp = event_at;
        let pending = BTreeMap::from([("p".to_string(), u32::MAX)]);
        for now in nows {
            let _ = e.step(
                now,
                &Observations {
                    sandboxes: &sandboxes,
                    events: std::slice::from_ref(&ev),
                    pending_creates: &pending,
                    claims: &crate::engine::NO_CLAIMS,
                },
            );
        }
    }
}

const REPLACER: &str = "
pools: [{ name: w, min: 0, max: 5 }]
triggers:
  - { name: replace-crashed, on: killed, pool: w, action: replace }
";

fn step_with_event(
    e: &mut Engine,
    now: DateTime<Utc>,
    ev: LifecycleEvent,
    members: &[ObservedSandbox],
) -> Vec<Decision> {
    let pending = BTreeMap::new();
    e.step(
        now,
        &Observations {
            sandboxes: members,
            events: &[ev],
            pending_creates: &pending,
            claims: &crate::engine::NO_CLAIMS,
        },
    )
}

#[test]
fn triggers_ignore_events_stamped_in_1970_or_2999() {
    let members = pool_of("w", &[Some(10.0); 2], t0());
    for stamp in ["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
        let mut e = Engine::new(rules(REPLACER));
        let mut ev = killed(Some("w"), "unknown");
        ev.timestamp = DateTime::parse_from_rfc3339(stamp).unwrap().to_utc();
        assert!(triggers::plausible(&ev, t0()).is_err(), "{stamp}");
        let d = step_with_event(&mut e, t0(), ev, &members);
        assert_eq!(creates(&d), 0, "{stamp}: {d:?}");
    }
    // Late by a few minutes, or a minute early (clock skew): acted on.
    for offset in [-600, 60] {
        let mut e = Engine::new(rules(REPLACER));
        let mut ev = killed(Some("w"), "unknown");
        ev.timestamp = at(offset);
        assert_eq!(creates(&step_with_event(&mut e, t0(), ev, &members)), 1);
    }
    let mut ev = killed(Some("w"), "unknown");
    ev.timestamp = DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let why = triggers::plausible(&ev, t0()).unwrap_err().to_string();
    assert!(why.contains("more than 1h before now"), "{why}");
}

#[test]
fn triggers_act_only_on_sandboxes_their_pool_owns() {
    let members = pool_of("w", &[Some(10.0); 2], t0());
    let mut e = Engine::new(rules(REPLACER));
    // No metadata, never observed: not ours.
    let mut unknown = killed(None, "unknown");
    unknown.event_data.as_mut().unwrap().sandbox_metadata = None;
    unknown.sandbox_id = "stranger".into();
    assert_eq!(
        creates(&step_with_event(&mut e, t0(), unknown, &members)),
        0
    );
    // Another pool's mark: not ours.
    let other = killed(Some("other"), "unknown");
    assert_eq!(creates(&step_with_event(&mut e, at(1), other, &members)), 0);
    // No metadata, but observed as a member of w: ours, also after it disappeared.
    let mut known = killed(None, "unknown");
    known.event_data.as_mut().unwrap().sandbox_metadata = None;
    known.sandbox_id = "w-1".into();
    known.timestamp = at(30);
    let survivors = pool_of("w", &[Some(10.0)], at(30));
    assert_eq!(
        creates(&step_with_event(&mut e, at(30), known.clone(), &survivors)),
        1
    );
    assert_eq!(e.state().members["w-1"].pool, "w");
    // Membership is forgotten once it is older than any event still acted on.
    let late = at(30) + TimeDelta::hours(2);
    step(&mut e, late, &[]);
    assert!(e.state().members.is_empty(), "{:?}", e.state().members);
}

#[test]
fn state_saved_before_membership_was_kept_still_loads() {
    let old = r#"{"pools":{},"alerts":{}}"#;
    let st: EngineState = serde_json::from_str(old).unwrap();
    assert!(st.members.is_empty());
    let json = serde_json::to_string(&EngineState::default()).unwrap();
    assert!(!json.contains("members"), "{json}");
}

mod policies;
mod predict;

/// Whether the pool evaluated at `now`: its status says when it last did.
fn evaluated_at(e: &mut Engine, now: DateTime<Utc>) -> bool {
    step(e, now, &pool_of("workers", &[Some(60.0); 4], now));
    e.state().pools["workers"]
        .status
        .as_ref()
        .is_some_and(|s| s.at == now)
}

#[test]
fn evaluations_keep_to_their_grid_on_a_jittery_clock() {
    let mut e = Engine::new(rules(GUIDE));
    let ms = TimeDelta::milliseconds;
    assert!(evaluated_at(&mut e, t0()));
    // A tick 10 ms early is on time: it does not put the evaluation off by a whole poll.
    assert!(!evaluated_at(&mut e, at(10)));
    assert!(evaluated_at(&mut e, at(15) - ms(10)));
    // A late evaluation (a poll late) delays only itself: the next is due on the grid, 30 s.
    assert!(!evaluated_at(&mut e, at(25)));
    assert!(evaluated_at(&mut e, at(35)));
    assert!(!evaluated_at(&mut e, at(40)));
    assert!(evaluated_at(&mut e, at(45)));
    // Well before its time is not due.
    assert!(!evaluated_at(&mut e, at(60) - ms(100)));
    assert!(evaluated_at(&mut e, at(60)));
}

// --- Claims, member lifetime and the warm tier (issue 10) ---

fn step_claims(
    e: &mut Engine,
    now: DateTime<Utc>,
    sandboxes: &[ObservedSandbox],
    claims: &BTreeMap<String, PoolClaims>,
) -> Vec<Decision> {
    step_full(e, now, sandboxes, &BTreeMap::new(), claims)
}

fn step_full(
    e: &mut Engine,
    now: DateTime<Utc>,
    sandboxes: &[ObservedSandbox],
    pending: &BTreeMap<String, u32>,
    claims: &BTreeMap<String, PoolClaims>,
) -> Vec<Decision> {
    e.step(
        now,
        &Observations {
            sandboxes,
            events: &[],
            pending_creates: pending,
            claims,
        },
    )
}

/// `pool`'s claims: these members leased until `until`, and a claim rate.
fn leases(
    pool: &str,
    ids: &[&str],
    until: DateTime<Utc>,
    rate: f64,
) -> BTreeMap<String, PoolClaims> {
    let claims = PoolClaims {
        leases: ids.iter().map(|id| (id.to_string(), until)).collect(),
        claim_rate: rate,
        waiting: 0,
    };
    BTreeMap::from([(pool.to_string(), claims)])
}

/// The decision's cause says `text`.
fn says(d: &Decision, text: &str) {
    assert!(d.cause.summary.contains(text), "{}", d.cause.summary);
}

fn pauses(d: &[Decision]) -> Vec<String> {
    d.iter()
        .filter_map(|d| match &d.action {
            Action::Pause { sandbox_id, .. } => Some(sandbox_id.clone()),
            _ => None,
        })
        .collect()
}

fn keepalives(d: &[Decision]) -> Vec<(Vec<String>, u64)> {
    d.iter()
        .filter_map(|d| match &d.action {
            Action::KeepAlive {
                sandbox_ids,
                timeout_s,
                ..
            } => Some((sandbox_ids.clone(), *timeout_s)),
            _ => None,
        })
        .collect()
}

const IDLE: &str = "
pools:
  - name: jobs
    min: 0
    max: 20
    idle: { min: 2, max: 4 }
    scale: { stabilization: { down: 0s } }
";

#[test]
fn idle_scaling_keeps_claimed_plus_a_band() {
    // 5 members, 4 claimed: 1 idle, below the band's 2: one more.
    let mut e = Engine::new(rules(IDLE));
    let m = pool_of("jobs", &[Some(50.0); 5], t0());
    let c = leases(
        "jobs",
        &["jobs-0", "jobs-1", "jobs-2", "jobs-3"],
        at(600),
        0.5,
    );
    let d = step_claims(&mut e, t0(), &m, &c);
    assert_eq!(creates(&d), 1);
    assert_eq!(d[0].cause.values["claimed"], 4.0);
    says(&d[0], "idle 1 beside 4 claimed vs idle band 2..4, +1");
    // 5 idle: one above the band's 4, so one goes; 3 idle is inside the band: no change.
    let mut e = Engine::new(rules(IDLE));
    let d = step_claims(&mut e, t0(), &m, &NO_CLAIMS);
    assert_eq!(kills(&d).len(), 1);
    let mut e = Engine::new(rules(IDLE));
    let d = step_claims(
        &mut e,
        t0(),
        &pool_of("jobs", &[Some(50.0); 3], t0()),
        &NO_CLAIMS,
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn an_idle_lead_raises_the_band_s_floor_to_the_claims_expected_within_it() {
    let yaml = "
pools:
  - name: jobs
    min: 0
    max: 20
    idle: { min: 2, max: 10, lead: 20s }
";
    // 3 members, 1 claimed: 2 idle. At 0.5 claims/s over 20s, 10 are expected: 8 more.
    let m = pool_of("jobs", &[Some(50.0); 3], t0());
    let mut e = Engine::new(rules(yaml));
    let d = step_claims(&mut e, t0(), &m, &leases("jobs", &["jobs-0"], at(600), 0.5));
    assert_eq!(creates(&d), 8);
    says(&d[0], "min raised to 10: 0.5 claims/s over a lead of 20s");
    // At 0.3 claims/s, 6 expected: 4 more. Never above max: at 5/s, 10 idle.
    let mut e = Engine::new(rules(yaml));
    let d = step_claims(&mut e, t0(), &m, &leases("jobs", &["jobs-0"], at(600), 0.3));
    assert_eq!(creates(&d), 4);
    let mut e = Engine::new(rules(yaml));
    let d = step_claims(&mut e, t0(), &m, &leases("jobs", &["jobs-0"], at(600), 5.0));
    assert_eq!(creates(&d), 8);
    // A quiet pool, or a rate that is not a number, keeps the band's own min.
    for rate in [0.0, f64::NAN, f64::INFINITY] {
        let mut e = Engine::new(rules(yaml));
        let d = step_claims(
            &mut e,
            t0(),
            &m,
            &leases("jobs", &["jobs-0"], at(600), rate),
        );
        assert!(d.is_empty(), "rate {rate}: {d:?}");
    }
}

#[test]
fn waiting_claims_grow_a_band_of_zero_once_and_no_more() {
    let yaml = "
pools:
  - name: jobs
    min: 0
    max: 20
    idle: { min: 0, max: 0 }
";
    let waiting = |n: u32| {
        let mut c = leases("jobs", &[], at(600), 0.0);
        if let Some(p) = c.get_mut("jobs") {
            p.waiting = n;
        }
        c
    };
    // Nothing running, three claims waiting: three creates.
    let mut e = Engine::new(rules(yaml));
    let d = step_claims(&mut e, t0(), &[], &waiting(3));
    assert_eq!(creates(&d), 3);
    says(&d[0], "and 3 claims waiting");
    // Those three on their way (in flight count as idle): nothing more for the same waiters.
    let mut e = Engine::new(rules(yaml));
    let pending = BTreeMap::from([("jobs".to_string(), 3)]);
    let d = step_full(&mut e, t0(), &[], &pending, &waiting(3));
    assert_eq!(creates(&d), 0, "{d:?}");
    // No one waiting: a band of 0 keeps nothing idle.
    let mut e = Engine::new(rules(yaml));
    assert!(step_claims(&mut e, t0(), &[], &waiting(0)).is_empty());
}

#[test]
fn pool_variables_count_claims_and_a_pool_without_claims_reads_zero() {
    let yaml = "
pools:
  - name: jobs
    min: 1
    max: 20
    scale:
      steps:
        - { when: claim_rate > 1 && claimed == 2 && idle == 1 && paused == 1, add: 3 }
";
    let mut m = pool_of("jobs", &[Some(50.0); 3], t0());
    let mut parked = sbx("jobs", 9, Some(1.0), t0());
    parked.state = SandboxState::Paused;
    m.push(parked);
    // A claim on a paused member is not a claimed running member.
    let c = leases("jobs", &["jobs-0", "jobs-1", "jobs-9"], at(600), 2.0);
    let mut e = Engine::new(rules(yaml));
    assert_eq!(creates(&step_claims(&mut e, t0(), &m, &c)), 3);
    // No entry for the pool: claimed 0 and claim_rate 0, so the step does not fire.
    let mut e = Engine::new(rules(yaml));
    let other = leases("elsewhere", &["jobs-0"], at(600), 9.0);
    assert_eq!(creates(&step_claims(&mut e, t0(), &m, &other)), 0);
    // A NaN rate reads as 0.
    let mut e = Engine::new(rules(yaml));
    let nan = leases("jobs", &["jobs-0", "jobs-1"], at(600), f64::NAN);
    assert_eq!(creates(&step_claims(&mut e, t0(), &m, &nan)), 0);
}

#[test]
fn idle_scaling_acts_on_missing_and_nan_metrics() {
    let yaml = "
pools:
  - name: jobs
    min: 0
    max: 20
    idle: { min: 2, max: 4 }
    scale:
      target: { metric: avg_cpu_used_pct, value: 50 }
";
    let c = leases("jobs", &["jobs-0", "jobs-1", "jobs-2"], at(600), 0.0);
    // Two members without a sample: the target holds, the idle band still grows the pool.
    let mut e = Engine::new(rules(yaml));
    let m = pool_of("jobs", &[Some(50.0), None, None], t0());
    let d = step_claims(&mut e, t0(), &m, &c);
    assert_eq!(creates(&d), 2, "{d:?}");
    assert!(
        d[0].cause
            .clamps
            .iter()
            .any(|c| c.kind == ClampKind::MissingData)
    );
    // A NaN metric: the same.
    let mut e = Engine::new(rules(yaml));
    let m = pool_of("jobs", &[Some(f64::NAN); 3], t0());
    assert_eq!(creates(&step_claims(&mut e, t0(), &m, &c)), 2);
}

#[test]
fn keep_alive_extends_members_near_their_end_and_claimed_ones_to_their_lease() {
    let yaml = "pools: [{ name: p, min: 0, max: 10, scale: { stabilization: { down: 0s } } }]";
    let mut m = pool_of("p", &[Some(50.0); 4], t0());
    m[0].end_at = at(30); // unclaimed, 30 s left
    m[1].end_at = at(90); // claimed until 20 min from now
    m[2].end_at = at(100); // claimed, lease ends in 1 min: to 10 min
    m[3].end_at = at(600); // not near its end
    let mut c = leases("p", &["p-1"], at(1200), 0.0);
    c.get_mut("p").unwrap().leases.insert("p-2".into(), at(60));
    let mut e = Engine::new(rules(yaml));
    let d = step_claims(&mut e, t0(), &m, &c);
    let mut k = keepalives(&d);
    k.sort();
    assert_eq!(
        k,
        [
            (vec!["p-0".to_string(), "p-2".to_string()], 600),
            (vec!["p-1".to_string()], 1200),
        ]
    );
    let s = &d
        .iter()
        .find(|d| matches!(&d.action, Action::KeepAlive { timeout_s: 600, .. }))
        .unwrap()
        .cause
        .summary;
    assert!(
        s.contains("keep-alive: 2 members had at most 30s left (under 2m)"),
        "{s}"
    );
    // Turned off: nothing.
    let off = "pools: [{ name: p, min: 0, max: 10, keepalive: false, sandbox: { timeout: 1h } }]";
    let mut e = Engine::new(rules(off));
    assert!(keepalives(&step_claims(&mut e, t0(), &m, &c)).is_empty());
}

#[test]
fn keep_alive_skips_members_killed_in_the_same_step() {
    let yaml = "pools: [{ name: p, min: 1, max: 10, scale: { steps: [{ when: size > 1, remove: 3 }], stabilization: { down: 0s } } }]";
    let mut m = pool_of("p", &[Some(50.0); 4], t0());
    for s in &mut m {
        s.end_at = at(30);
    }
    let mut e = Engine::new(rules(yaml));
    let d = step(&mut e, t0(), &m);
    let killed = kills(&d);
    assert_eq!(killed.len(), 3);
    let kept: Vec<String> = keepalives(&d)
        .into_iter()
        .flat_map(|(ids, _)| ids)
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(!killed.contains(&kept[0]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Keep-alive never shortens a life, and a claimed member lives at least to its lease.
    #[test]
    fn keep_alive_never_shortens(
        ends in proptest::collection::vec(-600i64..7200, 1..8),
        lease_ends in proptest::collection::vec(proptest::option::of(-60i64..90_000), 8),
        extend_m in 1u64..60,
    ) {
        let yaml = format!("pools: [{{ name: p, min: 0, max: 20, keepalive: {{ extend_to: {extend_m}m, before: 30s }} }}]");
        let mut e = Engine::new(rules(&yaml));
        let mut m = pool_of("p", &vec![Some(50.0); ends.len()], t0());
        let mut c = PoolClaims::default();
        for (k, s) in m.iter_mut().enumerate() {
            s.end_at = at(ends[k]);
            if let Some(l) = lease_ends[k] {
                c.leases.insert(s.id.clone(), at(l));
            }
        }
        let claims = BTreeMap::from([("p".to_string(), c.clone())]);
        let d = step_claims(&mut e, t0(), &m, &claims);
        for (ids, timeout_s) in keepalives(&d) {
            for id in ids {
                let s = m.iter().find(|s| s.id == id).unwrap();
                let new_end = t0() + TimeDelta::seconds(timeout_s as i64);
                prop_assert!(new_end > s.end_at, "{id}: {} -> {new_end}", s.end_at);
                prop_assert!(s.end_at <= at(30));
                if let Some(l) = c.leases.get(&id) {
                    prop_assert!(new_end >= (*l).min(t0() + TimeDelta::hours(24)));
                }
            }
        }
    }

    /// Whatever the shrink (steps, idle band, warm tier, rolling), a claimed member is never
    /// killed or paused.
    #[test]
    fn a_claimed_member_is_never_a_victim(
        n in 1usize..12,
        claimed_mask in 0u32..4096,
        remove in 1u32..12,
        victims in 0usize..3,
        min in 0u32..3,
        old in any::<bool>(),
    ) {
        let policy = ["idle_first", "oldest", "newest"][victims];
        let yaml = format!("
pools:
  - name: p
    min: {min}
    max: 12
    idle: {{ min: 0, max: 1 }}
    warm: {{ paused: 2, after: 0s }}
    max_age: 1h
    scale:
      steps: [{{ when: size > 0, remove: {remove} }}]
      stabilization: {{ down: 0s }}
    scale_in: {{ victims: {policy} }}
");
        let mut e = Engine::new(rules(&yaml));
        let mut m = pool_of("p", &vec![Some(10.0); n], t0());
        if old {
            for s in &mut m {
                s.started_at = t0() - TimeDelta::hours(2);
            }
        }
        let ids: Vec<&str> = m.iter().enumerate().filter(|(k, _)| claimed_mask & (1 << k) != 0).map(|(_, s)| s.id.as_str()).collect();
        let claims = leases("p", &ids, at(600), 0.0);
        let d = step_claims(&mut e, t0(), &m, &claims);
        for id in kills(&d).iter().chain(pauses(&d).iter()) {
            prop_assert!(!ids.contains(&id.as_str()), "claimed {id} chosen: {d:?}");
        }
    }
}

const ROLL: &str = "
pools:
  - name: r
    min: 4
    max: 6
    max_age: 1h
    scale: { stabilization: { down: 0s } }
";

/// `n` members of pool `r`, all started `age_s` seconds before `now`, ids from `first`.
fn aged(first: usize, n: usize, age_s: i64, now: DateTime<Utc>) -> Vec<ObservedSandbox> {
    (first..first + n)
        .map(|i| {
            let mut s = sbx("r", i, Some(50.0), now);
            s.started_at = now - TimeDelta::seconds(age_s);
            s.end_at = now + TimeDelta::hours(2);
            s
        })
        .collect()
}

#[test]
fn rolling_replaces_first_then_kills() {
    let mut e = Engine::new(rules(ROLL));
    // 4 members, one past max_age (and its jitter): a replacement first, nothing killed.
    let mut m = aged(0, 3, 60, t0());
    m.extend(aged(3, 1, 3 * 3600, t0()));
    let d = step(&mut e, t0(), &m);
    assert_eq!((creates(&d), kills(&d).len()), (1, 0), "{d:?}");
    says(&d[0], "rolled: 1 member older than max_age 1h");
    // The replacement is in flight: still nothing killed, nothing more created.
    let pending = BTreeMap::from([("r".to_string(), 1)]);
    let d = step_full(&mut e, at(15), &m, &pending, &NO_CLAIMS);
    assert_eq!((creates(&d), kills(&d).len()), (0, 0), "{d:?}");
    // The replacement runs: the old member goes.
    m.extend(aged(4, 1, 5, at(30)));
    let d = step(&mut e, at(30), &m);
    assert_eq!(kills(&d), ["r-3"]);
    assert_eq!(creates(&d), 0);
}

#[test]
fn rolling_at_max_kills_one_first_and_leaves_claimed_members_to_their_lease() {
    let mut e = Engine::new(rules(ROLL));
    let m = aged(0, 6, 3 * 3600, t0());
    // At max 6, all old, two claimed: no room, so one unclaimed member is killed, then its
    // replacement created.
    let c = leases("r", &["r-0", "r-1"], at(600), 0.0);
    let d = step_claims(&mut e, t0(), &m, &c);
    assert!(matches!(d[0].action, Action::Kill { .. }), "{d:?}");
    assert_eq!(creates(&d), 1);
    let k = kills(&d);
    assert_eq!(k.len(), 1, "{d:?}");
    assert!(k[0] != "r-0" && k[0] != "r-1");
    says(
        &d[0],
        "at max 6 with no room: 1 killed, then its replacement created",
    );
    // All claimed: nothing rolls.
    let mut e = Engine::new(rules(ROLL));
    let ids: Vec<String> = m.iter().map(|s| s.id.clone()).collect();
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let d = step_claims(&mut e, t0(), &m, &leases("r", &all, at(600), 0.0));
    assert!(kills(&d).is_empty() && creates(&d) == 0, "{d:?}");
}

/// Plays the engine's creates and kills on a fleet: creates appear at the next step.
#[test]
fn rolling_never_dips_below_desired_with_room_and_never_exceeds_max() {
    let yaml = ROLL.replace("max: 6", "max: 8");
    let mut e = Engine::new(rules(&yaml));
    let mut fleet = aged(0, 4, 3 * 3600, t0());
    let mut next = 100;
    let mut pending = 0u32;
    for k in 0..12 {
        let now = at(15 * k);
        // Creates sent at the previous step are running now.
        fleet.extend(aged(next, pending as usize, 1, now));
        next += pending as usize;
        let d = step(&mut e, now, &fleet);
        let add = creates(&d);
        let gone = kills(&d);
        fleet.retain(|s| !gone.contains(&s.id));
        assert!(fleet.len() >= 4, "step {k}: {} running", fleet.len());
        assert!(fleet.len() as u32 + add <= 8, "step {k}: over max");
        pending = add;
    }
    // Every old member rolled.
    assert!(
        fleet.iter().all(|s| s.id.as_str() >= "r-100"),
        "{:?}",
        fleet.iter().map(|s| &s.id).collect::<Vec<_>>()
    );
}

const WARM: &str = "
pools:
  - name: w
    min: 1
    max: 20
    idle: { min: 1, max: 10 }
    warm: { paused: 2, after: 2m }
";

#[test]
fn warm_pauses_the_lasting_excess_only_after_after() {
    let mut e = Engine::new(rules(WARM));
    // 5 idle members, 1 claimed: 4 beyond idle.min... 1 claimed leaves idle 4, excess 3.
    let m = pool_of("w", &[Some(1.0); 5], t0());
    let c = leases("w", &["w-0"], at(3600), 0.0);
    for s in [0, 60, 105] {
        let d = step_claims(&mut e, at(s), &m, &c);
        assert!(
            pauses(&d).is_empty() && kills(&d).is_empty(),
            "at {s}s: {d:?}"
        );
    }
    let d = step_claims(&mut e, at(120), &m, &c);
    let p = pauses(&d);
    assert_eq!(p.len(), 2, "{d:?}");
    assert_eq!(
        kills(&d).len(),
        1,
        "excess beyond warm.paused is killed: {d:?}"
    );
    assert!(!p.contains(&"w-0".to_string()));
    says(&d[0], "warm: 3 members idle beyond idle.min 1 for 2m");
}

#[test]
fn warm_window_restarts_when_the_excess_goes_and_paused_members_beyond_the_cap_die() {
    let mut e = Engine::new(rules(WARM));
    let m = pool_of("w", &[Some(1.0); 3], t0());
    step(&mut e, t0(), &m);
    // The excess goes at 60 s (all claimed but one), and comes back at 75 s.
    let c = leases("w", &["w-0", "w-1"], at(3600), 0.0);
    step_claims(&mut e, at(60), &m, &c);
    for s in [75, 120, 180] {
        assert!(pauses(&step(&mut e, at(s), &m)).is_empty(), "at {s}s");
    }
    assert_eq!(pauses(&step(&mut e, at(195), &m)).len(), 2);
    // Three paused members with warm.paused 2: the oldest is killed; paused members do not
    // count toward the size.
    let mut e = Engine::new(rules(WARM));
    let mut m = pool_of("w", &[Some(1.0); 1], t0());
    for i in 1..4 {
        let mut s = sbx("w", i, None, t0());
        s.state = SandboxState::Paused;
        m.push(s);
    }
    let d = step(&mut e, t0(), &m);
    assert_eq!(kills(&d), ["w-1"]);
    assert_eq!(d[0].cause.current, Some(1));
}
