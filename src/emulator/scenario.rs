//! Scenario files: templates, demand over time, initial sandboxes and scheduled faults for the
//! emulator's load model. The format is documented in docs/emulator.md.
//!
//! ```yaml
//! duration: 30m
//! seed: 42
//! templates:
//!   base: { cpu_count: 2, memory_mb: 512, disk_mb: 2048, boot: 1s }
//! load:
//!   - template: base
//!     points: [[0s, 1.0], [5m, 1.0], [6m, 12.0], [15m, 12.0], [16m, 2.0]]
//!     noise: 0.05
//! faults:
//!   - { at: 10m, kill: 1, template: base }
//! ```
//!
//! Parsing never panics on any input; every problem is reported with the file, and the line
//! and column where the YAML parser knows them.

use std::collections::BTreeMap;
use std::path::Path;

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::core::MAX_TIMEOUT_SECS;
use super::limits;
use crate::duration::HumanDuration;
use crate::e2b::Metadata;

/// E2B's default template.
pub(crate) const DEFAULT_TEMPLATE: &str = "base";

/// A whole scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How long the scenario runs; `simulate` and `--exit-at-end` stop there.
    #[serde(default, deserialize_with = "some_span")]
    pub duration: Option<HumanDuration>,
    /// Seed of every random draw (noise, ids, fault victims): same seed, same run.
    #[serde(default)]
    pub seed: u64,
    /// Templates the emulator knows besides `base` (which it always knows).
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    /// Demand per template over time, in busy cores.
    #[serde(default)]
    pub load: Vec<LoadSpec>,
    /// Sandboxes that exist when the scenario starts.
    #[serde(default)]
    pub initial: Vec<InitialSpec>,
    /// Things that go wrong at given times.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Applications claiming pool members (for `simulate` and the demo; the emulator itself
    /// plays E2B and has no claims to make).
    #[serde(default)]
    pub jobs: Vec<JobsSpec>,
}

/// Jobs that arrive, claim a member of `pool`, hold it, and release it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSpec {
    pub pool: String,
    /// `[time since start, arrivals per second]` pairs, times strictly increasing; the rate
    /// is linear between them (a Poisson process, seeded by the scenario's seed).
    #[serde(deserialize_with = "points")]
    pub points: Vec<(HumanDuration, f64)>,
    /// How long a job holds its member on average (exponentially distributed).
    pub hold: HumanDuration,
    /// How long a claim waits for a member before it gives up (the claim's `?wait=`).
    #[serde(default = "default_job_wait")]
    pub wait: HumanDuration,
}

fn default_job_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

/// The most arrivals per second a jobs curve may ask for.
pub const MAX_JOB_RATE: f64 = 1000.0;

/// Size and boot time of a template's sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    #[serde(default = "default_cpu", deserialize_with = "cpu_count")]
    pub cpu_count: u32,
    #[serde(default = "default_memory", deserialize_with = "memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "default_disk", deserialize_with = "disk_mb")]
    pub disk_mb: u32,
    /// Time from create until the sandbox takes its share of the demand.
    #[serde(default = "default_boot", deserialize_with = "boot")]
    pub boot: HumanDuration,
    /// Another name that finds this template (E2B templates have an ID and an alias).
    #[serde(default)]
    pub alias: Option<String>,
}

fn default_cpu() -> u32 {
    2
}
fn default_memory() -> u32 {
    512
}
fn default_disk() -> u32 {
    2048
}
fn default_boot() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

impl Default for TemplateSpec {
    /// E2B's `base`: 2 vCPU, 512 MiB.
    fn default() -> Self {
        TemplateSpec {
            cpu_count: default_cpu(),
            memory_mb: default_memory(),
            disk_mb: default_disk(),
            boot: default_boot(),
            alias: None,
        }
    }
}

/// Demand of one template: busy cores over time, piecewise linear between points, flat
/// before the first and after the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    pub template: String,
    /// `[time since start, busy cores]` pairs, times strictly increasing.
    #[serde(deserialize_with = "points")]
    pub points: Vec<(HumanDuration, f64)>,
    /// Relative noise on each CPU sample, 0 to 1 (0.05 = within ±5 %).
    #[serde(default)]
    pub noise: f64,
}

/// Sandboxes present at the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialSpec {
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(deserialize_with = "initial_count")]
    pub count: u32,
    #[serde(default)]
    pub metadata: Metadata,
    /// Their timeout; long by default so that they outlive the scenario. At most E2B's 24 h.
    #[serde(
        default = "default_initial_timeout",
        deserialize_with = "sandbox_timeout"
    )]
    pub timeout: HumanDuration,
}

fn default_template() -> String {
    DEFAULT_TEMPLATE.to_string()
}
fn default_initial_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(24 * 3600))
}

/// A fault: kill sandboxes, or make the API fail for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Time since start.
    #[serde(deserialize_with = "at")]
    pub at: HumanDuration,
    /// Kill this many running sandboxes of `template`, chosen by the seeded random draw.
    #[serde(default, deserialize_with = "some_kill")]
    pub kill: Option<u32>,
    #[serde(default)]
    pub template: Option<String>,
    /// `kill_reason` of the killed events; `unknown` by default, as for a crash.
    #[serde(default)]
    pub reason: Option<String>,
    /// Make API requests fail.
    #[serde(default)]
    pub api_error: Option<ApiErrorSpec>,
}

/// API requests answered with an error status for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiErrorSpec {
    /// 429, 500, 502, 503, 504...
    pub status: u16,
    /// How long the fault lasts.
    #[serde(rename = "for", deserialize_with = "fault_for")]
    pub duration: HumanDuration,
    /// Only requests whose path starts with this, e.g. `/v2/sandboxes`; all when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Retry-After seconds sent with a 429 or 503; 1 by default for 429.
    #[serde(default, deserialize_with = "some_retry_after")]
    pub retry_after: Option<u64>,
}

// Bounds checked while parsing, so that an error carries the line and column of the value
// and names its field (see emulator::limits for the ranges and why).

/// A duration field within `min..=max`.
fn duration_in<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
    min: Duration,
    max: Duration,
) -> Result<HumanDuration, D::Error> {
    let text = String::deserialize(d)?;
    let v: HumanDuration = text
        .parse()
        .map_err(|e| D::Error::custom(format!("{field}: {e}")))?;
    limits::duration(field, v.0, min, max)
        .map(HumanDuration)
        .map_err(D::Error::custom)
}

/// An integer field within `min..=max`.
fn integer_in<'de, D, T>(d: D, field: &str, min: T, max: T) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + std::fmt::Display + Copy,
{
    let v = T::deserialize(d)?;
    limits::integer(field, v, min, max).map_err(D::Error::custom)
}

fn some_span<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    duration_in(d, "duration", Duration::ZERO, limits::MAX_SPAN).map(Some)
}
fn boot<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    duration_in(d, "boot", Duration::ZERO, limits::MAX_SPAN)
}
fn at<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    duration_in(d, "at", Duration::ZERO, limits::MAX_SPAN)
}
fn fault_for<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    duration_in(d, "for", Duration::ZERO, limits::MAX_SPAN)
}
fn sandbox_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
    let max = Duration::from_secs(MAX_TIMEOUT_SECS);
    duration_in(d, "timeout", Duration::ZERO, max)
}
fn cpu_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer_in(d, "cpu_count", 1, limits::MAX_CPU_COUNT)
}
fn memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer_in(d, "memory_mb", limits::MIN_MEMORY_MB, limits::MAX_MEMORY_MB)
}
fn disk_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    integer_in(d, "disk_mb", 1, limits::MAX_DISK_MB)
}
fn initial_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let max = u32::try_from(limits::MAX_INITIAL_SANDBOXES).unwrap_or(u32::MAX);
    integer_in(d, "count", 0, max)
}
fn some_kill<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    integer_in(d, "kill", 1, limits::MAX_FAULT_KILLS).map(Some)
}
fn some_retry_after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    integer_in(d, "retry_after", 0, limits::MAX_RETRY_AFTER_SECS).map(Some)
}

/// A load curve's `[time, cores]` pair, each bounded where it is written.
struct Point(HumanDuration, f64);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, cores) = <(PointTime, PointCores)>::deserialize(d)?;
        Ok(Point(t.0, cores.0))
    }
}

struct PointTime(HumanDuration);

impl<'de> Deserialize<'de> for PointTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration_in(d, "points time", Duration::ZERO, limits::MAX_SPAN).map(PointTime)
    }
}

struct PointCores(f64);

impl<'de> Deserialize<'de> for PointCores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        limits::number("points cores", v, 0.0, limits::MAX_DEMAND_CORES, false)
            .map(PointCores)
            .map_err(D::Error::custom)
    }
}

fn points<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(HumanDuration, f64)>, D::Error> {
    let points = Vec::<Point>::deserialize(d)?;
    Ok(points.into_iter().map(|p| (p.0, p.1)).collect())
}

/// A scenario file that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the problem is not tied to a place in the file.
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = crate::files::read_regular(path, crate::files::MAX_TEXT_FILE).map_err(|e| {
            ScenarioError {
                file: file.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }
        })?;
        Scenario::parse(&file, &text)
    }

    /// Parses and checks scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ScenarioError {
                file: file.to_string(),
                line,
                column,
                message: without_position(&first_line(&e.to_string())).to_string(),
            }
        })?;
        scenario.validate().map_err(|message| ScenarioError {
            file: file.to_string(),
            line: 0,
            column: 0,
            message,
        })?;
        Ok(scenario)
    }

    /// The templates the emulator knows: `base` plus the scenario's own.
    pub(crate) fn all_templates(&self) -> BTreeMap<String, TemplateSpec> {
        let mut t = BTreeMap::new();
        t.insert(DEFAULT_TEMPLATE.to_string(), TemplateSpec::default());
        t.extend(self.templates.clone());
        t
    }

    /// The checks the parser cannot make, in order: templates, load curves, initial
    /// sandboxes, faults. The first problem is the error.
    fn validate(&self) -> Result<(), String> {
        let templates = self.all_templates();
        self.check_templates()?;
        self.check_load(&templates)?;
        self.check_initial(&templates)?;
        self.check_faults(&templates)?;
        self.check_jobs()
    }

    /// Each jobs curve: a pool name, points in increasing time with rates from 0 to
    /// [`MAX_JOB_RATE`], a hold from 1 s to 24 h and a wait of at most 5 minutes.
    fn check_jobs(&self) -> Result<(), String> {
        for (i, j) in self.jobs.iter().enumerate() {
            let at = format!("jobs[{i}]");
            if j.pool.trim().is_empty() {
                return Err(format!("{at}.pool: give the pool the jobs claim from"));
            }
            if j.points.is_empty() {
                return Err(format!(
                    "{at}.points: needs at least one [time, arrivals per second] pair"
                ));
            }
            if let Some((_, r)) = j
                .points
                .iter()
                .find(|(_, r)| !(0.0..=MAX_JOB_RATE).contains(r))
            {
                return Err(format!(
                    "{at}.points: rate {r} is out of range; expected 0 to {MAX_JOB_RATE} arrivals per second"
                ));
            }
            let hold = j.hold.0.as_secs_f64();
            if !(1.0..=86_400.0).contains(&hold) {
                return Err(format!("{at}.hold: expected 1s to 24h"));
            }
            if j.wait.0 > std::time::Duration::from_secs(300) {
                return Err(format!("{at}.wait: expected at most 5m"));
            }
            check_points(&at, &j.points)?;
        }
        Ok(())
    }

    fn check_templates(&self) -> Result<(), String> {
        for (name, t) in &self.templates {
            if t.cpu_count == 0 {
                return Err(format!("templates.{name}.cpu_count: must be at least 1"));
            }
            if t.memory_mb < 128 {
                return Err(format!(
                    "templates.{name}.memory_mb: must be at least 128 (E2B's minimum)"
                ));
            }
        }
        Ok(())
    }

    /// One curve per known template, each with points in increasing time and noise in 0..=1.
    fn check_load(&self, templates: &BTreeMap<String, TemplateSpec>) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in self.load.iter().enumerate() {
            let at = format!("load[{i}]");
            known_template(templates, &l.template, &at)?;
            if !seen.insert(l.template.as_str()) {
                return Err(format!(
                    "{at}: template {:?} has a load curve already; give one curve per template",
                    l.template
                ));
            }
            if l.points.is_empty() {
                return Err(format!(
                    "{at}.points: needs at least one [time, cores] pair"
                ));
            }
            if !(0.0..=1.0).contains(&l.noise) {
                return Err(format!(
                    "{at}.noise: {} is out of range; expected 0 to 1 (0.05 = ±5 %)",
                    l.noise
                ));
            }
            check_points(&at, &l.points)?;
        }
        Ok(())
    }

    /// Known templates, and no more initial sandboxes in all than the emulator takes.
    fn check_initial(&self, templates: &BTreeMap<String, TemplateSpec>) -> Result<(), String> {
        for (i, s) in self.initial.iter().enumerate() {
            known_template(templates, &s.template, &format!("initial[{i}]"))?;
        }
        let total: u64 = self.initial.iter().map(|s| u64::from(s.count)).sum();
        limits::integer(
            "initial: count in all",
            total,
            0,
            limits::MAX_INITIAL_SANDBOXES,
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Each fault is exactly one of a kill (of a known template) or an API error status.
    fn check_faults(&self, templates: &BTreeMap<String, TemplateSpec>) -> Result<(), String> {
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            match (&f.kill, &f.api_error) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(format!("{at}: give exactly one of `kill` or `api_error`"));
                }
                (Some(n), None) => {
                    if *n == 0 {
                        return Err(format!("{at}.kill: must be at least 1"));
                    }
                    let template = f.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
                    known_template(templates, template, &at)?;
                }
                (None, Some(e)) => {
                    if !(400..=599).contains(&e.status) {
                        return Err(format!(
                            "{at}.api_error.status: {} is not an error status; expected 400 to 599",
                            e.status
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The error for a template the scenario does not define, listing the ones it does.
fn known_template(
    templates: &BTreeMap<String, TemplateSpec>,
    name: &str,
    at: &str,
) -> Result<(), String> {
    if templates.contains_key(name) {
        Ok(())
    } else {
        Err(format!(
            "{at}: unknown template {name:?}; known templates: {}",
            templates.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// A curve's points: finite, non-negative demand at strictly increasing times.
fn check_points(at: &str, points: &[(HumanDuration, f64)]) -> Result<(), String> {
    for (j, (t, v)) in points.iter().enumerate() {
        if !v.is_finite() || *v < 0.0 {
            return Err(format!(
                "{at}.points[{j}]: demand {v} must be a finite number of cores >= 0"
            ));
        }
        if j > 0 && *t <= points[j - 1].0 {
            return Err(format!(
                "{at}.points[{j}]: time {t} is not after the previous point's {}; times must increase",
                points[j - 1].0
            ));
        }
    }
    Ok(())
}

/// The parser's message without its own `error: line N column M: ` prefix, since
/// [`ScenarioError`] shows the position once, as `file:line:column`.
fn without_position(message: &str) -> &str {
    let rest = message.strip_prefix("error: ").unwrap_or(message);
    let Some(after_line) = rest.strip_prefix("line ") else {
        return rest;
    };
    match after_line.split_once(": ") {
        Some((position, text))
            if position
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            text
        }
        _ => rest,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "duration: 30m
seed: 42
templates:
  base: { cpu_count: 2, memory_mb: 512, disk_mb: 2048, boot: 1s }
load:
  - template: base
    points: [[0s, 1.0], [5m, 1.0], [6m, 12.0], [15m, 12.0], [16m, 2.0]]
    noise: 0.05
faults:
  - { at: 10m, kill: 1, template: base }
";

    #[test]
    fn parses_the_issue_example() {
        let s = Scenario::parse("s.yaml", EXAMPLE).unwrap();
        assert_eq!(s.duration.unwrap().0.as_secs(), 1800);
        assert_eq!(s.load[0].points.len(), 5);
        assert_eq!(s.load[0].points[2].0.0.as_secs(), 360);
        assert_eq!(s.faults[0].kill, Some(1));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let bad = EXAMPLE.replace("noise: 0.05", "noise: 0.05\n    colour: red");
        let e = Scenario::parse("s.yaml", &bad).unwrap_err();
        assert_eq!(e.line, 9, "{e}");
        assert!(e.column > 0, "{e}");
        assert!(e.to_string().starts_with("s.yaml:9:"), "{e}");
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (
                "load:\n  - { template: gpu, points: [[0s, 1]] }\n",
                "unknown template \"gpu\"",
            ),
            (
                "load:\n  - { template: base, points: [[1m, 1], [30s, 2]] }\n",
                "times must increase",
            ),
            (
                "load:\n  - { template: base, points: [[0s, -1]] }\n",
                "points cores: -1 is out of range; expected a finite number from 0",
            ),
            (
                "load:\n  - { template: base, points: [] }\n",
                "at least one",
            ),
            ("faults:\n  - { at: 1m }\n", "exactly one of"),
            (
                "faults:\n  - { at: 1m, api_error: { status: 200, for: 1m } }\n",
                "not an error status",
            ),
            ("duration: -5m\n", "non-negative duration"),
            ("seed: 1\nseed: 2\n", "duplicate"),
        ];
        for (text, want) in cases {
            let e = Scenario::parse("x.yaml", text).unwrap_err();
            assert!(
                e.to_string().to_lowercase().contains(&want.to_lowercase()),
                "{text:?}: {e}"
            );
        }
    }

    /// Item 12 of issue 9: every number and duration is bounded where it is written, and
    /// the error gives the line and column, the field and what is valid.
    #[test]
    fn absurd_values_are_errors_at_their_place() {
        let cases = [
            (
                "duration: 300000years\n",
                1,
                "duration: 300000years is out of range",
            ),
            (
                "faults:\n  - { at: 300000years, kill: 1 }\n",
                2,
                "at: 300000years",
            ),
            (
                "faults:\n  - { at: 1m, api_error: { status: 503, for: 18446744073709551616s } }\n",
                2,
                "for",
            ),
            (
                "faults:\n  - { at: 1m, api_error: { status: 503, for: 1s, retry_after: 18446744073709551615 } }\n",
                2,
                "retry_after",
            ),
            (
                "faults:\n  - { at: 1m, kill: 4294967295 }\n",
                2,
                "kill: 4294967295",
            ),
            ("templates:\n  base: { boot: 300000years }\n", 2, "boot"),
            (
                "templates:\n  base: { cpu_count: 4294967295 }\n",
                2,
                "cpu_count",
            ),
            (
                "templates:\n  base: { memory_mb: 64 }\n",
                2,
                "memory_mb: 64",
            ),
            (
                "initial:\n  - { count: 4000000000 }\n",
                2,
                "count: 4000000000",
            ),
            (
                "initial:\n  - { count: 1, timeout: 25h }\n",
                2,
                "timeout: 1day 1h",
            ),
            (
                "load:\n  - { template: base, points: [[0s, 1e300]] }\n",
                2,
                "points cores: 1e300",
            ),
            (
                "load:\n  - { template: base, points: [[0s, .nan]] }\n",
                2,
                "points cores: NaN",
            ),
            (
                "load:\n  - { template: base, points: [[0s, .inf]] }\n",
                2,
                "points cores: inf",
            ),
            (
                "load:\n  - { template: base, points: [[0s, -1]] }\n",
                2,
                "points cores: -1",
            ),
            (
                "load:\n  - { template: base, points: [[300000years, 1]] }\n",
                2,
                "points time",
            ),
        ];
        for (text, line, want) in cases {
            let e = Scenario::parse("x.yaml", text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.column > 0, "{text:?}: {e}");
            assert!(e.to_string().contains("expected"), "{text:?}: {e}");
            assert!(
                !e.message.contains("line"),
                "the position is shown once: {e}"
            );
        }
        let many = "initial:\n  - { count: 6000 }\n  - { count: 6000 }\n";
        let e = Scenario::parse("x.yaml", many).unwrap_err();
        assert!(e.message.contains("12000 is out of range"), "{e}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"{}[]:,- \n\t#&*!|>'\"%@`abc019.smh";
        for _ in 0..3000 {
            let len = rng.usize(0..120);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())] as char)
                .collect();
            let _ = Scenario::parse("fuzz.yaml", &s);
        }
        for cut in 0..EXAMPLE.len() {
            let _ = Scenario::parse("cut.yaml", &EXAMPLE[..cut]);
        }
    }
}
