//! Jobs in a simulation: applications that claim a pool member, hold it, and release it, as
//! a scenario's `jobs` say. They go through the agent's own claims service, the one behind
//! `POST /api/v1/pools/{pool}/claims`, so what `simulate` reports of claim latency is what the
//! agent's rules would give.
//!
//! Arrivals are a Poisson process whose rate is linear between the curve's points (drawn by
//! thinning, seeded by the scenario's seed, so a run replays exactly); each job holds its
//! member for an exponentially distributed time around the curve's `hold`. Latency is
//! measured in virtual time, from the claim to its answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::agent::claims::{ClaimError, ClaimRequest, ClaimResult, Claims};
use crate::emulator::scenario::JobsSpec;
use crate::sync::lock;

/// One job: when it arrives, which pool it claims from, how long it holds, how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    pub at: Duration,
    pub pool: String,
    pub hold: Duration,
    pub wait: Duration,
}

/// What the jobs of one pool saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobsReport {
    pub arrived: u64,
    /// Served at once by a running idle member.
    pub immediate: u64,
    /// Served after waiting for a member.
    pub waited: u64,
    /// Served by resuming a paused member.
    pub resumed: u64,
    /// Not served within their wait.
    pub timed_out: u64,
    /// Served jobs' claim latency, in seconds of virtual time.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    /// Sandbox-seconds jobs held members: what a perfect pool would pay for.
    pub held_sandbox_seconds: f64,
    /// The pool's sandbox-seconds over those held; `None` when nothing was held.
    pub cost_vs_held: Option<f64>,
}

/// What the jobs record as they go.
#[derive(Debug, Default)]
struct Tally {
    arrived: u64,
    by_result: BTreeMap<ClaimResult, u64>,
    latencies: Vec<f64>,
    held: f64,
}

/// The jobs of a run, recording as they go.
#[derive(Clone)]
pub struct Jobs {
    tallies: Arc<Mutex<BTreeMap<String, Tally>>>,
    /// Virtual seconds per second of the runtime's clock: 1 in `simulate` (its clock is
    /// virtual), the speed in the demo (whose clock is the wall's).
    speed: f64,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::at_speed(1.0)
    }
}

/// The arrivals of every jobs curve over `duration`, in time order.
pub fn arrivals(specs: &[JobsSpec], seed: u64, duration: Duration) -> Vec<Arrival> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut rng = fastrand::Rng::with_seed(seed ^ (0x6a6f_6273 + i as u64));
        out.extend(curve_arrivals(spec, &mut rng, duration));
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then(a.pool.cmp(&b.pool)));
    out
}

/// One curve's arrivals, by thinning a Poisson process at the curve's highest rate.
fn curve_arrivals(spec: &JobsSpec, rng: &mut fastrand::Rng, duration: Duration) -> Vec<Arrival> {
    let peak = spec.points.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    if peak <= 0.0 {
        return Vec::new();
    }
    let (end, mut t, mut out) = (duration.as_secs_f64(), 0.0, Vec::new());
    loop {
        t += exponential(rng, 1.0 / peak);
        if t >= end {
            return out;
        }
        if rng.f64() * peak < rate_at(&spec.points, t) {
            let hold = exponential(rng, spec.hold.0.as_secs_f64()).clamp(1.0, 86_400.0);
            out.push(Arrival {
                at: Duration::from_secs_f64(t),
                pool: spec.pool.clone(),
                hold: Duration::from_secs_f64(hold),
                wait: spec.wait.0,
            });
        }
    }
}

/// An exponential draw with this mean.
fn exponential(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.f64()).ln()
}

/// The curve's rate at `t` seconds: linear between points, flat before the first and after
/// the last.
fn rate_at(points: &[(crate::duration::HumanDuration, f64)], t: f64) -> f64 {
    let Some(first) = points.first() else {
        return 0.0;
    };
    if t <= first.0.as_secs_f64() {
        return first.1;
    }
    for w in points.windows(2) {
        let (t0, r0) = (w[0].0.as_secs_f64(), w[0].1);
        let (t1, r1) = (w[1].0.as_secs_f64(), w[1].1);
        if t <= t1 {
            return r0 + (r1 - r0) * (t - t0) / (t1 - t0);
        }
    }
    points.last().map_or(0.0, |p| p.1)
}

impl Jobs {
    /// Jobs whose waits and holds pass `speed` times faster than the runtime's clock, and
    /// whose latencies are reported in virtual seconds.
    pub fn at_speed(speed: f64) -> Jobs {
        Jobs {
            tallies: Arc::default(),
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// Runs one job now: claims with its wait, holds the member, releases it. Latency is
    /// virtual (the simulation's tokio clock is paused and jumps from event to event).
    pub fn spawn(&self, claims: Arc<Claims>, a: Arrival) {
        let (tallies, speed) = (self.tallies.clone(), self.speed);
        lock(&tallies).entry(a.pool.clone()).or_default().arrived += 1;
        tokio::spawn(async move {
            let asked = tokio::time::Instant::now();
            let req = ClaimRequest {
                holder: Some("simulated job".into()),
                lease: Some(a.hold + Duration::from_secs(60)),
                wait: a.wait.div_f64(speed),
                ..Default::default()
            };
            let out = claims.claim(&a.pool, req).await;
            let latency = asked.elapsed().as_secs_f64() * speed;
            let result = match &out {
                Ok(g) => g.result,
                Err(ClaimError::Exhausted { .. }) => ClaimResult::TimedOut,
                Err(_) => ClaimResult::Refused,
            };
            {
                let mut t = lock(&tallies);
                let tally = t.entry(a.pool.clone()).or_default();
                *tally.by_result.entry(result).or_default() += 1;
                if out.is_ok() {
                    tally.latencies.push(latency);
                }
            }
            let Ok(g) = out else { return };
            let held = tokio::time::Instant::now();
            tokio::time::sleep(a.hold.div_f64(speed)).await;
            let _ = claims.release(&g.claim.claim_id);
            lock(&tallies).entry(a.pool).or_default().held += held.elapsed().as_secs_f64() * speed;
        });
    }

    /// The report per pool; `sandbox_seconds` per pool gives the cost against what was held.
    /// Jobs still holding when the run ends count what they held until now.
    pub fn report(&self, sandbox_seconds: &BTreeMap<String, f64>) -> BTreeMap<String, JobsReport> {
        let tallies = lock(&self.tallies);
        tallies
            .iter()
            .map(|(pool, t)| {
                let mut l = t.latencies.clone();
                l.sort_by(f64::total_cmp);
                let n = |r| t.by_result.get(&r).copied().unwrap_or(0);
                let cost = sandbox_seconds.get(pool).copied().unwrap_or(0.0);
                let r = JobsReport {
                    arrived: t.arrived,
                    immediate: n(ClaimResult::Ok),
                    waited: n(ClaimResult::Waited),
                    resumed: n(ClaimResult::Resumed),
                    timed_out: n(ClaimResult::TimedOut) + n(ClaimResult::Refused),
                    latency_p50_s: quantile(&l, 0.5),
                    latency_p99_s: quantile(&l, 0.99),
                    latency_max_s: l.last().copied().unwrap_or(0.0),
                    held_sandbox_seconds: t.held,
                    cost_vs_held: (t.held > 0.0).then(|| cost / t.held),
                };
                (pool.clone(), r)
            })
            .collect()
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::HumanDuration;

    fn spec(points: Vec<(u64, f64)>) -> JobsSpec {
        JobsSpec {
            pool: "p".into(),
            points: points
                .into_iter()
                .map(|(t, r)| (HumanDuration(Duration::from_secs(t)), r))
                .collect(),
            hold: HumanDuration(Duration::from_secs(30)),
            wait: HumanDuration(Duration::from_secs(5)),
        }
    }

    #[test]
    fn arrivals_follow_the_rate_and_replay_from_the_seed() {
        let s = [spec(vec![(0, 2.0), (600, 2.0)])];
        let a = arrivals(&s, 7, Duration::from_secs(600));
        // About 1,200 expected; a Poisson count is within 4 sigma (~140) of it.
        assert!((1060..1340).contains(&a.len()), "{}", a.len());
        assert_eq!(a, arrivals(&s, 7, Duration::from_secs(600)));
        assert_ne!(a, arrivals(&s, 8, Duration::from_secs(600)));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn a_ramp_brings_more_jobs_late_than_early() {
        let a = arrivals(
            &[spec(vec![(0, 0.0), (600, 4.0)])],
            1,
            Duration::from_secs(600),
        );
        let early = a.iter().filter(|x| x.at < Duration::from_secs(300)).count();
        assert!(early * 2 < a.len(), "{early} of {}", a.len());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&v, 0.5), quantile(&v, 0.99)), (50.0, 99.0));
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
