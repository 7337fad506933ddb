//! The conversion on rows made by hand: demand averaged per step and loaded back, saturated
//! spans and gaps said, crashes by the report's rule, claims as jobs, bad spans refused.

use chrono::TimeDelta;

use super::*;
use crate::e2b::{EventData, EventType, LifecycleEvent};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_787_200, 0).unwrap()
}

fn sample(pool: &str, s: i64, actual: u32, busy: f64) -> PoolSample {
    PoolSample {
        pool: pool.into(),
        at: t0() + TimeDelta::seconds(s),
        desired: Some(actual),
        actual,
        pending: 0,
        min: Some(1),
        max: Some(10),
        claimed: 0,
        idle: 0,
        paused: 0,
        waiting: 0,
        busy_cores: busy,
    }
}

fn span(minutes: i64) -> Span {
    Span {
        start: t0(),
        end: t0() + TimeDelta::minutes(minutes),
        step: Duration::from_secs(60),
        pools: vec![],
    }
}

fn killed(s: i64, reason: Option<&str>) -> StoredEvent {
    StoredEvent {
        event: LifecycleEvent {
            id: format!("e{s}"),
            version: None,
            event_type: EventType::Killed,
            timestamp: t0() + TimeDelta::seconds(s),
            event_data: Some(EventData {
                kill_reason: reason.map(str::to_string),
                ..EventData::default()
            }),
            sandbox_id: "s1".into(),
            sandbox_build_id: None,
            sandbox_execution_id: None,
            sandbox_team_id: None,
            sandbox_template_id: Some("base".into()),
            extra: Default::default(),
        },
        pool: Some("w".into()),
        source: "webhook".into(),
    }
}

/// 3 minutes: 1 busy core for 90 s, then 3 busy cores of 4 (2 members of 2 vCPU) until a
/// saturated minute at 4 of 4.
fn recording() -> Recording {
    Recording {
        pool_samples: vec![
            sample("w", 0, 1, 1.0),
            sample("w", 90, 2, 3.0),
            sample("w", 120, 2, 4.0),
        ],
        templates: vec![Seen {
            pool: "w".into(),
            value: "base".into(),
            count: 2,
        }],
        shapes: vec![Shape {
            pool: "w".into(),
            cpu_count: 2,
            mem_total: 512 * MIB * 31 / 32,
            disk_total: 2048 * MIB,
            count: 5,
        }],
        boots: vec![BootDelay {
            pool: "w".into(),
            millis: 2000,
        }],
        ..Recording::default()
    }
}

#[test]
fn demand_is_averaged_per_step_at_its_middle_and_saturation_is_said() {
    let r = scenario(&recording(), &span(3)).unwrap();
    let load = &r.scenario.load[0];
    let points: Vec<(u64, f64)> = load
        .points
        .iter()
        .map(|(t, v)| (t.0.as_secs(), *v))
        .collect();
    assert_eq!(points, vec![(30, 1.0), (90, 2.0), (150, 4.0)]);
    assert_eq!(r.saturated["base"], vec![(120.0, 180.0)]);
    let t = &r.scenario.templates["base"];
    assert_eq!((t.cpu_count, t.memory_mb, t.disk_mb), (2, 512, 2048));
    assert_eq!(t.boot.0, Duration::from_secs(2));
    assert_eq!(r.scenario.initial[0].count, 1);
}

#[test]
fn the_rendered_scenario_loads_back_the_same() {
    let mut rec = recording();
    rec.kills = vec![
        killed(100, Some("unknown")),
        killed(110, Some("request")),
        killed(120, None),
    ];
    rec.claims = vec![
        ClaimSpan {
            pool: "w".into(),
            claimed_at: t0() + TimeDelta::seconds(10),
            ended_at: Some(t0() + TimeDelta::seconds(40)),
        },
        ClaimSpan {
            pool: "w".into(),
            claimed_at: t0() + TimeDelta::seconds(20),
            ended_at: Some(t0() + TimeDelta::seconds(30)),
        },
    ];
    let r = scenario(&rec, &span(3)).unwrap();
    let text = render(&r, "state", &span(3));
    let back = Scenario::parse("recorded.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, r.scenario, "{text}");
    assert!(
        text.contains("# saturated (demand was likely higher): 2m-3m"),
        "{text}"
    );
    // Only the crash: a request and a kill without a reason are not crashes.
    assert_eq!(back.faults.len(), 1, "{text}");
    assert_eq!(back.faults[0].at.0, Duration::from_secs(100));
    let jobs = &back.jobs[0];
    assert_eq!(jobs.hold.0, Duration::from_secs(20));
    assert!((jobs.points[0].1 - 2.0 / 60.0).abs() < 0.001, "{text}");
}

#[test]
fn a_silence_longer_than_the_hold_is_a_gap_without_points() {
    let rec = Recording {
        pool_samples: vec![sample("w", 0, 1, 1.0), sample("w", 1200, 1, 2.0)],
        ..Recording::default()
    };
    let r = scenario(&rec, &span(21)).unwrap();
    assert_eq!(r.gaps["base"], vec![(360.0, 1200.0)]);
    assert_eq!(r.scenario.load[0].points.len(), 7);
    assert!(r.templates["base"].assumed);
}

#[test]
fn bad_spans_and_pools_are_refused_with_what_is_valid() {
    let e = scenario(&Recording::default(), &span(3)).unwrap_err();
    assert!(e.to_string().contains("no pool samples"), "{e}");
    let mut s = span(3);
    s.pools = vec!["nope".into()];
    let e = scenario(&recording(), &s).unwrap_err();
    assert!(e.to_string().contains("pools there: w"), "{e}");
    let mut s = span(3);
    s.step = Duration::from_secs(1);
    s.end = t0() + TimeDelta::days(1);
    let e = scenario(&recording(), &s).unwrap_err();
    assert!(e.to_string().contains("larger --step"), "{e}");
    let e = scenario(&recording(), &span(0)).unwrap_err();
    assert!(e.to_string().contains("not after"), "{e}");
}
