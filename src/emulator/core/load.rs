//! The load model: templates, demand curves, which sandboxes have booted, and the metric
//! samples that show each sandbox's share of its template's demand.
//!
//! A template's demand (busy cores) is shared evenly by its running, booted sandboxes;
//! between two events nothing changes, so [`Core::accumulate`] integrates sandbox-seconds
//! and unmet demand exactly. This file must not decide lifecycle (who runs, who dies): it
//! only reads the counts the lifecycle keeps up to date.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Core, Task, earlier, uuid_from};
use crate::e2b::{SandboxMetric, SandboxState};
use crate::emulator::scenario::{Scenario, TemplateSpec};

const MIB: u64 = 1024 * 1024;

/// A template as the core knows it: its spec and the build id its events carry.
pub(super) struct Template {
    pub(super) spec: TemplateSpec,
    pub(super) build_id: String,
}

/// The scenario's templates, each with a build id drawn from `rng` in name order.
pub(super) fn templates(
    scenario: &Scenario,
    rng: &mut fastrand::Rng,
) -> BTreeMap<String, Template> {
    scenario
        .all_templates()
        .into_iter()
        .map(|(name, spec)| {
            let build_id = uuid_from(rng);
            (name, Template { spec, build_id })
        })
        .collect()
}

/// Demand of one template over time, in busy cores; piecewise linear. `simulate`'s floor reads
/// the same curve, so that it and the emulator never disagree on what the demand was.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    /// (seconds since start, cores), times strictly increasing; no points is no demand.
    points: Vec<(f64, f64)>,
    noise: f64,
}

impl Curve {
    /// A scenario's load line as a curve.
    pub(crate) fn of(l: &crate::emulator::scenario::LoadSpec) -> Curve {
        Curve {
            points: l
                .points
                .iter()
                .map(|(t, v)| (t.as_secs_f64(), *v))
                .collect(),
            noise: l.noise,
        }
    }

    /// Busy cores `s` seconds after the start: flat before the first point and after the last.
    pub(crate) fn at(&self, s: f64) -> f64 {
        let (Some(&(first_t, first_v)), Some(&(_, last_v))) =
            (self.points.first(), self.points.last())
        else {
            return 0.0;
        };
        if s <= first_t {
            return first_v;
        }
        for w in self.points.windows(2) {
            let ((t0, v0), (t1, v1)) = (w[0], w[1]);
            if s <= t1 {
                if t1 <= t0 {
                    return v1;
                }
                return v0 + (v1 - v0) * (s - t0) / (t1 - t0);
            }
        }
        last_v
    }

    /// Integral over [a, b] of the demand, and of the demand above `capacity`.
    fn integrate(&self, a: f64, b: f64, capacity: f64) -> (f64, f64) {
        if b <= a {
            return (0.0, 0.0);
        }
        let mut cuts = vec![a];
        cuts.extend(self.points.iter().map(|p| p.0).filter(|&t| t > a && t < b));
        cuts.push(b);
        let (mut total, mut excess) = (0.0, 0.0);
        for w in cuts.windows(2) {
            let (s0, s1) = (w[0], w[1]);
            let (d0, d1) = (self.at(s0), self.at(s1));
            total += (d0 + d1) / 2.0 * (s1 - s0);
            excess += excess_linear(s1 - s0, d0 - capacity, d1 - capacity);
        }
        (total, excess)
    }
}

/// Integral of max(0, f) over an interval of length `len` where f goes linearly from `e0` to `e1`.
fn excess_linear(len: f64, e0: f64, e1: f64) -> f64 {
    if e0 >= 0.0 && e1 >= 0.0 {
        (e0 + e1) / 2.0 * len
    } else if e0 <= 0.0 && e1 <= 0.0 {
        0.0
    } else {
        // One end above zero: a triangle up to the crossing.
        let pos = e0.max(e1);
        let frac = pos / (e0 - e1).abs();
        pos * frac * len / 2.0
    }
}

/// What the load model reads at every step, kept up to date as sandboxes change so that a
/// time step never scans the sandboxes.
pub(super) struct Load {
    /// Demand per template, from the scenario; a template without a curve idles.
    curves: BTreeMap<String, Curve>,
    /// Running and booted sandboxes per template: the capacity that serves the demand.
    pub(super) booted: BTreeMap<String, usize>,
    /// Running sandboxes per template (booted or not): the concurrency that counts.
    pub(super) running: BTreeMap<String, usize>,
}

impl Load {
    pub(super) fn new(scenario: &Scenario) -> Load {
        let curves = scenario
            .load
            .iter()
            .map(|l| (l.template.clone(), Curve::of(l)))
            .collect();
        Load {
            curves,
            booted: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }
}

impl Core {
    /// Busy cores asked of a template now.
    pub(crate) fn demand(&self, template: &str) -> f64 {
        self.load
            .curves
            .get(template)
            .map_or(0.0, |c| c.at(self.elapsed_s(self.now)))
    }

    pub(super) fn find_template(&self, name: &str) -> Option<(&String, &Template)> {
        self.templates.get_key_value(name).or_else(|| {
            self.templates
                .iter()
                .find(|(_, t)| t.spec.alias.as_deref() == Some(name))
        })
    }

    pub(super) fn running_count(&self) -> usize {
        self.load.running.values().sum()
    }

    pub(super) fn count_running(&mut self, template: &str, delta: isize) {
        let n = self.load.running.entry(template.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    /// [`Task::Boot`]: the sandbox takes its share of the demand, if it is still in the run
    /// the task was scheduled for.
    pub(super) fn boot(&mut self, sbx: u64, run: u64) {
        if let Some(s) = self.sandboxes.live.get_mut(&sbx)
            && s.run_gen == run
            && s.state == SandboxState::Running
            && !s.booted
        {
            s.booted = true;
            *self.load.booted.entry(s.template.clone()).or_default() += 1;
        }
    }

    /// The sandbox stops serving demand (it is pausing or dying).
    pub(super) fn unboot(&mut self, key: u64) {
        if let Some(s) = self.sandboxes.live.get_mut(&key)
            && s.booted
        {
            s.booted = false;
            if let Some(n) = self.load.booted.get_mut(&s.template) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// [`Task::Sample`]: samples a sandbox still in the run the task was scheduled for, and
    /// schedules its next sample.
    pub(super) fn sample_and_reschedule(&mut self, sbx: u64, run: u64) {
        let live = self
            .sandboxes
            .live
            .get(&sbx)
            .is_some_and(|s| s.run_gen == run && s.state == SandboxState::Running);
        if live {
            self.sample(sbx);
            self.schedule_after(self.cfg.metrics_interval, Task::Sample { sbx, run });
        }
    }

    /// Adds one metric sample to a sandbox: its share of the demand, with seeded noise.
    fn sample(&mut self, key: u64) {
        let Some(s) = self.sandboxes.live.get(&key) else {
            return;
        };
        let cpu = s.cpu_count.max(1) as f64;
        let (util, noise) = match (self.load.curves.get(&s.template), s.booted) {
            (Some(curve), true) => {
                let n = (*self.load.booted.get(&s.template).unwrap_or(&1)).max(1) as f64;
                let share = curve.at(self.elapsed_s(self.now)) / n;
                ((share / cpu).min(1.0), curve.noise)
            }
            // No load curve, or still booting: idle at a low, noisy load.
            _ => (0.01 + 0.02 * self.rng.f64(), 0.0),
        };
        let jitter = 1.0 + noise * (2.0 * self.rng.f64() - 1.0);
        let pct = (util * 100.0 * jitter).clamp(0.0, 100.0);
        let pct = (pct * 100.0).round() / 100.0;
        let metric = metric_at(self.now, s.cpu_count, s.memory_mb, s.disk_mb, pct);
        let horizon = earlier(self.now, self.cfg.metrics_retention);
        if let Some(s) = self.sandboxes.live.get_mut(&key) {
            while s.metrics.front().is_some_and(|m| m.timestamp < horizon) {
                s.metrics.pop_front();
            }
            s.metrics.push_back(metric);
        }
    }

    /// Adds sandbox-seconds and demand integrals over [a, b], during which nothing changed.
    pub(super) fn accumulate(&mut self, a: DateTime<Utc>, b: DateTime<Utc>) {
        let dt = (b - a).as_seconds_f64();
        if dt <= 0.0 {
            return;
        }
        for (tpl, &n) in &self.load.running {
            self.counters.add_sandbox_seconds(tpl, n as f64 * dt);
        }
        let (sa, sb) = (self.elapsed_s(a), self.elapsed_s(b));
        for (tpl, curve) in &self.load.curves {
            let cpu = self.templates.get(tpl).map_or(1, |t| t.spec.cpu_count) as f64;
            let capacity = *self.load.booted.get(tpl).unwrap_or(&0) as f64 * cpu;
            let (demand, unmet) = curve.integrate(sa, sb, capacity);
            let st = self.counters.per_template.entry(tpl.clone()).or_default();
            st.demand_core_seconds += demand;
            st.unmet_core_seconds += unmet;
            self.counters.totals.demand_core_seconds += demand;
            self.counters.totals.unmet_core_seconds += unmet;
        }
    }
}

/// One sample of a sandbox at `pct` CPU; memory and disk move with the load.
fn metric_at(
    now: DateTime<Utc>,
    cpu_count: u32,
    memory_mb: u32,
    disk_mb: u32,
    pct: f64,
) -> SandboxMetric {
    let util = pct / 100.0;
    let mem_total = memory_mb as u64 * MIB * 31 / 32;
    let mem_used = (mem_total as f64 * (0.06 + 0.55 * util)) as u64;
    let disk_total = disk_mb as u64 * MIB;
    let disk_used = (disk_total as f64 * (0.55 + 0.15 * util)) as u64;
    // E2B stores samples at whole seconds.
    let at = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    SandboxMetric {
        timestamp: at,
        timestamp_unix: at.timestamp(),
        cpu_count,
        cpu_used_pct: pct,
        mem_used,
        mem_total,
        mem_cache: mem_used / 4,
        disk_used,
        disk_total,
    }
}
