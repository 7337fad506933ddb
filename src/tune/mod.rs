//! `tune`: a search over rule parameters. Each combination of a [`Space`] is set in the rules'
//! YAML tree, loaded with the normal loader and simulated on every scenario; the results give
//! the Pareto front of cost (sandbox-seconds over the perfect-foresight floor) against the
//! worst unmet demand, and the cheapest combination within an unmet budget.
//!
//! Combinations run in parallel on std threads (each [`simulate`] has its own thread and
//! virtual clock), and the results are sorted by combination before anything is derived from
//! them, so the report does not depend on which thread finished first. It never reads files
//! or the wall clock: the caller passes texts and scenarios in.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::emulator::Scenario;
use crate::rules::Diagnostic;
use crate::simulate::{SimOptions, simulate};

mod edit;
mod node;
pub mod space;

pub use space::{MAX_COMBINATIONS, Param, Space};

/// How to search.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub sim: SimOptions,
    /// The most unmet demand (percent, the worst scenario's) the best combination may leave.
    pub unmet_budget_pct: f64,
    /// Combinations simulated at once.
    pub threads: usize,
}

/// What one combination scored over all scenarios.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Total sandbox-seconds over the total floor (a floor under 1 counts as 1).
    pub cost_vs_floor: f64,
    /// The largest `unmet_pct` of any scenario (0 without demand).
    pub worst_unmet_pct: f64,
    pub sandbox_seconds: f64,
    pub floor_sandbox_seconds: f64,
    pub creates: u64,
}

/// One combination: its values (one per parameter, in the space's order) and its score, or
/// why its rules did not load.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub index: usize,
    pub values: Vec<Value>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole search.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    pub params: Vec<String>,
    pub scenarios: Vec<String>,
    pub unmet_budget_pct: f64,
    /// Every combination, by index.
    pub results: Vec<Outcome>,
    /// Indexes of the Pareto front, cheapest first.
    pub front: Vec<usize>,
    /// The cheapest combination within the budget, if any.
    pub best: Option<usize>,
    /// The best combination's rules as YAML.
    #[serde(skip)]
    pub best_rules: Option<String>,
}

/// The rule file searched: its name, its text and its YAML tree.
#[derive(Debug, Clone)]
pub struct RulesFile {
    pub file: String,
    pub text: String,
    pub tree: Value,
}

impl RulesFile {
    /// Parses a rule file's YAML (its rules are checked when each combination loads).
    pub fn parse(file: &str, text: &str) -> Result<RulesFile, Vec<Diagnostic>> {
        let tree = serde_saphyr::from_str(text).map_err(|e| {
            vec![Diagnostic::at(
                file,
                e.location(),
                crate::rules::yaml_message(&e, text),
            )]
        })?;
        Ok(RulesFile {
            file: file.to_string(),
            text: text.to_string(),
            tree,
        })
    }
}

/// Searches `space` over `scenarios` (name, scenario) from `rules`.
pub fn tune(
    rules: &RulesFile,
    space: &Space,
    scenarios: &[(String, Scenario)],
    opts: &TuneOptions,
) -> TuneReport {
    let n = space.count().unwrap_or(0);
    let results = run_all(n, opts.threads, |index| {
        evaluate(rules, space, index, scenarios, &opts.sim)
    });
    let front = pareto_front(&results);
    let best = front.iter().copied().find(|i| {
        results[*i]
            .score
            .as_ref()
            .is_some_and(|s| s.worst_unmet_pct <= opts.unmet_budget_pct)
    });
    let best_rules = best.map(|i| best_text(rules, space, &results[i].values));
    TuneReport {
        params: space.params.iter().map(|p| p.path.clone()).collect(),
        scenarios: scenarios.iter().map(|(name, _)| name.clone()).collect(),
        unmet_budget_pct: opts.unmet_budget_pct,
        results,
        front,
        best,
        best_rules,
    }
}

/// Runs `job` for 0..n on up to `threads` threads, and returns the outcomes by index.
fn run_all(n: usize, threads: usize, job: impl Fn(usize) -> Outcome + Sync) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return mine;
            }
            mine.push(job(i));
        }
    };
    let mut all: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.clamp(1, n.max(1)))
            .map(|_| s.spawn(worker))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    all.sort_by_key(|o| o.index);
    all
}

/// One combination: set, loaded, and simulated on every scenario.
fn evaluate(
    rules: &RulesFile,
    space: &Space,
    index: usize,
    scenarios: &[(String, Scenario)],
    sim: &SimOptions,
) -> Outcome {
    let values = space.combination(index);
    let yaml = rules_yaml(&space.apply(&rules.tree, &values));
    let rules = match crate::rules::load_str(&[(&rules.file, &yaml)]) {
        Ok(r) => Arc::new(r),
        Err(diags) => {
            let why: Vec<String> = diags.into_iter().map(|d| d.message).collect();
            return Outcome {
                index,
                values,
                score: None,
                error: Some(why.join("; ")),
            };
        }
    };
    let mut score = Score {
        cost_vs_floor: 0.0,
        worst_unmet_pct: 0.0,
        sandbox_seconds: 0.0,
        floor_sandbox_seconds: 0.0,
        creates: 0,
    };
    for (_, scenario) in scenarios {
        let report = simulate(Arc::clone(&rules), scenario, sim);
        score.sandbox_seconds += report.total.sandbox_seconds;
        score.floor_sandbox_seconds += report.total.floor_sandbox_seconds;
        score.creates += report.total.creates;
        let unmet = report.total.unmet_pct.unwrap_or(0.0);
        score.worst_unmet_pct = score.worst_unmet_pct.max(unmet);
    }
    score.cost_vs_floor = score.sandbox_seconds / score.floor_sandbox_seconds.max(1.0);
    Outcome {
        index,
        values,
        score: Some(score),
        error: None,
    }
}

/// Unmet percentages closer than this are the same: sums of the same demand in another order
/// differ in the last bits, and such a difference must not put a dearer combination on the
/// front.
const SAME_UNMET_PCT: f64 = 1e-9;

/// The combinations no other beats on both cost and worst unmet, cheapest first (ties go to
/// the lower unmet, then the lower index).
fn pareto_front(results: &[Outcome]) -> Vec<usize> {
    let mut scored: Vec<(&Score, usize)> = results
        .iter()
        .filter_map(|o| o.score.as_ref().map(|s| (s, o.index)))
        .collect();
    scored.sort_by(|(a, i), (b, j)| {
        a.cost_vs_floor
            .total_cmp(&b.cost_vs_floor)
            .then(a.worst_unmet_pct.total_cmp(&b.worst_unmet_pct))
            .then(i.cmp(j))
    });
    let mut front = Vec::new();
    let mut lowest_unmet = f64::INFINITY;
    for (s, i) in scored {
        if s.worst_unmet_pct < lowest_unmet - SAME_UNMET_PCT {
            lowest_unmet = s.worst_unmet_pct;
            front.push(i);
        }
    }
    front
}

/// The rule file with `values` set: its own text edited in place (comments kept), or, when
/// that cannot be done exactly, the tree as plain YAML.
fn best_text(rules: &RulesFile, space: &Space, values: &[Value]) -> String {
    let tree = space.apply(&rules.tree, values);
    edit::rewrite(&rules.text, space, values, &tree).unwrap_or_else(|| rules_yaml(&tree))
}

/// A rules tree as YAML (comments of the original are not kept).
fn rules_yaml(tree: &Value) -> String {
    serde_saphyr::to_string(tree).unwrap_or_default()
}
