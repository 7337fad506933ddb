//! Tests of rate policies (`scale.policies`), saturation in target tracking, and the
//! `busy_cores` / `capacity_cores` pool variables.

use super::*;

/// A pool `workers` (min 1, max 1000, every 15 s, no down stabilization) with these `scale`
/// lines (indented 6 spaces).
fn pool_rules(scale: &str) -> Arc<RuleSet> {
    rules(&format!(
        "
pools:
  - name: workers
    min: 1
    max: 1000
    scale:
      interval: 15s
      stabilization: {{ down: 0s }}
{scale}"
    ))
}

/// Target tracking that never reads saturated, so only the policies limit it.
const UNSATURATED: &str =
    "      target: { metric: avg_cpu_used_pct, value: 20, saturated_when: \"false\" }\n";

fn summary(d: &[Decision]) -> &str {
    &d[0].cause.summary
}

fn policy_clamps(d: &[Decision]) -> Vec<&Clamp> {
    d[0].cause
        .clamps
        .iter()
        .filter(|c| c.kind == ClampKind::Policy)
        .collect()
}

fn cpus(n: usize, cpu: f64, now: DateTime<Utc>) -> Vec<ObservedSandbox> {
    pool_of("workers", &vec![Some(cpu); n], now)
}

#[test]
fn up_policies_select_the_largest_or_the_smallest_change() {
    // ceil(10 * 100 / 20) = 50; pods 4 allows 14, percent 100 allows 20.
    for (select, want, policy) in [("max", 10, "percent 100"), ("min", 4, "pods 4")] {
        let mut e = Engine::new(pool_rules(&format!(
            "{UNSATURATED}      policies:
        up: {{ select: {select}, rules: [{{ pods: 4, per: 15s }}, {{ percent: 100, per: 15s }}] }}
"
        )));
        let d = step(&mut e, t0(), &cpus(10, 100.0, t0()));
        assert_eq!(creates(&d), want, "select {select}: {}", summary(&d));
        let clamps = policy_clamps(&d);
        assert_eq!(clamps.len(), 1);
        assert_eq!((clamps[0].from, clamps[0].to), (50, 10 + want));
        assert_eq!(
            clamps[0].note,
            format!(
                "scale-out limited by policies.up {policy} per 15s (select {select} of 2) from size 10 at 11:59:45"
            )
        );
    }
}

#[test]
fn down_policies_shrink_gently_and_select_min_is_the_smaller_cut() {
    // ceil(20 * 6 / 60) = 2; percent 10 allows 18, pods 5 allows 15.
    for (select, want) in [("max", 5), ("min", 2)] {
        let mut e = Engine::new(pool_rules(&format!(
            "      target: {{ metric: avg_cpu_used_pct, value: 60 }}
      policies:
        down: {{ select: {select}, rules: [{{ percent: 10, per: 1m }}, {{ pods: 5, per: 1m }}] }}
"
        )));
        let d = step(&mut e, t0(), &cpus(20, 6.0, t0()));
        assert_eq!(kills(&d).len(), want, "select {select}: {}", summary(&d));
        assert_eq!(policy_clamps(&d)[0].from, 2);
        if select == "max" {
            assert_eq!(
                summary(&d),
                "pool workers: avg_cpu_used_pct 6 vs target 60 (ratio 0.1), -18; scale-in limited by policies.down pods 5 per 1m (select max of 2) from size 20 at 11:59:00: 2 -> 15; size 20 -> 15"
            );
        }
    }
}

#[test]
fn percents_round_up_when_growing_and_down_when_shrinking() {
    let mut e = Engine::new(pool_rules(&format!(
        "{UNSATURATED}      policies:
        up: {{ rules: [{{ percent: 10, per: 15s }}] }}
        down: {{ rules: [{{ percent: 10, per: 15s }}] }}
"
    )));
    // 3 * 1.1 = 3.3 rounds up to 4: a small pool still grows.
    let d = step(&mut e, t0(), &cpus(3, 100.0, t0()));
    assert_eq!(creates(&d), 1, "{}", summary(&d));
    // 15 * 0.9 = 13.5 rounds down to 13.
    let mut e = Engine::new(e.rules().clone());
    let d = step(&mut e, t0(), &cpus(15, 1.0, t0()));
    assert_eq!(kills(&d).len(), 2, "{}", summary(&d));
}

const PODS_PER_MINUTE: &str = "      policies:
        up: { rules: [{ pods: 4, per: 1m }] }
";

/// Ten members at full CPU every 15 s for 75 s, the pool following its own decisions; the
/// creates at each step. `restart_at` round-trips the state through JSON before that step.
fn run_a_minute_and_more(restart_at: Option<i64>) -> Vec<u32> {
    let rules = pool_rules(&format!("{UNSATURATED}{PODS_PER_MINUTE}"));
    let mut e = Engine::new(rules.clone());
    let mut size = 10;
    let mut out = Vec::new();
    for s in (0..=75).step_by(15) {
        if restart_at == Some(s) {
            let json = serde_json::to_string(e.state()).unwrap();
            let state: EngineState = serde_json::from_str(&json).unwrap();
            e = Engine::with_state(rules.clone(), state);
        }
        let n = creates(&step(&mut e, at(s), &cpus(size, 100.0, at(s))));
        size += n as usize;
        out.push(n);
    }
    out
}

#[test]
fn a_period_counts_from_the_size_at_its_start_across_evaluations_and_restarts() {
    // 4 per minute in all, not 4 per 15 s evaluation: +4 at 0s, nothing until the minute
    // from 0s has passed, +4 at 60s.
    let uninterrupted = run_a_minute_and_more(None);
    assert_eq!(uninterrupted, [4, 0, 0, 0, 4, 0]);
    // A restart keeps the budget already spent.
    for restart in [15, 30, 60] {
        assert_eq!(run_a_minute_and_more(Some(restart)), uninterrupted);
    }
}

#[test]
fn the_size_history_is_bounded_and_old_state_files_load() {
    let rules = pool_rules(&format!("{UNSATURATED}{PODS_PER_MINUTE}"));
    let mut e = Engine::new(rules.clone());
    for s in (0..=3600).step_by(15) {
        step(&mut e, at(s), &cpus(10, 20.0, at(s)));
    }
    // The last record at or before 1m ago, and the four since.
    assert_eq!(e.state().pools["workers"].sizes.len(), 5);
    // State written before rate policies existed has no `sizes`.
    let mut json = serde_json::to_value(e.state()).unwrap();
    json["pools"]["workers"]
        .as_object_mut()
        .unwrap()
        .remove("sizes");
    let old: EngineState = serde_json::from_value(json).unwrap();
    assert!(old.pools["workers"].sizes.is_empty());
    // A pool without policies keeps no history.
    let mut e = Engine::new(pool_rules(UNSATURATED));
    step(&mut e, t0(), &cpus(10, 20.0, t0()));
    assert!(e.state().pools["workers"].sizes.is_empty());
}

const TARGET_60: &str = "      target: { metric: avg_cpu_used_pct, value: 60 }\n";

#[test]
fn a_saturated_reading_doubles_without_policies_and_says_so() {
    let mut e = Engine::new(pool_rules(TARGET_60));
    // Proportional: ceil(10 * 100 / 60) = 17; saturated: double, 20.
    let d = step(&mut e, t0(), &cpus(10, 100.0, t0()));
    assert_eq!(creates(&d), 10, "{}", summary(&d));
    assert_eq!(d[0].cause.values["saturated"], 1.0);
    assert_eq!(
        summary(&d),
        "pool workers: avg_cpu_used_pct 100 vs target 60 (ratio 1.67), +7; saturated (avg_cpu_used_pct >= 95): demand unknown, growing by doubling (no up policies), +10; size 10 -> 20"
    );
    // Below the saturation level, proportional as before.
    let mut e = Engine::new(pool_rules(TARGET_60));
    let d = step(&mut e, t0(), &cpus(10, 90.0, t0()));
    assert_eq!(creates(&d), 5);
    assert!(!d[0].cause.values.contains_key("saturated"));
}

#[test]
fn a_saturated_reading_grows_by_the_policies_maximum() {
    let mut e = Engine::new(pool_rules(&format!(
        "{TARGET_60}      policies:
        up: {{ rules: [{{ pods: 4, per: 15s }}, {{ percent: 100, per: 15s }}] }}
        down: {{ rules: [{{ percent: 10, per: 1m }}] }}
"
    )));
    let d = step(&mut e, t0(), &cpus(10, 100.0, t0()));
    assert_eq!(creates(&d), 10, "{}", summary(&d));
    assert_eq!(
        summary(&d),
        "pool workers: avg_cpu_used_pct 100 vs target 60 (ratio 1.67), +7; saturated (avg_cpu_used_pct >= 95): demand unknown, growing by the up policies' limit for the period, +10; size 10 -> 20"
    );
}

#[test]
fn a_saturated_reading_never_scales_in() {
    // Saturated by one member at its ceiling while the average says shrink, and a step rule
    // that says shrink too; the up budget of the period is spent, so the pool holds.
    let mut e = Engine::new(pool_rules(
        "      target: { metric: avg_cpu_used_pct, value: 60, saturated_when: max_cpu_used_pct >= 95 }
      steps: [{ when: size > 1, remove: 5 }]
      policies:
        up: { rules: [{ pods: 2, per: 1m }] }
",
    ));
    let mut members = cpus(10, 5.0, t0());
    members[0].metric.as_mut().unwrap().cpu_used_pct = 100.0;
    let d = step(&mut e, t0(), &members);
    assert_eq!(creates(&d), 2, "{}", summary(&d));
    let mut members = cpus(12, 5.0, at(15));
    members[0].metric.as_mut().unwrap().cpu_used_pct = 100.0;
    let d = step(&mut e, at(15), &members);
    assert!(d.is_empty(), "{d:?}");
    let status = e.state().pools["workers"].status.as_ref().unwrap();
    assert_eq!((status.raw, status.desired), (12, 12), "{}", status.summary);
}

#[test]
fn missing_data_still_holds_a_saturated_pool() {
    let mut e = Engine::new(pool_rules(TARGET_60));
    let mut members = cpus(10, 100.0, t0());
    members[3].metric = None;
    let d = step(&mut e, t0(), &members);
    assert!(d.is_empty(), "{d:?}");
    let status = e.state().pools["workers"].status.as_ref().unwrap();
    assert_eq!(status.clamps[0].kind, ClampKind::MissingData);
}

#[test]
fn busy_cores_and_capacity_cores_sum_over_members_with_data() {
    let mut e = Engine::new(pool_rules(
        "      steps: [{ when: busy_cores == 3.5 && capacity_cores == 6, add: 1 }]\n",
    ));
    // Three 2-vCPU members at 50, 100 and 25 %: 1 + 2 + 0.5 busy cores of 6.
    let members = pool_of("workers", &[Some(50.0), Some(100.0), Some(25.0)], t0());
    let d = step(&mut e, t0(), &members);
    assert_eq!(creates(&d), 1, "{:?}", e.state().pools["workers"].status);
    assert_eq!(d[0].cause.values["busy_cores"], 3.5);
    // Sized to the cores in use: ceil(3.5 / 1.2) = 3 whatever the size.
    let mut e = Engine::new(pool_rules(
        "      target: { metric: busy_cores / size, value: 1.2 }\n",
    ));
    let mut members = members;
    members.extend(pool_of("workers", &[None; 7], t0()).into_iter().skip(3));
    members
        .iter_mut()
        .skip(3)
        .for_each(|m| m.state = SandboxState::Paused);
    let d = step(&mut e, t0(), &members);
    assert!(d.is_empty(), "{d:?}");
}
