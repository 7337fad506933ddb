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

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::e2b::Metadata;

/// E2B's default template.
pub const DEFAULT_TEMPLATE: &str = "base";

/// A whole scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How long the scenario runs; `simulate` and `--exit-at-end` stop there.
    #[serde(default)]
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
}

/// Size and boot time of a template's sandboxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    #[serde(default = "default_cpu")]
    pub cpu_count: u32,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_disk")]
    pub disk_mb: u32,
    /// Time from create until the sandbox takes its share of the demand.
    #[serde(default = "default_boot")]
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
    pub count: u32,
    #[serde(default)]
    pub metadata: Metadata,
    /// Their timeout; long by default so that they outlive the scenario.
    #[serde(default = "default_initial_timeout")]
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
    pub at: HumanDuration,
    /// Kill this many running sandboxes of `template`, chosen by the seeded random draw.
    #[serde(default)]
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
    #[serde(rename = "for")]
    pub duration: HumanDuration,
    /// Only requests whose path starts with this, e.g. `/v2/sandboxes`; all when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Retry-After seconds sent with a 429 or 503; 1 by default for 429.
    #[serde(default)]
    pub retry_after: Option<u64>,
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
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
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
                message: first_line(&e.to_string()),
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
    pub fn all_templates(&self) -> BTreeMap<String, TemplateSpec> {
        let mut t = BTreeMap::new();
        t.insert(DEFAULT_TEMPLATE.to_string(), TemplateSpec::default());
        t.extend(self.templates.clone());
        t
    }

    fn validate(&self) -> Result<(), String> {
        let templates = self.all_templates();
        let known = |name: &str, at: &str| -> Result<(), String> {
            if templates.contains_key(name) {
                Ok(())
            } else {
                Err(format!(
                    "{at}: unknown template {name:?}; known templates: {}",
                    templates.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            }
        };
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
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in self.load.iter().enumerate() {
            let at = format!("load[{i}]");
            known(&l.template, &at)?;
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
            for (j, (t, v)) in l.points.iter().enumerate() {
                if !v.is_finite() || *v < 0.0 {
                    return Err(format!(
                        "{at}.points[{j}]: demand {v} must be a finite number of cores >= 0"
                    ));
                }
                if j > 0 && *t <= l.points[j - 1].0 {
                    return Err(format!(
                        "{at}.points[{j}]: time {t} is not after the previous point's {}; times must increase",
                        l.points[j - 1].0
                    ));
                }
            }
        }
        for (i, s) in self.initial.iter().enumerate() {
            known(&s.template, &format!("initial[{i}]"))?;
        }
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
                    known(f.template.as_deref().unwrap_or(DEFAULT_TEMPLATE), &at)?;
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
                "must be a finite number",
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
