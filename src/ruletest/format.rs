//! The rule test file format: YAML (serde-saphyr: duplicate keys rejected, positions kept) into
//! raw structs, then checked into a [`TestFile`] against the rules it names.
//!
//! Checking collects every problem as `file:line:col: test "name": message`, never stops at the
//! first, and never panics on any input. It also bounds what a test may ask for (steps,
//! members), so that no test file can make `poolpilot test` run for ages.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::series::parse_series;
use super::{Expect, InputEvent, TestCase, TestFile};
use crate::duration::HumanDuration;
use crate::e2b::EventType;
use crate::rules::schedule::SCHEDULED_YEARS;
use crate::rules::{Diagnostic, RuleSet, load_paths, yaml_message};

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

/// The most engine steps one rule test may run, so a test file cannot run for ages.
const MAX_TEST_STEPS: u128 = 100_000;
/// The most members a rule test's pool may start with.
const MAX_TEST_MEMBERS: u32 = 10_000;
/// The step of a test without `interval`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The virtual start time of a test without `start`.
const DEFAULT_START: &str = "2026-01-07T12:00:00Z";

/// Reads and checks a rule test file, loading the rule files it names.
pub(crate) fn load_test_file(path: &Path) -> Result<TestFile, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let raw = read_raw(path, &file)?;
    let rules = load_rule_files(path, &file, &raw.rule_files)?;
    let mut diags = Vec::new();
    let mut cases = Vec::new();
    for t in &raw.tests {
        let mut checker = CaseChecker {
            file: &file,
            ctx: format!("test {:?}", t.name.value),
            rules: &rules,
            diags: &mut diags,
        };
        cases.extend(checker.check(t));
    }
    if diags.is_empty() {
        Ok(TestFile { rules, cases })
    } else {
        Err(diags)
    }
}

/// The file's text parsed into raw structs; a read or YAML error is the only diagnostic.
fn read_raw(path: &Path, file: &str) -> Result<RawTestFile, Vec<Diagnostic>> {
    let text = crate::files::read_regular(path, crate::files::MAX_TEXT_FILE)
        .map_err(|e| vec![Diagnostic::at(file, None, format!("cannot read: {e}"))])?;
    serde_saphyr::from_str(&text)
        .map_err(|e| vec![Diagnostic::at(file, e.location(), yaml_message(&e, &text))])
}

/// The rule files named (relative to the test file's folder), loaded into one set. Every
/// missing file is reported before any is loaded.
fn load_rule_files(
    path: &Path,
    file: &str,
    names: &[Spanned<String>],
) -> Result<Arc<RuleSet>, Vec<Diagnostic>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut diags = Vec::new();
    let mut rule_paths = Vec::new();
    for r in names {
        let p = dir.join(&r.value);
        if p.exists() {
            rule_paths.push(p);
        } else {
            diags.push(Diagnostic::at(
                file,
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
    Ok(Arc::new(load_paths(&rule_paths)?))
}

/// Checks one test against the loaded rules, adding its problems to `diags`.
struct CaseChecker<'a> {
    file: &'a str,
    /// `test "name"`, the start of every message.
    ctx: String,
    rules: &'a RuleSet,
    diags: &'a mut Vec<Diagnostic>,
}

impl CaseChecker<'_> {
    fn at(&mut self, loc: Location, message: String) {
        self.diags
            .push(Diagnostic::at(self.file, Some(loc), message));
    }

    /// The case, or `None` when it cannot run. A bad interval or start stops the checks of
    /// this test there (the rest would only repeat it); other problems are all reported.
    fn check(&mut self, t: &RawTest) -> Option<TestCase> {
        let interval = self.interval(t)?;
        let start = self.start(t)?;
        self.check_pools(t);
        let (cpu, longest) = self.cpu(t);
        let events = self.events(t);
        let (expect, last_at) = self.expectations(t, interval);
        if expect.is_empty() {
            let ctx = &self.ctx;
            let message =
                format!("{ctx}: has no `expect`: a test that checks nothing is not a test");
            self.at(t.name.referenced, message);
        }
        let duration = t.duration.map(|d| d.0).unwrap_or_else(|| {
            let samples = u32::try_from(longest.saturating_sub(1)).unwrap_or(u32::MAX);
            last_at.max(interval.checked_mul(samples).unwrap_or(Duration::MAX))
        });
        self.check_steps(t, interval, duration)?;
        Some(TestCase {
            name: t.name.value.clone(),
            interval,
            duration,
            start,
            pools: t.pools.clone(),
            cpu,
            events,
            expect,
        })
    }

    fn interval(&mut self, t: &RawTest) -> Option<Duration> {
        let interval = t.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL);
        if interval < Duration::from_millis(1) || interval > Duration::from_secs(24 * 3600) {
            let message = format!(
                "{}: `interval` is {}; it must be from 1ms to 1day",
                self.ctx,
                HumanDuration(interval)
            );
            self.at(t.name.referenced, message);
            return None;
        }
        Some(interval)
    }

    /// `start`, which must lie in the years schedules can be evaluated in.
    fn start(&mut self, t: &RawTest) -> Option<DateTime<Utc>> {
        let Some(s) = &t.start else {
            return Some(
                DateTime::parse_from_rfc3339(DEFAULT_START)
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or_default(),
            );
        };
        let ctx = &self.ctx;
        let message = match DateTime::parse_from_rfc3339(&s.value) {
            Ok(d) if SCHEDULED_YEARS.contains(&d.year()) => return Some(d.with_timezone(&Utc)),
            Ok(_) => format!(
                "{ctx}: `start` {:?} must lie in the years {} to {}",
                s.value,
                SCHEDULED_YEARS.start(),
                SCHEDULED_YEARS.end()
            ),
            Err(_) => format!(
                "{ctx}: start {:?} is not an RFC 3339 time such as 2026-01-07T12:00:00Z",
                s.value
            ),
        };
        self.at(s.referenced, message);
        None
    }

    /// `pools`: defined pools, each starting with a bounded number of members.
    fn check_pools(&mut self, t: &RawTest) {
        let ctx = self.ctx.clone();
        for (p, n) in &t.pools {
            if *n > MAX_TEST_MEMBERS {
                self.at(
                    t.name.referenced,
                    format!(
                        "{ctx}: pools: {p} starts with {n} members; at most {MAX_TEST_MEMBERS}"
                    ),
                );
            }
            if self.rules.pool(p).is_none() {
                self.at(
                    t.name.referenced,
                    format!("{ctx}: pools: unknown pool {p:?}"),
                );
            }
        }
    }

    /// The CPU series by key, and the longest one's length.
    fn cpu(&mut self, t: &RawTest) -> (BTreeMap<String, Vec<Option<f64>>>, usize) {
        let ctx = self.ctx.clone();
        let mut cpu = BTreeMap::new();
        let mut longest = 0usize;
        for (key, s) in &t.cpu {
            let pool = key.split('/').next().unwrap_or("");
            if self.rules.pool(pool).is_none() || !key.contains('/') {
                self.at(s.referenced, format!("{ctx}: cpu key {key:?} must be <pool>/<index> or <pool>/* of a defined pool"));
                continue;
            }
            match parse_series(&s.value) {
                Ok(v) => {
                    longest = longest.max(v.len());
                    cpu.insert(key.clone(), v);
                }
                Err(e) => self.at(s.referenced, format!("{ctx}: cpu {key:?}: {e}")),
            }
        }
        (cpu, longest)
    }

    /// The input events; `type` may drop the `sandbox.lifecycle.` prefix.
    fn events(&mut self, t: &RawTest) -> Vec<InputEvent> {
        let ctx = self.ctx.clone();
        let mut events = Vec::new();
        for e in &t.events {
            let full = if e.event_type.value.contains('.') {
                e.event_type.value.clone()
            } else {
                format!("sandbox.lifecycle.{}", e.event_type.value)
            };
            let event_type = EventType::parse(&full);
            if let EventType::Other(_) = event_type {
                let message = format!("{ctx}: unknown event type {:?}", e.event_type.value);
                self.at(e.event_type.referenced, message);
            }
            if !e.sandbox.value.contains('/') {
                let message = format!(
                    "{ctx}: sandbox {:?} must be <pool>/<index>",
                    e.sandbox.value
                );
                self.at(e.sandbox.referenced, message);
            }
            events.push(InputEvent {
                at: e.at.0,
                event_type,
                sandbox: e.sandbox.value.clone(),
                kill_reason: e.kill_reason.clone(),
            });
        }
        events
    }

    /// The expectations, and the latest time one names.
    fn expectations(&mut self, t: &RawTest, interval: Duration) -> (Vec<Expect>, Duration) {
        let mut expect = Vec::new();
        let mut last_at = Duration::ZERO;
        for x in &t.expect {
            let at = x.at.value.0;
            if at.as_nanos() % interval.as_nanos() != 0 {
                let message = format!(
                    "{}: expect at {} is not a multiple of the interval {}",
                    self.ctx,
                    x.at.value,
                    HumanDuration(interval)
                );
                self.at(x.at.referenced, message);
            }
            self.check_names(x);
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
        (expect, last_at)
    }

    /// The alerts, pools and notifiers one expectation names exist, with valid alert states.
    fn check_names(&mut self, x: &RawExpect) {
        let ctx = self.ctx.clone();
        let rules = self.rules;
        for (a, state) in &x.alerts {
            if !rules.alerts.iter().any(|r| &r.name == a)
                && !rules.triggers.iter().any(|r| &r.name == a)
            {
                self.at(state.referenced, format!("{ctx}: unknown alert {a:?}"));
            }
            if !matches!(state.value.as_str(), "firing" | "pending" | "inactive") {
                self.at(
                    state.referenced,
                    format!(
                        "{ctx}: alert state {:?}; expected firing, pending or inactive",
                        state.value
                    ),
                );
            }
        }
        for p in x.size.keys() {
            if rules.pool(p).is_none() {
                self.at(x.at.referenced, format!("{ctx}: size: unknown pool {p:?}"));
            }
        }
        for n in x.notified.iter().flatten() {
            if !rules.notifiers.iter().any(|r| r.name == n.value) {
                let message = format!("{ctx}: notified: unknown notifier {:?}", n.value);
                self.at(n.referenced, message);
            }
        }
    }

    /// `None` when the test would run more than [`MAX_TEST_STEPS`] steps.
    fn check_steps(&mut self, t: &RawTest, interval: Duration, duration: Duration) -> Option<()> {
        let steps = duration.as_nanos() / interval.as_nanos();
        if steps > MAX_TEST_STEPS {
            let message = format!(
                "{}: runs {steps} steps ({} / interval {}); at most {MAX_TEST_STEPS}: shorten `duration` or lengthen `interval`",
                self.ctx,
                HumanDuration(duration),
                HumanDuration(interval)
            );
            self.at(t.name.referenced, message);
            return None;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
