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
//! This module sits above both `rules` (the format it loads) and `engine` (what it runs), as
//! promtool sits above Prometheus' `rulefmt` and `rules`; nothing below may import it.
//!
//! - [`format`]: the test file format and its checks, every problem as `file:line:col`;
//! - [`series`]: the input series notation (`90x10`, `1+1x10`, `_`);
//! - [`run`]: one case through the engine, compared with its expectations.
//!
//! A [`TestCase`] that exists has been checked: its pools, alerts and notifiers exist, its
//! expectations fall on steps, and it runs a bounded number of steps. Running never touches
//! E2B or a clock; the members live in the runner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::e2b::EventType;
use crate::rules::RuleSet;

mod format;
mod run;
mod series;

pub(crate) use format::load_test_file;
pub(crate) use run::run_case;

/// A test file, checked: its rules and cases.
pub(crate) struct TestFile {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) cases: Vec<TestCase>,
}

/// One test case, checked and ready to run.
#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    pub(crate) name: String,
    interval: Duration,
    duration: Duration,
    start: DateTime<Utc>,
    /// Members each pool starts with, named `<pool>/<index>` from 0.
    pools: BTreeMap<String, u32>,
    /// By `<pool>/<index>` or `<pool>/*`: one optional CPU sample per step.
    cpu: BTreeMap<String, Vec<Option<f64>>>,
    events: Vec<InputEvent>,
    expect: Vec<Expect>,
}

/// A lifecycle event the test feeds in at `at`.
#[derive(Debug, Clone)]
struct InputEvent {
    at: Duration,
    event_type: EventType,
    /// `<pool>/<index>`.
    sandbox: String,
    kill_reason: Option<String>,
}

/// One expectation at one time (a multiple of the interval); `None` and empty check nothing.
#[derive(Debug, Clone)]
struct Expect {
    at: Duration,
    decisions: Option<Vec<String>>,
    size: BTreeMap<String, u32>,
    alerts: BTreeMap<String, String>,
    notified: Option<Vec<String>>,
}
