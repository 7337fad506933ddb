//! Rule unit tests (`poolpilot test`), in the spirit of `promtool test rules`: input series and
//! events over virtual time, expected decisions and alert states at given times, and a readable
//! diff on failure. The format is documented in docs/rules.md.
//!
//! ```yaml
//! rule_files: [../guide-pool.yaml]
//! tests:
//!   - name: adds one when most sandboxes are busy
//!     interval: 15s
//!     pools: { workers: 4 }
//!     cpu:
//!       workers/*: "90x10"      # every member without a series of its own
//!       workers/3: "10x10"
//!     events:
//!       - { at: 30s, type: killed, sandbox: workers/1, kill_reason: unknown }
//!     expect:
//!       - { at: 0s, decisions: ["workers +1"] }
//!       - { at: 1m, size: { workers: 5 }, alerts: { high-cpu: firing }, notified: [ops-log] }
//! ```
//!
//! Series notation: values separated by spaces; `a` one sample; `axN` a repeated N+1 times;
//! `a+bxN` / `a-bxN` N+1 samples from a in steps of b; `_` a missing sample, `_xN` N+1 of them.
//! Sample k is the value at step k; past the end a series has no sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Diagnostic, POOL_KEY, RuleSet, load_paths};
use crate::duration::HumanDuration;
use crate::e2b::{EventData, EventType, LifecycleEvent, Metadata, SandboxMetric, SandboxState};
use crate::engine::{
    Action, AlertPhase, AlertStatus, Decision, Engine, Observations, ObservedSandbox,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestFile {
    rule_files: Vec<Spanned<String>>,
    tests: Vec<RawTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: Spanned<String>,
    #[serde(default)]
    interval: Option<HumanDuration>,
    #[serde(default)]
    duration: Option<HumanDuration>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    pools: BTreeMap<String, u32>,
    #[serde(default)]
    cpu: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: HumanDuration,
    #[serde(rename = "type")]
    event_type: Spanned<String>,
    sandbox: Spanned<String>,
    #[serde(default)]
    kill_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    at: Spanned<HumanDuration>,
    #[serde(default)]
    decisions: Option<Vec<String>>,
    #[serde(default)]
    size: BTreeMap<String, u32>,
    #[serde(default)]
    alerts: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    notified: Option<Vec<Spanned<String>>>,
}

/// A parsed series: one optional sample per step.
pub fn parse_series(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        let (head, times) = match tok.split_once('x') {
            Some((h, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("bad repeat count in {tok:?}; expected e.g. 90x10"))?;
                if n > 100_000 {
                    return Err(format!(
                        "repeat count {n} in {tok:?} is too large (at most 100000)"
                    ));
                }
                (h, Some(n))
            }
            None => (tok, None),
        };
        if head == "_" {
            out.extend(std::iter::repeat_n(None, times.unwrap_or(0) + 1));
            continue;
        }
        // a, a+b, a-b (a may itself be negative).
        let split = head
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map(|(i, _)| i);
        let (a, b) = match split {
            Some(i) => (&head[..i], Some(&head[i..])),
            None => (head, None),
        };
        let a: f64 = a.parse().map_err(|_| {
            format!("bad value {a:?} in {tok:?}; expected a number, `_`, `axN` or `a+bxN`")
        })?;
        let b: f64 = match b {
            Some(b) => {
                if times.is_none() {
                    return Err(format!("{tok:?} has a step but no `xN` count"));
                }
                b.parse()
                    .map_err(|_| format!("bad step {b:?} in {tok:?}"))?
            }
            None => 0.0,
        };
        for k in 0..=times.unwrap_or(0) {
            out.push(Some(a + b * k as f64));
        }
    }
    Ok(out)
}

/// One expectation at one time.
#[derive(Debug, Clone)]
struct Expect {
    at: Duration,
    decisions: Option<Vec<String>>,
    size: BTreeMap<String, u32>,
    alerts: BTreeMap<String, String>,
    notified: Option<Vec<String>>,
}

/// One test case, checked and ready to run.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    interval: Duration,
    duration: Duration,
    start: DateTime<Utc>,
    pools: BTreeMap<String, u32>,
    cpu: BTreeMap<String, Vec<Option<f64>>>,
    events: Vec<(Duration, EventType, String, Option<String>)>,
    expect: Vec<Expect>,
}

/// A test file, checked: its rules and cases.
pub struct TestFile {
    pub path: PathBuf,
    pub rules: Arc<RuleSet>,
    pub cases: Vec<TestCase>,
}

fn diag(file: &str, loc: Option<serde_saphyr::Location>, message: String) -> Diagnostic {
    let (line, column) = loc.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// The most engine steps one rule test may run, so a test file cannot run for ages.
const MAX_TEST_STEPS: u128 = 100_000;
/// The most members a rule test's pool may start with.
const MAX_TEST_MEMBERS: u32 = 10_000;

/// Reads and checks a rule test file, loading the rule files it names.
pub fn load_test_file(path: &Path) -> Result<TestFile, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let text = crate::files::read_regular(path, crate::files::MAX_TEXT_FILE)
        .map_err(|e| vec![diag(&file, None, format!("cannot read: {e}"))])?;
    let raw: RawTestFile = serde_saphyr::from_str(&text).map_err(|e| {
        vec![diag(
            &file,
            e.location(),
            super::load::yaml_message(&e, &text),
        )]
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut diags = Vec::new();
    let mut rule_paths = Vec::new();
    for r in &raw.rule_files {
        let p = dir.join(&r.value);
        if p.exists() {
            rule_paths.push(p);
        } else {
            diags.push(diag(
                &file,
                Some(r.referenced),
                format!(
                    "rule file {:?} not found (looked at {})",
                    r.value,
                    p.display()
                ),
            ));
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let rules = Arc::new(load_paths(&rule_paths)?);
    let mut cases = Vec::new();
    for t in &raw.tests {
        let ctx = format!("test {:?}", t.name.value);
        let interval = t.interval.map(|d| d.0).unwrap_or(Duration::from_secs(15));
        if interval < Duration::from_millis(1) || interval > Duration::from_secs(24 * 3600) {
            diags.push(diag(
                &file,
                Some(t.name.referenced),
                format!(
                    "{ctx}: `interval` is {}; it must be from 1ms to 1day",
                    HumanDuration(interval)
                ),
            ));
            continue;
        }
        let start = match &t.start {
            None => DateTime::parse_from_rfc3339("2026-01-07T12:00:00Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default(),
            Some(s) => match DateTime::parse_from_rfc3339(&s.value) {
                Ok(d) if crate::rules::schedule::SCHEDULED_YEARS.contains(&d.year()) => {
                    d.with_timezone(&Utc)
                }
                Ok(_) => {
                    let years = crate::rules::schedule::SCHEDULED_YEARS;
                    diags.push(diag(
                        &file,
                        Some(s.referenced),
                        format!(
                            "{ctx}: `start` {:?} must lie in the years {} to {}",
                            s.value,
                            years.start(),
                            years.end()
                        ),
                    ));
                    continue;
                }
                Err(_) => {
                    diags.push(diag(&file, Some(s.referenced), format!("{ctx}: start {:?} is not an RFC 3339 time such as 2026-01-07T12:00:00Z", s.value)));
                    continue;
                }
            },
        };
        for (p, n) in &t.pools {
            if *n > MAX_TEST_MEMBERS {
                diags.push(diag(
                    &file,
                    Some(t.name.referenced),
                    format!(
                        "{ctx}: pools: {p} starts with {n} members; at most {MAX_TEST_MEMBERS}"
                    ),
                ));
            }
            if rules.pool(p).is_none() {
                diags.push(diag(
                    &file,
                    Some(t.name.referenced),
                    format!("{ctx}: pools: unknown pool {p:?}"),
                ));
            }
        }
        let mut cpu = BTreeMap::new();
        let mut longest = 0usize;
        for (key, s) in &t.cpu {
            let pool = key.split('/').next().unwrap_or("");
            if rules.pool(pool).is_none() || !key.contains('/') {
                diags.push(diag(&file, Some(s.referenced), format!("{ctx}: cpu key {key:?} must be <pool>/<index> or <pool>/* of a defined pool")));
                continue;
            }
            match parse_series(&s.value) {
                Ok(v) => {
                    longest = longest.max(v.len());
                    cpu.insert(key.clone(), v);
                }
                Err(e) => diags.push(diag(
                    &file,
                    Some(s.referenced),
                    format!("{ctx}: cpu {key:?}: {e}"),
                )),
            }
        }
        let mut events = Vec::new();
        for e in &t.events {
            let full = if e.event_type.value.contains('.') {
                e.event_type.value.clone()
            } else {
                format!("sandbox.lifecycle.{}", e.event_type.value)
            };
            let ty = EventType::parse(&full);
            if let EventType::Other(_) = ty {
                diags.push(diag(
                    &file,
                    Some(e.event_type.referenced),
                    format!("{ctx}: unknown event type {:?}", e.event_type.value),
                ));
            }
            if !e.sandbox.value.contains('/') {
                diags.push(diag(
                    &file,
                    Some(e.sandbox.referenced),
                    format!(
                        "{ctx}: sandbox {:?} must be <pool>/<index>",
                        e.sandbox.value
                    ),
                ));
            }
            events.push((e.at.0, ty, e.sandbox.value.clone(), e.kill_reason.clone()));
        }
        let mut expect = Vec::new();
        let mut last_at = Duration::ZERO;
        for x in &t.expect {
            let at = x.at.value.0;
            if at.as_nanos() % interval.as_nanos() != 0 {
                diags.push(diag(
                    &file,
                    Some(x.at.referenced),
                    format!(
                        "{ctx}: expect at {} is not a multiple of the interval {}",
                        x.at.value,
                        HumanDuration(interval)
                    ),
                ));
            }
            for (a, state) in &x.alerts {
                if !rules.alerts.iter().any(|r| &r.name == a)
                    && !rules.triggers.iter().any(|r| &r.name == a)
                {
                    diags.push(diag(
                        &file,
                        Some(state.referenced),
                        format!("{ctx}: unknown alert {a:?}"),
                    ));
                }
                if !matches!(state.value.as_str(), "firing" | "pending" | "inactive") {
                    diags.push(diag(
                        &file,
                        Some(state.referenced),
                        format!(
                            "{ctx}: alert state {:?}; expected firing, pending or inactive",
                            state.value
                        ),
                    ));
                }
            }
            for p in x.size.keys() {
                if rules.pool(p).is_none() {
                    diags.push(diag(
                        &file,
                        Some(x.at.referenced),
                        format!("{ctx}: size: unknown pool {p:?}"),
                    ));
                }
            }
            for n in x.notified.iter().flatten() {
                if !rules.notifiers.iter().any(|r| r.name == n.value) {
                    diags.push(diag(
                        &file,
                        Some(n.referenced),
                        format!("{ctx}: notified: unknown notifier {:?}", n.value),
                    ));
                }
            }
            last_at = last_at.max(at);
            expect.push(Expect {
                at,
                decisions: x.decisions.clone(),
                size: x.size.clone(),
                alerts: x
                    .alerts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect(),
                notified: x
                    .notified
                    .as_ref()
                    .map(|v| v.iter().map(|n| n.value.clone()).collect()),
            });
        }
        if expect.is_empty() {
            diags.push(diag(
                &file,
                Some(t.name.referenced),
                format!("{ctx}: has no `expect`: a test that checks nothing is not a test"),
            ));
        }
        let duration = t.duration.map(|d| d.0).unwrap_or_else(|| {
            let samples = u32::try_from(longest.saturating_sub(1)).unwrap_or(u32::MAX);
            last_at.max(interval.checked_mul(samples).unwrap_or(Duration::MAX))
        });
        let steps = duration.as_nanos() / interval.as_nanos();
        if steps > MAX_TEST_STEPS {
            diags.push(diag(
                &file,
                Some(t.name.referenced),
                format!(
                    "{ctx}: runs {steps} steps ({} / interval {}); at most {MAX_TEST_STEPS}: shorten `duration` or lengthen `interval`",
                    HumanDuration(duration),
                    HumanDuration(interval)
                ),
            ));
            continue;
        }
        cases.push(TestCase {
            name: t.name.value.clone(),
            interval,
            duration,
            start,
            pools: t.pools.clone(),
            cpu,
            events,
            expect,
        });
    }
    if diags.is_empty() {
        Ok(TestFile {
            path: path.to_path_buf(),
            rules,
            cases,
        })
    } else {
        Err(diags)
    }
}

/// The short form of a decision used in expectations, e.g. `workers +1`.
pub fn short_form(d: &Decision) -> String {
    let dry = if d.dry_run { " (dry run)" } else { "" };
    match &d.action {
        Action::Create { pool, count } => format!("{pool} +{count}{dry}"),
        Action::Kill { pool, sandbox_ids } => format!("{pool} -{}{dry}", sandbox_ids.len()),
        Action::SetTimeout {
            pool,
            sandbox_id,
            timeout_s,
        } => format!("{pool} set_timeout {sandbox_id} {timeout_s}s{dry}"),
        Action::Pause { pool, sandbox_id } => format!("{pool} pause {sandbox_id}{dry}"),
        Action::Alert(n) => format!(
            "alert {} {}",
            n.alert,
            match (n.status, n.repeat) {
                (AlertStatus::Firing, false) => "firing",
                (AlertStatus::Firing, true) => "repeat",
                (AlertStatus::Resolved, _) => "resolved",
            }
        ),
    }
}

struct Member {
    id: String,
    pool: String,
    index: usize,
    started_at: DateTime<Utc>,
    paused: bool,
}

/// Runs one case; returns the failure report, if any.
pub fn run_case(rules: &Arc<RuleSet>, case: &TestCase) -> Result<(), String> {
    let mut engine = Engine::new(rules.clone());
    let mut members: Vec<Member> = Vec::new();
    let mut next_index: BTreeMap<String, usize> = BTreeMap::new();
    for (pool, n) in &case.pools {
        for _ in 0..*n {
            let i = next_index.entry(pool.clone()).or_default();
            members.push(Member {
                id: format!("{pool}/{i}"),
                pool: pool.clone(),
                index: *i,
                started_at: case.start - TimeDelta::minutes(10),
                paused: false,
            });
            *i += 1;
        }
    }
    let steps = (case.duration.as_nanos() / case.interval.as_nanos()) as usize;
    let mut failures = String::new();
    for k in 0..=steps {
        let offset = case.interval * k as u32;
        let now = case.start + TimeDelta::from_std(offset).unwrap_or_default();
        // Events of this step: applied to the members, then shown to the engine.
        let mut events = Vec::new();
        for (at, ty, sandbox, reason) in &case.events {
            if *at > offset.saturating_sub(case.interval) && *at <= offset
                || (*at == Duration::ZERO && k == 0)
            {
                let pool = sandbox.split('/').next().unwrap_or("").to_string();
                if *ty == EventType::Killed {
                    members.retain(|m| &m.id != sandbox);
                }
                if *ty == EventType::Paused {
                    members
                        .iter_mut()
                        .filter(|m| &m.id == sandbox)
                        .for_each(|m| m.paused = true);
                }
                let mut meta = Metadata::new();
                meta.insert(POOL_KEY.into(), pool);
                events.push(LifecycleEvent {
                    id: format!("test-{k}-{sandbox}"),
                    version: Some("v2".into()),
                    event_type: ty.clone(),
                    timestamp: now,
                    event_data: Some(EventData {
                        sandbox_metadata: Some(meta),
                        kill_reason: reason.clone(),
                        ..Default::default()
                    }),
                    sandbox_id: sandbox.clone(),
                    sandbox_build_id: None,
                    sandbox_execution_id: None,
                    sandbox_template_id: Some("base".into()),
                    sandbox_team_id: None,
                    extra: Default::default(),
                });
            }
        }
        let observed: Vec<ObservedSandbox> = members
            .iter()
            .map(|m| {
                let series = case
                    .cpu
                    .get(&format!("{}/{}", m.pool, m.index))
                    .or_else(|| case.cpu.get(&format!("{}/*", m.pool)));
                let cpu = series.and_then(|s| s.get(k).copied().flatten());
                let mut metadata = Metadata::new();
                metadata.insert(POOL_KEY.into(), m.pool.clone());
                ObservedSandbox {
                    id: m.id.clone(),
                    template: rules
                        .pool(&m.pool)
                        .map(|p| p.template.clone())
                        .unwrap_or_default(),
                    started_at: m.started_at,
                    end_at: now + TimeDelta::hours(1),
                    state: if m.paused {
                        SandboxState::Paused
                    } else {
                        SandboxState::Running
                    },
                    metadata,
                    metric: cpu.map(|c| SandboxMetric {
                        timestamp: now,
                        timestamp_unix: now.timestamp(),
                        cpu_count: 2,
                        cpu_used_pct: c,
                        mem_used: 256 << 20,
                        mem_total: 512 << 20,
                        mem_cache: 0,
                        disk_used: 1 << 30,
                        disk_total: 2 << 30,
                    }),
                }
            })
            .collect();
        let pending = BTreeMap::new();
        let decisions = engine.step(
            now,
            &Observations {
                sandboxes: &observed,
                events: &events,
                pending_creates: &pending,
            },
        );
        for d in &decisions {
            if d.dry_run {
                continue;
            }
            match &d.action {
                Action::Create { pool, count } => {
                    for _ in 0..*count {
                        let i = next_index.entry(pool.clone()).or_default();
                        members.push(Member {
                            id: format!("{pool}/{i}"),
                            pool: pool.clone(),
                            index: *i,
                            started_at: now,
                            paused: false,
                        });
                        *i += 1;
                    }
                }
                Action::Kill { sandbox_ids, .. } => {
                    members.retain(|m| !sandbox_ids.contains(&m.id))
                }
                Action::Pause { sandbox_id, .. } => members
                    .iter_mut()
                    .filter(|m| &m.id == sandbox_id)
                    .for_each(|m| m.paused = true),
                Action::SetTimeout { .. } | Action::Alert(_) => {}
            }
        }
        for x in case.expect.iter().filter(|x| x.at == offset) {
            let mut diff = String::new();
            if let Some(want) = &x.decisions {
                let mut got: Vec<String> = decisions.iter().map(short_form).collect();
                let mut want = want.clone();
                got.sort();
                want.sort();
                if got != want {
                    let _ = writeln!(diff, "    decisions: expected {want:?}, got {got:?}");
                    for d in &decisions {
                        let _ = writeln!(diff, "      {}", d.cause.summary);
                    }
                }
            }
            for (pool, want) in &x.size {
                let got = members
                    .iter()
                    .filter(|m| &m.pool == pool && !m.paused)
                    .count() as u32;
                if got != *want {
                    let _ = writeln!(diff, "    size {pool}: expected {want}, got {got}");
                }
            }
            if let Some(want) = &x.notified {
                let mut got: Vec<String> = decisions
                    .iter()
                    .filter_map(|d| match &d.action {
                        Action::Alert(n) => Some(n.notify.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                got.sort();
                got.dedup();
                let mut want = want.clone();
                want.sort();
                want.dedup();
                if got != want {
                    let _ = writeln!(diff, "    notified: expected {want:?}, got {got:?}");
                }
            }
            for (alert, want) in &x.alerts {
                let states = engine.state().alerts.get(alert);
                let got = match states {
                    Some(s) if s.values().any(|a| a.phase == AlertPhase::Firing) => "firing",
                    Some(s) if !s.is_empty() => "pending",
                    _ => "inactive",
                };
                if got != want {
                    let _ = writeln!(diff, "    alert {alert}: expected {want}, got {got}");
                }
            }
            if !diff.is_empty() {
                let _ = writeln!(failures, "  at {}:", HumanDuration(offset));
                failures.push_str(&diff);
                for (pool, st) in &engine.state().pools {
                    if let Some(s) = &st.status {
                        let _ =
                            writeln!(failures, "    (last evaluation of {pool}: {})", s.summary);
                    }
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation() {
        assert_eq!(
            parse_series("1 2 3").unwrap(),
            vec![Some(1.0), Some(2.0), Some(3.0)]
        );
        assert_eq!(parse_series("90x2").unwrap(), vec![Some(90.0); 3]);
        assert_eq!(
            parse_series("10+5x2 _ _x1").unwrap(),
            vec![Some(10.0), Some(15.0), Some(20.0), None, None, None]
        );
        assert_eq!(
            parse_series("-1-1x2").unwrap(),
            vec![Some(-1.0), Some(-2.0), Some(-3.0)]
        );
        assert!(
            parse_series("abc")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_series("1+2").unwrap_err().contains("no `xN`"));
        assert!(parse_series("1x999999999").is_err());
    }

    #[test]
    fn runaway_tests_are_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("poolpilot-ruletest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("r.yaml"), "pools: [{ name: p, min: 0, max: 1 }]\n").unwrap();
        let case = |extra: &str| {
            let f = dir.join("t.test.yaml");
            std::fs::write(
                &f,
                format!("rule_files: [r.yaml]\ntests:\n  - name: t\n    {extra}\n    expect: [{{ at: 0s, size: {{ p: 0 }} }}]\n"),
            )
            .unwrap();
            load_test_file(&f)
                .err()
                .map(|d| {
                    d.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        };
        assert!(case("duration: 300000years").contains("at most 100000"));
        assert!(case("interval: 300000years").contains("`interval` is 300000years"));
        assert!(case("start: \"9999-12-31T23:00:00Z\"").contains("must lie in the years"));
        assert!(case("pools: { p: 4000000000 }").contains("at most 10000"));
        assert_eq!(case("duration: 1m"), "");
        std::fs::remove_dir_all(&dir).ok();
    }
}
