//! The perfect-foresight floor of a scenario: the fewest sandbox-seconds that serve all of its
//! demand, as if a pool knew the future and its sandboxes booted instantly. No policy can cost
//! less without leaving demand unmet, so a policy's cost is reported as a multiple of it.
//!
//! A sandbox of `cpu_count` vCPUs serves up to `cpu_count` busy cores (the emulator's load
//! model caps each sample at 100 %), so at each instant the floor is
//! `ceil(demand / cpu_count)` sandboxes of the template. Demand is the scenario's piecewise
//! linear curve itself, read by the emulator's own [`Curve`] (noise only touches samples), integrated in steps of [`STEP_S`] taken
//! at their midpoints. Pure: no emulator, no clock.

use std::collections::BTreeMap;

use crate::emulator::Scenario;
use crate::emulator::core::Curve;

/// The integration step, in seconds: fine against curves whose points are seconds apart.
const STEP_S: f64 = 1.0;

/// Sandbox-seconds of the floor per template over `duration_s`, for the templates with demand.
pub fn floor(scenario: &Scenario, duration_s: f64) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for load in &scenario.load {
        let cpu = scenario
            .templates
            .get(&load.template)
            .map_or(2, |t| t.cpu_count)
            .max(1) as f64;
        let curve = Curve::of(load);
        *out.entry(load.template.clone()).or_insert(0.0) +=
            integrate(duration_s, |s| (curve.at(s) / cpu).ceil());
    }
    out
}

/// `f` integrated over `[0, duration_s]` at the midpoints of [`STEP_S`] steps (the last one
/// shortened to fit).
fn integrate(duration_s: f64, f: impl Fn(f64) -> f64) -> f64 {
    let mut total = 0.0;
    let mut t = 0.0;
    while t < duration_s {
        let dt = STEP_S.min(duration_s - t);
        total += f(t + dt / 2.0) * dt;
        t += dt;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse("t.yaml", text).expect("a valid scenario")
    }

    #[test]
    fn a_flat_demand_needs_its_cores_rounded_up_to_whole_sandboxes() {
        // 5 busy cores on 2-vCPU sandboxes: 3 sandboxes for 100 s.
        let s = scenario("load: [{ template: base, points: [[0s, 5.0]] }]\n");
        assert_eq!(floor(&s, 100.0)["base"], 300.0);
    }

    #[test]
    fn a_ramp_is_integrated_step_by_step() {
        // 0 -> 8 cores over 80 s on 4-vCPU sandboxes: 1 sandbox while demand is in (0, 4],
        // 2 while in (4, 8]: 40 s x 1 + 40 s x 2 = 120.
        let s = scenario(
            "templates: { big: { cpu_count: 4 } }\nload: [{ template: big, points: [[0s, 0.0], [80s, 8.0]] }]\n",
        );
        assert_eq!(floor(&s, 80.0)["big"], 120.0);
    }

    #[test]
    fn no_demand_costs_nothing() {
        let s = scenario("load: [{ template: base, points: [[0s, 0.0]] }]\n");
        assert_eq!(floor(&s, 600.0)["base"], 0.0);
        assert!(floor(&scenario("seed: 1\n"), 600.0).is_empty());
    }
}
