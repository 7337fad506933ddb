//! `tune` (docs/tune.md): a tiny space over a short spike gives the same front twice, its best
//! meets the unmet budget and is the cheapest that does, a combination that does not load is
//! reported, and bad space files are `file:line:col` errors. Everything runs in virtual time
//! through the library, so nothing here depends on how fast the machine is.

use poolpilot::emulator::Scenario;
use poolpilot::simulate::SimOptions;
use poolpilot::tune::{RulesFile, Space, TuneOptions, TuneReport, tune};

const RULES: &str = "\
pools:
  - name: workers
    template: base
    min: 1
    max: 50 # a ceiling on spend
    scale:
      interval: 5s
      target: { metric: avg_cpu_used_pct, value: 80 }
      stabilization: { up: 0s, down: 30s }
";

/// Quiet, then a jump from 2 to 12 busy cores for three minutes: short, with some unmet
/// demand while the pool grows.
const SPIKE: &str = "\
duration: 6m
seed: 3
templates:
  base: { cpu_count: 2, memory_mb: 512, disk_mb: 2048, boot: 2s }
load:
  - template: base
    points: [[0s, 2.0], [1m, 2.0], [1m10s, 12.0], [4m, 12.0], [4m10s, 2.0]]
";

fn search(space: &str, budget: f64) -> TuneReport {
    let rules = RulesFile::parse("rules.yaml", RULES).expect("rules parse");
    let space = Space::load("space.yaml", space, &rules.tree).expect("valid space");
    let scenario = Scenario::parse("spike.yaml", SPIKE).expect("valid scenario");
    let opts = TuneOptions {
        sim: SimOptions::default(),
        unmet_budget_pct: budget,
        threads: 2,
    };
    tune(&rules, &space, &[("spike".into(), scenario)], &opts)
}

fn space_error(space: &str) -> String {
    let rules = RulesFile::parse("rules.yaml", RULES).expect("rules parse");
    let diags = Space::load("space.yaml", space, &rules.tree).expect_err("an invalid space");
    diags
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

const TWO_BY_TWO: &str = "\
pools.workers.scale.target.value: [60, 90]
pools.workers.scale.stabilization.down: [30s, 2m]
";

#[test]
fn a_two_by_two_space_gives_the_same_front_twice() {
    let a = search(TWO_BY_TWO, 100.0);
    let b = search(TWO_BY_TWO, 100.0);
    assert_eq!(a.results.len(), 4);
    assert!(!a.front.is_empty());
    // Along the front, each step costs more and leaves less unmet.
    let scores: Vec<_> = a
        .front
        .iter()
        .map(|i| a.results[*i].score.clone().unwrap())
        .collect();
    for w in scores.windows(2) {
        assert!(w[0].cost_vs_floor <= w[1].cost_vs_floor, "{scores:?}");
        assert!(
            w[0].worst_unmet_pct > w[1].worst_unmet_pct + 1e-9,
            "{scores:?}"
        );
    }
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

#[test]
fn the_best_is_the_cheapest_combination_within_the_budget() {
    let all = search(TWO_BY_TWO, 100.0);
    let scores: Vec<_> = all
        .results
        .iter()
        .map(|o| o.score.clone().unwrap())
        .collect();
    // A budget between the lowest and the highest unmet leaves some combinations out.
    let mut unmet: Vec<f64> = scores.iter().map(|s| s.worst_unmet_pct).collect();
    unmet.sort_by(f64::total_cmp);
    let budget = unmet[0];
    let r = search(TWO_BY_TWO, budget);
    let best = r.best.expect("the lowest unmet meets its own budget");
    let best_score = r.results[best].score.clone().unwrap();
    assert!(best_score.worst_unmet_pct <= budget);
    for s in scores.iter().filter(|s| s.worst_unmet_pct <= budget) {
        assert!(best_score.cost_vs_floor <= s.cost_vs_floor);
    }
    assert!(r.front.contains(&best));
    let yaml = r.best_rules.expect("the best rules");
    let set = poolpilot::rules::load_str(&[("best.yaml", &yaml)]).expect("best rules load");
    assert_eq!(set.pools.len(), 1);
    // The user's own file, edited in place: its comments stay.
    assert!(yaml.contains("max: 50 # a ceiling on spend"), "{yaml}");
    let down = r.results[best].values[1].as_str().unwrap();
    assert!(yaml.contains(&format!("down: {down} }}")), "{yaml}");
}

#[test]
fn a_combination_that_does_not_load_is_reported_not_fatal() {
    let r = search("pools.workers.scale.target.value: [80, -5]\n", 100.0);
    assert!(r.results[0].score.is_some());
    assert!(r.results[1].error.is_some(), "{:?}", r.results[1]);
    assert_eq!(r.front, vec![0]);
}

#[test]
fn a_path_that_is_not_in_the_rules_is_a_file_line_col_error() {
    let e = space_error(
        "pools.workers.scale.target.value: [80]\npools.workers.scale.target.valu: [1]\n",
    );
    assert!(e.starts_with("space.yaml:2:1: "), "{e}");
    assert!(e.contains("`valu`"), "{e}");
    let e = space_error("pools.nobody.min: [1]\n");
    assert!(
        e.starts_with("space.yaml:1:1: ") && e.contains("`nobody`"),
        "{e}"
    );
}

#[test]
fn too_many_combinations_is_an_error() {
    let values: Vec<String> = (1..=40).map(|v| v.to_string()).collect();
    let list = format!("[{}]", values.join(", "));
    let space = format!("pools.workers.min: {list}\npools.workers.max: {list}\n");
    let e = space_error(&space);
    assert!(
        e.contains("40 x 40 = 1600 combinations; at most 1000"),
        "{e}"
    );
}

#[test]
fn an_empty_list_of_values_is_an_error_at_its_place() {
    let e = space_error("pools.workers.min: []\n");
    assert!(e.starts_with("space.yaml:1:20: "), "{e}");
}
