//! The events report (the monitoring guide's Pattern 3, historical event analysis): from a
//! window of lifecycle events, per template and pool, the sandboxes created, lifetime
//! percentiles, kill reasons, the crash rate, pauses and resumes, creates per hour and the
//! busiest hours of the day.
//!
//! It is a pure function over events: it never fetches, never reads a clock (the window's
//! ends are given) and never prints. `poolpilot events report` fetches and renders.
//!
//! Its JSON is a documented promise (docs/operations.md, "Events report"): fields are only
//! ever added. A figure with nothing to measure is `null`, never NaN.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Timelike as _, Utc};
use serde::Serialize;

use crate::e2b::{EventType, LifecycleEvent, kill_reason};
use crate::rules::POOL_KEY;

/// The pool of sandboxes poolpilot does not own (no `poolpilot_pool` metadata).
pub(crate) const UNOWNED: &str = "-";
/// The template of a sandbox none of whose events names one.
const NO_TEMPLATE: &str = "-";
/// The kill reason of a killed event that carries none.
const NO_REASON: &str = "none";
/// How many hours of the day the report names as the busiest.
const BUSIEST: usize = 3;

/// What the report covers: events at or after `since` (up to `until`, the time of the
/// report), of one pool or all.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) since: DateTime<Utc>,
    pub(crate) until: DateTime<Utc>,
    pub(crate) pool: Option<String>,
}

/// The whole report, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Report {
    pub(crate) since: DateTime<Utc>,
    pub(crate) until: DateTime<Utc>,
    /// The `--pool` filter, or null for all pools.
    pub(crate) pool: Option<String>,
    /// Events in the window (after the pool filter).
    pub(crate) events: usize,
    /// One per template and pool with an event in the window, by template then pool.
    pub(crate) groups: Vec<Group>,
}

/// The figures of one template in one pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Group {
    pub(crate) template: String,
    /// The `poolpilot_pool` metadata, or "-" for sandboxes poolpilot does not own.
    pub(crate) pool: String,
    pub(crate) created: u64,
    pub(crate) killed: u64,
    /// From created to killed, of sandboxes with both events in the window.
    pub(crate) lifetime_seconds: Lifetimes,
    /// Killed events by `kill_reason` ("none" when absent).
    pub(crate) kill_reasons: BTreeMap<String, u64>,
    /// Killed for a reason other than `request`, `timeout` or none, over killed; null
    /// when nothing was killed.
    pub(crate) crash_rate: Option<f64>,
    pub(crate) paused: u64,
    pub(crate) resumed: u64,
    /// Created over the window's length in hours.
    pub(crate) creates_per_hour: f64,
    /// The (at most three) hours of the day, UTC, with the most creates; most first.
    pub(crate) busiest_hours_utc: Vec<HourCount>,
}

/// Lifetime percentiles (nearest rank), in seconds; null when no lifetime was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Lifetimes {
    pub(crate) count: usize,
    pub(crate) p50: Option<f64>,
    pub(crate) p90: Option<f64>,
    pub(crate) p99: Option<f64>,
}

/// Creates in one hour of the day (0 to 23, UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HourCount {
    pub(crate) hour: u32,
    pub(crate) creates: u64,
}

/// Builds the report of the events in `window`, in any order, duplicates (same id) once.
pub(crate) fn build(events: &[LifecycleEvent], window: &Window) -> Report {
    let in_window = select(events, window);
    let owners = owners(&in_window);
    let mut tallies: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for e in &in_window {
        let Some(key) = owners.get(e.sandbox_id.as_str()) else {
            continue;
        };
        if window.pool.as_ref().is_none_or(|p| *p == key.1) {
            tallies.entry(key.clone()).or_default().add(e);
        }
    }
    let hours = window_hours(window);
    Report {
        since: window.since,
        until: window.until,
        pool: window.pool.clone(),
        events: tallies.values().map(|t| t.events).sum(),
        groups: tallies
            .into_iter()
            .map(|((template, pool), t)| t.into_group(template, pool, hours))
            .collect(),
    }
}

/// The events at or after `since` and not after `until`, each id once.
fn select<'a>(events: &'a [LifecycleEvent], window: &Window) -> Vec<&'a LifecycleEvent> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|e| e.timestamp >= window.since && e.timestamp <= window.until)
        .filter(|e| seen.insert(e.id.as_str()))
        .collect()
}

/// Each sandbox's template and pool: the first of its events that names them, so a killed
/// event without metadata counts where its created event does.
fn owners<'a>(events: &[&'a LifecycleEvent]) -> BTreeMap<&'a str, (String, String)> {
    let mut templates: BTreeMap<&str, &str> = BTreeMap::new();
    let mut pools: BTreeMap<&str, &str> = BTreeMap::new();
    for e in events {
        if let Some(t) = e.sandbox_template_id.as_deref() {
            templates.entry(&e.sandbox_id).or_insert(t);
        }
        if let Some(p) = e.metadata().and_then(|m| m.get(POOL_KEY)) {
            pools.entry(&e.sandbox_id).or_insert(p);
        }
    }
    events
        .iter()
        .map(|e| {
            let id = e.sandbox_id.as_str();
            let template = templates.get(id).copied().unwrap_or(NO_TEMPLATE);
            let pool = pools.get(id).copied().unwrap_or(UNOWNED);
            (id, (template.to_string(), pool.to_string()))
        })
        .collect()
}

/// The window's length in hours, never zero.
fn window_hours(window: &Window) -> f64 {
    let secs = (window.until - window.since).num_milliseconds() as f64 / 1000.0;
    (secs / 3600.0).max(1.0 / 3600.0)
}

/// What one group's events add up to, before the figures are derived.
#[derive(Debug, Default)]
struct Tally {
    events: usize,
    created_at: BTreeMap<String, DateTime<Utc>>,
    killed_at: BTreeMap<String, DateTime<Utc>>,
    created: u64,
    killed: u64,
    crashed: u64,
    kill_reasons: BTreeMap<String, u64>,
    paused: u64,
    resumed: u64,
    creates_by_hour: [u64; 24],
}

impl Tally {
    fn add(&mut self, e: &LifecycleEvent) {
        self.events += 1;
        match e.event_type {
            EventType::Created => {
                self.created += 1;
                self.creates_by_hour[e.timestamp.hour() as usize] += 1;
                self.created_at.insert(e.sandbox_id.clone(), e.timestamp);
            }
            EventType::Killed => {
                let reason = e.kill_reason().unwrap_or(NO_REASON);
                self.killed += 1;
                if is_crash(reason) {
                    self.crashed += 1;
                }
                *self.kill_reasons.entry(reason.to_string()).or_default() += 1;
                self.killed_at.insert(e.sandbox_id.clone(), e.timestamp);
            }
            EventType::Paused => self.paused += 1,
            EventType::Resumed => self.resumed += 1,
            _ => {}
        }
    }

    fn into_group(self, template: String, pool: String, hours: f64) -> Group {
        let lifetimes = self.lifetimes();
        Group {
            template,
            pool,
            created: self.created,
            killed: self.killed,
            lifetime_seconds: percentiles(lifetimes),
            crash_rate: (self.killed > 0).then(|| self.crashed as f64 / self.killed as f64),
            kill_reasons: self.kill_reasons,
            paused: self.paused,
            resumed: self.resumed,
            creates_per_hour: self.created as f64 / hours,
            busiest_hours_utc: busiest(&self.creates_by_hour),
        }
    }

    /// Seconds from created to killed of the sandboxes with both in the window.
    fn lifetimes(&self) -> Vec<f64> {
        self.created_at
            .iter()
            .filter_map(|(id, created)| {
                let killed = self.killed_at.get(id)?;
                Some(((*killed - *created).num_milliseconds().max(0) as f64) / 1000.0)
            })
            .collect()
    }
}

/// Whether a killed event is a crash by the report's rule: a reason other than a request or
/// the timeout (an event without a reason is not counted as one).
pub(crate) fn crashed(e: &LifecycleEvent) -> bool {
    is_crash(e.kill_reason().unwrap_or(NO_REASON))
}

/// A kill the sandbox's owner did not ask for and that is not its timeout.
fn is_crash(reason: &str) -> bool {
    ![kill_reason::REQUEST, kill_reason::TIMEOUT, NO_REASON].contains(&reason)
}

/// p50, p90 and p99 by nearest rank.
fn percentiles(mut values: Vec<f64>) -> Lifetimes {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| -> Option<f64> {
        let n = values.len();
        let i = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        values.get(i).copied()
    };
    Lifetimes {
        count: values.len(),
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
    }
}

/// The hours with the most creates, most first, earlier first on a tie; hours with none
/// are left out.
fn busiest(by_hour: &[u64; 24]) -> Vec<HourCount> {
    let mut hours: Vec<HourCount> = (0u32..24)
        .zip(by_hour.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(hour, n)| HourCount { hour, creates: *n })
        .collect();
    hours.sort_by(|a, b| b.creates.cmp(&a.creates).then(a.hour.cmp(&b.hour)));
    hours.truncate(BUSIEST);
    hours
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2b::{EventData, Metadata};

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-08-06T10:00:00Z")
            .expect("a date")
            .with_timezone(&Utc)
            + chrono::Duration::minutes(min)
    }

    /// An event of `sandbox` (template `base`) at minute `min`; `pool` None is unowned.
    fn event(
        id: &str,
        sandbox: &str,
        ty: EventType,
        min: i64,
        pool: Option<&str>,
        reason: Option<&str>,
    ) -> LifecycleEvent {
        let metadata = pool.map(|p| Metadata::from([(POOL_KEY.to_string(), p.to_string())]));
        LifecycleEvent {
            id: id.into(),
            version: None,
            event_type: ty,
            timestamp: at(min),
            event_data: Some(EventData {
                sandbox_metadata: metadata,
                kill_reason: reason.map(str::to_string),
                ..EventData::default()
            }),
            sandbox_id: sandbox.into(),
            sandbox_build_id: None,
            sandbox_execution_id: None,
            sandbox_template_id: Some("base".into()),
            sandbox_team_id: None,
            extra: Default::default(),
        }
    }

    fn window(pool: Option<&str>) -> Window {
        Window {
            since: at(0),
            until: at(120),
            pool: pool.map(str::to_string),
        }
    }

    /// Ten sandboxes of pool `w` living 1..=10 minutes, the last two crashed.
    fn ten_lives() -> Vec<LifecycleEvent> {
        let mut events = Vec::new();
        for i in 1..=10 {
            let sbx = format!("s{i}");
            let reason = if i > 8 { "unknown" } else { "request" };
            events.push(event(
                &format!("c{i}"),
                &sbx,
                EventType::Created,
                0,
                Some("w"),
                None,
            ));
            events.push(event(
                &format!("k{i}"),
                &sbx,
                EventType::Killed,
                i,
                Some("w"),
                Some(reason),
            ));
        }
        events
    }

    #[test]
    fn percentiles_by_nearest_rank_and_crash_rate() {
        let r = build(&ten_lives(), &window(None));
        assert_eq!(r.groups.len(), 1);
        let g = &r.groups[0];
        assert_eq!((g.created, g.killed), (10, 10));
        assert_eq!(g.lifetime_seconds.count, 10);
        assert_eq!(g.lifetime_seconds.p50, Some(300.0));
        assert_eq!(g.lifetime_seconds.p90, Some(540.0));
        assert_eq!(g.lifetime_seconds.p99, Some(600.0));
        assert_eq!(g.crash_rate, Some(0.2));
        assert_eq!(
            g.kill_reasons,
            BTreeMap::from([("request".into(), 8), ("unknown".into(), 2)])
        );
        assert_eq!(g.creates_per_hour, 5.0);
        assert_eq!(
            g.busiest_hours_utc,
            vec![HourCount {
                hour: 10,
                creates: 10
            }]
        );
    }

    #[test]
    fn timeouts_and_missing_reasons_are_not_crashes() {
        let events = vec![
            event("k1", "a", EventType::Killed, 5, None, Some("timeout")),
            event("k2", "b", EventType::Killed, 5, None, None),
            event("k3", "c", EventType::Killed, 5, None, Some("admin")),
            event("k4", "d", EventType::Killed, 5, None, Some("request")),
        ];
        let g = &build(&events, &window(None)).groups[0];
        assert_eq!(g.crash_rate, Some(0.25));
        assert_eq!(g.kill_reasons.get("none"), Some(&1));
    }

    #[test]
    fn unowned_sandboxes_are_pool_dash_and_the_pool_filter_keeps_one() {
        let mut events = ten_lives();
        events.push(event("u1", "free", EventType::Created, 3, None, None));
        events.push(event("u2", "free", EventType::Paused, 4, None, None));
        events.push(event("u3", "free", EventType::Resumed, 5, None, None));
        let all = build(&events, &window(None));
        let pools: Vec<&str> = all.groups.iter().map(|g| g.pool.as_str()).collect();
        assert_eq!(pools, ["-", "w"]);
        assert_eq!((all.groups[0].paused, all.groups[0].resumed), (1, 1));
        assert_eq!(all.groups[0].crash_rate, None);
        assert_eq!(all.events, 23);
        let only = build(&events, &window(Some("-")));
        assert_eq!((only.groups.len(), only.events), (1, 3));
    }

    #[test]
    fn a_sandbox_created_before_the_window_has_no_lifetime_but_counts_its_kill() {
        let events = vec![
            event("c1", "old", EventType::Created, -30, Some("w"), None),
            // A killed event without metadata still counts in the pool its other events name.
            event("p1", "old", EventType::Paused, 1, Some("w"), None),
            event("k1", "old", EventType::Killed, 10, None, Some("request")),
        ];
        let r = build(&events, &window(None));
        assert_eq!(r.groups.len(), 1);
        let g = &r.groups[0];
        assert_eq!((g.pool.as_str(), g.created, g.killed), ("w", 0, 1));
        assert_eq!(g.lifetime_seconds.count, 0);
        assert_eq!(g.lifetime_seconds.p50, None);
        assert!(g.busiest_hours_utc.is_empty());
    }

    #[test]
    fn duplicates_count_once_and_busiest_hours_break_ties_by_hour() {
        let mut events = vec![
            event("c1", "a", EventType::Created, 65, None, None),
            event("c1", "a", EventType::Created, 65, None, None),
            event("c2", "b", EventType::Created, 5, None, None),
            event("c3", "c", EventType::Created, 6, None, None),
            event("c4", "d", EventType::Created, 70, None, None),
        ];
        events.push(event("c5", "e", EventType::Created, 119, None, None));
        let g = &build(&events, &window(None)).groups[0];
        assert_eq!(g.created, 5);
        let hours: Vec<(u32, u64)> = g
            .busiest_hours_utc
            .iter()
            .map(|h| (h.hour, h.creates))
            .collect();
        assert_eq!(hours, [(11, 3), (10, 2)]);
    }

    #[test]
    fn no_events_make_an_empty_report_without_nan() {
        let r = build(&[], &window(None));
        assert_eq!((r.events, r.groups.len()), (0, 0));
        let text = serde_json::to_string(&r).expect("serializes");
        assert!(!text.contains("NaN"), "{text}");
        let g = Tally::default().into_group("t".into(), "-".into(), window_hours(&window(None)));
        let text = serde_json::to_string(&g).expect("serializes");
        assert!(
            !text.contains("NaN") && text.contains("\"crash_rate\":null"),
            "{text}"
        );
        assert_eq!(g.creates_per_hour, 0.0);
    }
}
