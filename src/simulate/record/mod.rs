//! `poolpilot record`'s conversion: what a running agent kept in its history store (rows read
//! by [`crate::store::read`]'s record queries) turned into a [`Scenario`] that `simulate` and
//! `tune` replay, and that scenario written as commented YAML.
//!
//! How each part is derived (docs/record.md says the same for users):
//! - **Demand** per template: each pool's `busy_cores` (the sum of `cpu_used_pct x cpu_count /
//!   100` over its running members), a sample holding until the next one (at most
//!   [`HOLD_MAX`]), averaged per `step` and summed over the pools on the template; one point
//!   per step at the middle of its span, so the replayed integral matches the recorded one.
//!   Where members ran at their CPU ceiling the busy cores are the pool's capacity and the
//!   real demand was higher: such steps are listed as saturated spans in a comment.
//! - **Templates**: a pool's template is the one its created events name most; cpu_count,
//!   memory and disk are the most common shape of its members' samples (memory rounded up to
//!   a multiple of 128 MiB: a guest reports a little less than it was given); boot is the
//!   10th percentile of the delays from a create decision to its first created event (E2B
//!   answers a create with a booted sandbox), or 1 s, said so, without any or when the
//!   events are stamped at the call (the shortest delay under 100 ms, as the emulator's are).
//! - **Initial** sandboxes: each pool's running members at its first sample.
//! - **Faults**: killed events that are crashes by the events report's rule, at their times.
//! - **Jobs**: claims per pool as arrivals per second per step, with the mean hold.
//!
//! Pure: no I/O, no clock. It never invents demand: a step no sample covers has no point.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::duration::HumanDuration;
use crate::e2b::Metadata;
use crate::emulator::Scenario;
use crate::emulator::scenario::{
    FaultSpec, InitialSpec, JobsSpec, LoadSpec, MAX_JOB_RATE, TemplateSpec,
};
use crate::store::PoolSample;
use crate::store::read::{BootDelay, ClaimSpan, Seen, Shape, StoredEvent};

/// A sample stands for the pool until the next one, but no longer than this: the store keeps
/// one per 10 s, thinned to one per 5 minutes after 6 hours; a longer silence is a gap
/// (the agent was down) and gets no points.
pub const HOLD_MAX: Duration = Duration::from_secs(360);
/// The most points one curve may have.
pub const MAX_POINTS: u64 = 10_000;
/// Members at or above this share of their cores are at their ceiling.
const SATURATED: f64 = 0.95;
/// The boot time when no create could be timed (the emulator's default).
const DEFAULT_BOOT: Duration = Duration::from_secs(1);
const MIB: u64 = 1024 * 1024;
/// A created event this soon after its create decision was stamped at the call (no sandbox
/// boots in under 100 ms).
const AT_CALL_MS: i64 = 100;

/// The rows `record` reads from the history store.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub pool_samples: Vec<PoolSample>,
    pub templates: Vec<Seen>,
    pub shapes: Vec<Shape>,
    pub boots: Vec<BootDelay>,
    pub kills: Vec<StoredEvent>,
    pub claims: Vec<ClaimSpan>,
}

/// What to record: the span, the step of the curves, and the pools (all when empty).
#[derive(Debug, Clone)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub step: Duration,
    pub pools: Vec<String>,
}

/// The scenario and what a reader of it should know.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub scenario: Scenario,
    /// Per template: its pools, and how its fields were found.
    pub templates: BTreeMap<String, TemplateNotes>,
    /// Per template: saturated spans of its curve, seconds from the start.
    pub saturated: BTreeMap<String, Vec<(f64, f64)>>,
    /// Per template: spans no sample covered.
    pub gaps: BTreeMap<String, Vec<(f64, f64)>>,
}

/// How a template's fields were found.
#[derive(Debug, Clone, Default)]
pub struct TemplateNotes {
    pub pools: Vec<String>,
    /// No created event named it: `base` was assumed.
    pub assumed: bool,
    /// Member samples its shape came from (0: E2B's `base` shape assumed).
    pub shape_samples: u64,
    /// Creates its boot time was measured over (0: the default).
    pub boots_timed: usize,
    /// Some create's created event came within [`AT_CALL_MS`] of its decision: the events
    /// are stamped at the call, the boot cannot be measured, and it is the default.
    pub stamped_at_call: bool,
}

/// Why a recording cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error(
        "no pool samples from {start} to {end} in the history store: widen --since or --until (the agent samples its pools every 10 s while it runs)"
    )]
    Empty {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    #[error("no pool named {name:?} in the history from {start} to {end}; pools there: {known}")]
    UnknownPool {
        name: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        known: String,
    },
    #[error(
        "{steps} steps of {step} in the span: at most {MAX_POINTS} points per curve; give a larger --step or a shorter span"
    )]
    TooManyPoints { steps: u64, step: HumanDuration },
    #[error("--until {end} is not after --since {start}; give a span that ends after it starts")]
    BackwardSpan {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// Turns `rec` into a scenario over `span`: pools chosen, their templates, demand curves,
/// initial members, crashes and jobs.
pub fn scenario(rec: &Recording, span: &Span) -> Result<Recorded, RecordError> {
    let buckets = buckets(span)?;
    let pools = chosen_pools(rec, span)?;
    let template_of = pool_templates(rec, &pools);
    let mut notes: BTreeMap<String, TemplateNotes> = BTreeMap::new();
    for (pool, (template, assumed)) in &template_of {
        let n = notes.entry(template.clone()).or_default();
        n.pools.push(pool.clone());
        n.assumed |= *assumed;
    }
    let templates = template_specs(rec, &mut notes);
    let curves = demand_curves(rec, span, buckets, &template_of, &templates);
    let mut out = Recorded {
        scenario: Scenario {
            duration: Some(HumanDuration(whole_ms(span.end - span.start))),
            seed: 1,
            templates,
            ..Scenario::default()
        },
        templates: notes,
        saturated: BTreeMap::new(),
        gaps: BTreeMap::new(),
    };
    for (template, curve) in curves {
        out.saturated.insert(template.clone(), curve.saturated);
        out.gaps.insert(template.clone(), curve.gaps);
        if !curve.points.is_empty() {
            out.scenario.load.push(LoadSpec {
                template,
                points: curve.points,
                noise: 0.0,
            });
        }
    }
    out.scenario.initial = initial(rec, &template_of);
    out.scenario.faults = crashes(rec, span, &template_of);
    out.scenario.jobs = jobs(rec, span, buckets, &template_of);
    Ok(out)
}

/// How many steps the span holds, within [`MAX_POINTS`].
fn buckets(span: &Span) -> Result<u64, RecordError> {
    if span.end <= span.start {
        return Err(RecordError::BackwardSpan {
            start: span.start,
            end: span.end,
        });
    }
    let total = whole_ms(span.end - span.start).as_millis();
    let step = span.step.as_millis().max(1);
    let steps = u64::try_from(total.div_ceil(step)).unwrap_or(u64::MAX);
    if steps > MAX_POINTS {
        return Err(RecordError::TooManyPoints {
            steps,
            step: HumanDuration(span.step),
        });
    }
    Ok(steps)
}

/// The pools to record: those asked for (each must have samples), else every one sampled.
fn chosen_pools(rec: &Recording, span: &Span) -> Result<BTreeSet<String>, RecordError> {
    let seen: BTreeSet<String> = rec.pool_samples.iter().map(|s| s.pool.clone()).collect();
    if seen.is_empty() {
        return Err(RecordError::Empty {
            start: span.start,
            end: span.end,
        });
    }
    if let Some(name) = span.pools.iter().find(|p| !seen.contains(*p)) {
        return Err(RecordError::UnknownPool {
            name: name.clone(),
            start: span.start,
            end: span.end,
            known: seen.iter().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    if span.pools.is_empty() {
        Ok(seen)
    } else {
        Ok(span.pools.iter().cloned().collect())
    }
}

/// Each pool's template: the one its created events name most, else `base` (assumed: true).
fn pool_templates(rec: &Recording, pools: &BTreeSet<String>) -> BTreeMap<String, (String, bool)> {
    pools
        .iter()
        .map(|pool| {
            let best = rec
                .templates
                .iter()
                .filter(|s| &s.pool == pool)
                .max_by_key(|s| (s.count, std::cmp::Reverse(s.value.clone())));
            let t = match best {
                Some(s) => (s.value.clone(), false),
                None => (
                    crate::emulator::scenario::DEFAULT_TEMPLATE.to_string(),
                    true,
                ),
            };
            (pool.clone(), t)
        })
        .collect()
}

/// Each template's shape (the most common among its pools' member samples) and boot time.
fn template_specs(
    rec: &Recording,
    notes: &mut BTreeMap<String, TemplateNotes>,
) -> BTreeMap<String, TemplateSpec> {
    let mut out = BTreeMap::new();
    for (template, n) in notes.iter_mut() {
        let mut spec = TemplateSpec::default();
        let shapes = rec.shapes.iter().filter(|s| n.pools.contains(&s.pool));
        let mut counts: BTreeMap<(u32, u64, u64), u64> = BTreeMap::new();
        for s in shapes {
            *counts
                .entry((s.cpu_count, s.mem_total, s.disk_total))
                .or_default() += s.count;
        }
        n.shape_samples = counts.values().sum();
        if let Some(((cpu, mem, disk), _)) = counts.into_iter().max_by_key(|(_, c)| *c) {
            spec.cpu_count = cpu.clamp(1, crate::emulator::limits::MAX_CPU_COUNT);
            spec.memory_mb = memory_mb(mem);
            spec.disk_mb = disk_mb(disk, spec.disk_mb);
        }
        let mut delays: Vec<i64> = rec
            .boots
            .iter()
            .filter(|b| n.pools.contains(&b.pool))
            .map(|b| b.millis.max(0))
            .collect();
        delays.sort_unstable();
        n.boots_timed = delays.len();
        // A created event stamped at the call, not when the sandbox was up (as the emulator
        // stamps it), says nothing of the boot: the default then, said so.
        n.stamped_at_call = delays.first().is_some_and(|d| *d < AT_CALL_MS);
        spec.boot = HumanDuration(match delays.get(delays.len() / 10) {
            Some(ms) if !n.stamped_at_call => {
                Duration::from_millis(u64::try_from(*ms).unwrap_or(0))
            }
            _ => DEFAULT_BOOT,
        });
        out.insert(template.clone(), spec);
    }
    out
}

/// Memory in MiB from what the guest reports, rounded up to a multiple of 128, within the
/// emulator's bounds.
fn memory_mb(mem_total: u64) -> u32 {
    use crate::emulator::limits::{MAX_MEMORY_MB, MIN_MEMORY_MB};
    let mib = mem_total.div_ceil(MIB).div_ceil(128) * 128;
    u32::try_from(mib)
        .unwrap_or(MAX_MEMORY_MB)
        .clamp(MIN_MEMORY_MB, MAX_MEMORY_MB)
}

/// Disk in MiB from what the guest reports; `default` when it reports none.
fn disk_mb(disk_total: u64, default: u32) -> u32 {
    if disk_total == 0 {
        return default;
    }
    u32::try_from(disk_total.div_ceil(MIB))
        .unwrap_or(u32::MAX)
        .clamp(1, crate::emulator::limits::MAX_DISK_MB)
}

/// A template's demand curve and what its comment says.
#[derive(Default)]
struct Curve {
    points: Vec<(HumanDuration, f64)>,
    saturated: Vec<(f64, f64)>,
    gaps: Vec<(f64, f64)>,
}

/// One pool's steps: time-weighted busy cores and covered seconds, and whether it was
/// saturated, per step.
struct Steps {
    busy: Vec<f64>,
    covered: Vec<f64>,
    saturated: Vec<bool>,
}

/// Each template's curve: its pools' steps summed; a step none of them covered is a gap.
fn demand_curves(
    rec: &Recording,
    span: &Span,
    n: u64,
    template_of: &BTreeMap<String, (String, bool)>,
    templates: &BTreeMap<String, TemplateSpec>,
) -> BTreeMap<String, Curve> {
    let mut out = BTreeMap::new();
    for (template, spec) in templates {
        let pools = template_of.iter().filter(|(_, (t, _))| t == template);
        let steps: Vec<Steps> = pools
            .map(|(pool, _)| pool_steps(rec, span, n, pool, spec.cpu_count))
            .collect();
        out.insert(template.clone(), curve(span, n, &steps));
    }
    out
}

/// A pool's samples spread over the steps, each held until the next, at most [`HOLD_MAX`]
/// (in whole milliseconds, so that a step's edge is exact).
fn pool_steps(rec: &Recording, span: &Span, n: u64, pool: &str, cpu_count: u32) -> Steps {
    let len = usize::try_from(n).unwrap_or(0);
    let mut s = Steps {
        busy: vec![0.0; len],
        covered: vec![0.0; len],
        saturated: vec![false; len],
    };
    let step = i64::try_from(span.step.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let end = (span.end - span.start).num_milliseconds();
    let hold = i64::try_from(HOLD_MAX.as_millis()).unwrap_or(i64::MAX);
    let samples: Vec<&PoolSample> = rec.pool_samples.iter().filter(|p| p.pool == pool).collect();
    for (i, p) in samples.iter().enumerate() {
        let from = (p.at - span.start).num_milliseconds().max(0);
        let next = samples
            .get(i + 1)
            .map_or(end, |q| (q.at - span.start).num_milliseconds());
        let to = next.min(from + hold).min(end);
        let capacity = f64::from(p.actual) * f64::from(cpu_count);
        let pegged = p.actual > 0 && p.busy_cores >= SATURATED * capacity;
        let mut t = from;
        while t < to {
            let k = usize::try_from(t / step)
                .unwrap_or(0)
                .min(len.saturating_sub(1));
            let until = ((t / step + 1) * step).min(to);
            let held = (until - t) as f64 / 1000.0;
            s.busy[k] += p.busy_cores * held;
            s.covered[k] += held;
            s.saturated[k] |= pegged;
            t = until;
        }
    }
    s
}

/// The steps of a template's pools as points at the middle of each step, with its
/// saturated spans and gaps.
fn curve(span: &Span, n: u64, pools: &[Steps]) -> Curve {
    let step = span.step.as_secs_f64();
    let end = secs(span.start, span.end);
    let mut c = Curve::default();
    for k in 0..usize::try_from(n).unwrap_or(0) {
        let from = k as f64 * step;
        let to = (from + step).min(end);
        let covered: Vec<&Steps> = pools.iter().filter(|p| p.covered[k] > 0.0).collect();
        if covered.is_empty() {
            extend(&mut c.gaps, from, to);
            continue;
        }
        let cores: f64 = covered.iter().map(|p| p.busy[k] / p.covered[k]).sum();
        if covered.iter().any(|p| p.saturated[k]) {
            extend(&mut c.saturated, from, to);
        }
        let mid = Duration::from_millis(((from + to) * 500.0).round() as u64);
        c.points.push((HumanDuration(mid), round3(cores)));
    }
    c
}

/// Adds `[from, to)` to spans, joined to the last one when they touch.
fn extend(spans: &mut Vec<(f64, f64)>, from: f64, to: f64) {
    match spans.last_mut() {
        Some(last) if last.1 >= from => last.1 = to,
        _ => spans.push((from, to)),
    }
}

/// Each pool's running members at its first sample, as initial sandboxes of the pool.
fn initial(rec: &Recording, template_of: &BTreeMap<String, (String, bool)>) -> Vec<InitialSpec> {
    let limit = u32::try_from(crate::emulator::limits::MAX_INITIAL_SANDBOXES).unwrap_or(u32::MAX);
    let mut left = limit;
    let mut out = Vec::new();
    for (pool, (template, _)) in template_of {
        let Some(first) = rec.pool_samples.iter().find(|s| &s.pool == pool) else {
            continue;
        };
        let count = first.actual.min(left);
        if count == 0 {
            continue;
        }
        left -= count;
        out.push(InitialSpec {
            template: template.clone(),
            count,
            metadata: Metadata::from([(crate::rules::POOL_KEY.to_string(), pool.clone())]),
            timeout: HumanDuration(Duration::from_secs(86_400)),
        });
    }
    out
}

/// Crashes of the pools' members (the events report's rule), one fault per time, template
/// and reason.
fn crashes(
    rec: &Recording,
    span: &Span,
    template_of: &BTreeMap<String, (String, bool)>,
) -> Vec<FaultSpec> {
    let mut grouped: BTreeMap<(u64, String, String), u32> = BTreeMap::new();
    for e in &rec.kills {
        let Some((template, _)) = e.pool.as_ref().and_then(|p| template_of.get(p)) else {
            continue;
        };
        if !crate::report::crashed(&e.event) || e.event.timestamp > span.end {
            continue;
        }
        let at = u64::try_from((e.event.timestamp - span.start).num_seconds()).unwrap_or(0);
        let reason = e.event.kill_reason().unwrap_or("unknown").to_string();
        *grouped.entry((at, template.clone(), reason)).or_default() += 1;
    }
    grouped
        .into_iter()
        .map(|((at, template, reason), kill)| FaultSpec {
            at: HumanDuration(Duration::from_secs(at)),
            kill: Some(kill.min(crate::emulator::limits::MAX_FAULT_KILLS)),
            template: Some(template),
            reason: Some(reason),
            api_error: None,
        })
        .collect()
}

/// Each pool's claims as a jobs curve: arrivals per second per step, at the step's middle,
/// and the mean hold (a claim still held counts until the end of the span).
fn jobs(
    rec: &Recording,
    span: &Span,
    n: u64,
    template_of: &BTreeMap<String, (String, bool)>,
) -> Vec<JobsSpec> {
    let step = span.step.as_secs_f64();
    let end = secs(span.start, span.end);
    let len = usize::try_from(n).unwrap_or(0);
    let mut out = Vec::new();
    for pool in template_of.keys() {
        let claims: Vec<&ClaimSpan> = rec.claims.iter().filter(|c| &c.pool == pool).collect();
        if claims.is_empty() {
            continue;
        }
        let mut arrivals = vec![0u64; len];
        let mut held = 0.0;
        for c in &claims {
            let t = secs(span.start, c.claimed_at).clamp(0.0, end);
            arrivals[((t / step) as usize).min(len.saturating_sub(1))] += 1;
            held += c.ended_at.map_or(end, |e| secs(span.start, e)) - t;
        }
        let hold = (held / claims.len() as f64).clamp(1.0, 86_400.0);
        let points = arrivals
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let from = k as f64 * step;
                let to = (from + step).min(end);
                let mid = Duration::from_millis(((from + to) * 500.0).round() as u64);
                let rate = (*a as f64 / (to - from).max(0.001)).min(MAX_JOB_RATE);
                (HumanDuration(mid), round3(rate))
            })
            .collect();
        out.push(JobsSpec {
            pool: pool.clone(),
            points,
            hold: HumanDuration(Duration::from_millis((hold * 1000.0).round() as u64)),
            wait: HumanDuration(Duration::from_secs(5)),
        });
    }
    out
}

/// Seconds from `start` to `t`.
fn secs(start: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    (t - start).num_milliseconds() as f64 / 1000.0
}

/// A span of time in whole milliseconds (zero when negative).
fn whole_ms(d: chrono::TimeDelta) -> Duration {
    Duration::from_millis(u64::try_from(d.num_milliseconds()).unwrap_or(0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

mod yaml;
pub use yaml::render;

#[cfg(test)]
mod tests;
