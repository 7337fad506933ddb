//! Tests of forecasting (`scale.predict`): a trend raises the floor ahead of a ramp in
//! `forecast_and_scale` mode, never scales in, changes nothing in `forecast_only` mode (but
//! says what it would have done), waits for enough history, and survives a restart.

use super::*;

/// Ten members tracked at 50 % CPU with a tolerance so wide (±50 %) that target tracking
/// holds from 25 to 75 %, so any change comes from the forecast.
fn predict_rules(mode: &str) -> Arc<RuleSet> {
    rules(&format!(
        "
pools:
  - name: workers
    min: 1
    max: 100
    scale:
      interval: 15s
      stabilization: {{ down: 0s }}
      target: {{ metric: avg_cpu_used_pct, value: 50, tolerance: 0.5, saturated_when: \"false\" }}
      predict: {{ method: trend, lookback: 10m, horizon: 2m, mode: {mode} }}
"
    ))
}

/// Evaluation `k` (every 15 s) of ten members at `cpu(k)`.
fn run(e: &mut Engine, k: i64, cpu: f64) -> Vec<Decision> {
    let now = at(15 * k);
    step(e, now, &pool_of("workers", &[Some(cpu); 10], now))
}

fn summary_of(e: &Engine) -> String {
    e.state().pools["workers"]
        .status
        .as_ref()
        .unwrap()
        .summary
        .clone()
}

/// CPU 40 % rising 2 points per evaluation: demand 8 members, +0.4 per 15 s.
fn ramp(k: i64) -> f64 {
    40.0 + 2.0 * k as f64
}

#[test]
fn a_trend_raises_the_floor_ahead_of_a_ramp() {
    let mut e = Engine::new(predict_rules("forecast_and_scale"));
    for k in 0..4 {
        let d = run(&mut e, k, ramp(k));
        // Four points are too few for a trend: the reactive hold stands.
        assert_eq!(creates(&d), 0, "k={k}: {}", summary_of(&e));
    }
    // Demand 9.6 (CPU 48 % of 10 at target 50), rising 0.4 per 15 s: 12.8 at +2m, 13 members,
    // while target tracking still holds (ratio 0.96).
    let d = run(&mut e, 4, ramp(4));
    assert_eq!(creates(&d), 3, "{}", summary_of(&e));
    let cause = &d[0].cause;
    assert_eq!(cause.values["forecast"], 13.0);
    assert!(
        cause.summary.contains(
            "hold; forecast: trend of demand says 12.8 at +2m (13 members), floor 10 -> 13"
        ),
        "{}",
        cause.summary
    );
}

#[test]
fn forecast_only_changes_nothing_but_says_what_it_would_have_done() {
    let mut e = Engine::new(predict_rules("forecast_only"));
    for k in 0..=10 {
        assert!(run(&mut e, k, ramp(k)).is_empty(), "k={k}");
    }
    let s = summary_of(&e);
    assert!(
        s.contains("forecast (forecast_only, not applied): trend of demand says 15.2 at +2m (16 members), would raise 10 -> 16"),
        "{s}"
    );
}

#[test]
fn a_falling_forecast_never_scales_in() {
    let mut e = Engine::new(predict_rules("forecast_and_scale"));
    for k in 0..25 {
        // 50 % falling to 26 %: the forecast reads far below the size, the target holds.
        let d = run(&mut e, k, 50.0 - k as f64);
        assert!(kills(&d).is_empty() && creates(&d) == 0, "k={k}: {d:?}");
    }
}

#[test]
fn too_little_history_makes_no_forecast() {
    let mut e = Engine::new(predict_rules("forecast_and_scale"));
    // A steep ramp, 30 -> 70 %: a trend through any two points says far above 10 members.
    for k in 0..4 {
        let d = run(&mut e, k, 30.0 + 13.0 * k as f64);
        assert_eq!(creates(&d), 0, "k={k}: {}", summary_of(&e));
        assert!(!summary_of(&e).contains("forecast"), "k={k}");
    }
    // The fifth point fits a trend.
    let d = run(&mut e, 4, 72.0);
    assert!(creates(&d) > 0, "{}", summary_of(&e));
}

#[test]
fn stale_history_makes_no_forecast() {
    let mut e = Engine::new(predict_rules("forecast_and_scale"));
    for k in 0..10 {
        run(&mut e, k, ramp(k));
    }
    // Members without samples for 2 minutes: the pool holds and the history goes stale.
    for k in 10..18 {
        let now = at(15 * k);
        let d = step(&mut e, now, &pool_of("workers", &[None; 10], now));
        if k >= 13 {
            assert_eq!(creates(&d), 0, "k={k}: {}", summary_of(&e));
        }
    }
}

#[test]
fn demand_history_survives_a_restart_and_old_state_loads_without_it() {
    let mut a = Engine::new(predict_rules("forecast_and_scale"));
    for k in 0..8 {
        run(&mut a, k, ramp(k));
    }
    let saved = serde_json::to_string(a.state()).unwrap();
    assert!(saved.contains("\"demand\""), "{saved}");
    let restored: EngineState = serde_json::from_str(&saved).unwrap();
    assert_eq!(&restored, a.state());
    let mut b = Engine::with_state(predict_rules("forecast_and_scale"), restored);
    for k in 8..=10 {
        assert_eq!(run(&mut a, k, ramp(k)), run(&mut b, k, ramp(k)), "k={k}");
    }
    let json = serde_json::to_string(&EngineState::default()).unwrap();
    assert!(!json.contains("demand"), "{json}");
    let old: PoolState = serde_json::from_str(r#"{"last_eval":null,"first_eval":null,"cooldown_up_until":null,"cooldown_down_until":null,"window":[],"status":null}"#).unwrap();
    assert!(old.demand.is_empty());
}
