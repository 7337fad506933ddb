//! `poolpilot simulate`: run rules against the emulator core in virtual time and report what
//! they would have cost and missed. Observations go through the same [`E2bApi`] calls the agent
//! makes (list, batch metrics, events), served in-process by [`InProcess`].
//!
//! Accounting: `sandbox_seconds` per pool integrates its running members; `unmet_core_seconds`
//! is the emulator's exact integral of demand above capacity per template (pools that share a
//! template share its figure; the total counts each template once).

pub mod floor;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::e2b::{E2bApi, EventQuery, SandboxState};
use crate::emulator::{Core, CoreConfig, InProcess, Scenario};
use crate::engine::{Action, AlertStatus, Decision, Engine, Observations};
use crate::observe::observe;
use crate::rules::RuleSet;

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Time between two engine steps (the agent's poll interval).
    pub tick: Duration,
    /// Used when the scenario has no `duration`.
    pub default_duration: Duration,
    pub core: CoreConfig,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            tick: Duration::from_secs(5),
            default_duration: Duration::from_secs(1800),
            core: CoreConfig::default(),
        }
    }
}

/// Totals for the whole run or one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub sandbox_seconds: f64,
    pub unmet_core_seconds: f64,
    pub peak_pool_size: u32,
    pub creates: u64,
    pub kills: u64,
    pub alerts_fired: u64,
    pub alerts_resolved: u64,
}

/// One sample of the run, for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub t_s: f64,
    /// Demand and capacity in cores, per template.
    pub demand: BTreeMap<String, f64>,
    pub capacity: BTreeMap<String, f64>,
    /// Running members per pool.
    pub pool_size: BTreeMap<String, u32>,
    /// Alerts firing (any subject).
    pub alerts_firing: u32,
}

/// A scale action, for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub t_s: f64,
    pub pool: String,
    /// Positive for creates, negative for kills.
    pub change: i64,
}

/// What `simulate` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub duration_s: f64,
    pub tick_s: f64,
    #[serde(flatten)]
    pub total: Totals,
    pub pools: BTreeMap<String, Totals>,
    pub create_failures: u64,
    pub dry_run_decisions: u64,
    #[serde(skip)]
    pub frames: Vec<Frame>,
    #[serde(skip)]
    pub marks: Vec<Mark>,
    #[serde(skip)]
    pub decisions: Vec<Decision>,
}

/// Runs `rules` against `scenario` and reports.
pub async fn simulate(rules: Arc<RuleSet>, scenario: &Scenario, opts: &SimOptions) -> SimReport {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_787_200, 0).unwrap_or_default(); // 2026-01-07T12:00Z, a Wednesday
    let core = Arc::new(Mutex::new(Core::new(opts.core.clone(), scenario, start)));
    let api = InProcess::new(core.clone());
    let duration = scenario
        .duration
        .map(|d| d.0)
        .unwrap_or(opts.default_duration);
    let tick = opts.tick.max(Duration::from_millis(100));
    let mut engine = Engine::new(rules.clone());
    let mut report = SimReport {
        duration_s: duration.as_secs_f64(),
        tick_s: tick.as_secs_f64(),
        total: Totals::default(),
        pools: rules
            .pools
            .iter()
            .map(|p| (p.name.clone(), Totals::default()))
            .collect(),
        create_failures: 0,
        dry_run_decisions: 0,
        frames: Vec::new(),
        marks: Vec::new(),
        decisions: Vec::new(),
    };
    let mut events_seen = 0u64;
    let mut firing: BTreeSet<(String, String)> = BTreeSet::new();
    let mut seq = 0u64;
    // Every sandbox's pool as last seen, to attribute alerts about sandboxes already gone.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    let steps = (duration.as_nanos() / tick.as_nanos()) as u64;
    for k in 0..=steps {
        let now = start + TimeDelta::from_std(tick * k as u32).unwrap_or_default();
        core.lock()
            .unwrap_or_else(|p| p.into_inner())
            .advance_to(now);
        let observed = observe(&api).await.unwrap_or_default();
        let events = api
            .all_events(
                None,
                &EventQuery {
                    offset: events_seen,
                    order_asc: true,
                    ..EventQuery::default()
                },
            )
            .await
            .unwrap_or_default();
        events_seen += events.len() as u64;
        for s in &observed {
            if let Some(p) = s.pool() {
                owners.insert(s.id.clone(), p.to_string());
            }
        }
        let pending = BTreeMap::new();
        let decisions = engine.step(
            now,
            &Observations {
                sandboxes: &observed,
                events: &events,
                pending_creates: &pending,
            },
        );
        let t_s = (now - start).as_seconds_f64();
        for d in &decisions {
            if d.dry_run {
                report.dry_run_decisions += 1;
                continue;
            }
            match &d.action {
                Action::Create { pool, count } => {
                    let Some(def) = rules.pool(pool) else {
                        continue;
                    };
                    let mut made = 0u64;
                    for _ in 0..*count {
                        seq += 1;
                        let mut req = def.create_request();
                        // Simulations outlive E2B's default timeout: members last the whole run.
                        req.timeout = Some(def.sandbox.timeout.map_or(24 * 3600, |t| t.as_secs()));
                        match api.create_sandbox(&req, &format!("sim-{seq}")).await {
                            Ok(_) => made += 1,
                            Err(_) => {
                                report.create_failures += 1;
                                break; // rate limit or cap: the next step decides again
                            }
                        }
                    }
                    report.total.creates += made;
                    if let Some(t) = report.pools.get_mut(pool) {
                        t.creates += made;
                    }
                    if made > 0 {
                        report.marks.push(Mark {
                            t_s,
                            pool: pool.clone(),
                            change: made as i64,
                        });
                    }
                }
                Action::Kill { pool, sandbox_ids } => {
                    let mut n = 0u64;
                    for id in sandbox_ids {
                        // Only sandboxes the pool owns, as the agent would.
                        let owned = observed
                            .iter()
                            .any(|s| &s.id == id && s.pool() == Some(pool.as_str()));
                        if owned && api.kill_sandbox(id).await.is_ok() {
                            n += 1;
                        }
                    }
                    report.total.kills += n;
                    if let Some(t) = report.pools.get_mut(pool) {
                        t.kills += n;
                    }
                    if n > 0 {
                        report.marks.push(Mark {
                            t_s,
                            pool: pool.clone(),
                            change: -(n as i64),
                        });
                    }
                }
                Action::SetTimeout {
                    sandbox_id,
                    timeout_s,
                    ..
                } => {
                    let _ = api.set_timeout(sandbox_id, *timeout_s).await;
                }
                Action::Pause { sandbox_id, .. } => {
                    let _ = api.pause_sandbox(sandbox_id).await;
                }
                Action::Alert(n) => {
                    // The pool an alert belongs to: the rule's, else the subject's (a pool name or
                    // a member sandbox).
                    let pool = rules
                        .alerts
                        .iter()
                        .find(|a| a.name == n.alert)
                        .and_then(|a| a.pool.clone())
                        .or_else(|| {
                            rules
                                .triggers
                                .iter()
                                .find(|t| t.name == n.alert)
                                .and_then(|t| t.pool.clone())
                        })
                        .or_else(|| rules.pool(&n.subject).map(|p| p.name.clone()))
                        .or_else(|| owners.get(&n.subject).cloned());
                    let counter = |t: &mut Totals| match (n.status, n.repeat) {
                        (AlertStatus::Firing, false) => t.alerts_fired += 1,
                        (AlertStatus::Resolved, _) => t.alerts_resolved += 1,
                        _ => {}
                    };
                    counter(&mut report.total);
                    if let Some(t) = pool.and_then(|p| report.pools.get_mut(&p)) {
                        counter(t);
                    }
                    // Trigger alerts are one-shot notices: only alert rules have a firing span.
                    if rules.alerts.iter().any(|a| a.name == n.alert) {
                        let key = (n.alert.clone(), n.subject.clone());
                        match n.status {
                            AlertStatus::Firing => {
                                firing.insert(key);
                            }
                            AlertStatus::Resolved => {
                                firing.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        report.decisions.extend(decisions);
        // Per-pool accounting over the coming tick, with the sizes after this step's actions.
        let after = observe(&api).await.unwrap_or_default();
        let stats = core.lock().unwrap_or_else(|p| p.into_inner()).stats();
        let mut frame = Frame {
            t_s,
            demand: BTreeMap::new(),
            capacity: BTreeMap::new(),
            pool_size: BTreeMap::new(),
            alerts_firing: firing.len() as u32,
        };
        for (name, t) in &stats.templates {
            if t.demand_cores > 0.0 || t.running > 0 {
                frame.demand.insert(name.clone(), t.demand_cores);
                frame.capacity.insert(name.clone(), t.capacity_cores);
            }
        }
        for pool in &rules.pools {
            let size = after
                .iter()
                .filter(|s| {
                    s.state == SandboxState::Running && s.pool() == Some(pool.name.as_str())
                })
                .count() as u32;
            frame.pool_size.insert(pool.name.clone(), size);
            if let Some(t) = report.pools.get_mut(&pool.name) {
                t.peak_pool_size = t.peak_pool_size.max(size);
                if k < steps {
                    t.sandbox_seconds += size as f64 * tick.as_secs_f64();
                }
            }
        }
        report.frames.push(frame);
    }
    let stats = core.lock().unwrap_or_else(|p| p.into_inner()).stats();
    report.total.sandbox_seconds = report.pools.values().map(|t| t.sandbox_seconds).sum();
    report.total.peak_pool_size = report
        .frames
        .iter()
        .map(|f| f.pool_size.values().sum::<u32>())
        .max()
        .unwrap_or(0);
    let mut templates_counted = BTreeSet::new();
    for pool in &rules.pools {
        let unmet = stats
            .templates
            .get(&pool.template)
            .map_or(0.0, |t| t.totals.unmet_core_seconds);
        if let Some(t) = report.pools.get_mut(&pool.name) {
            t.unmet_core_seconds = unmet;
        }
        if templates_counted.insert(pool.template.clone()) {
            report.total.unmet_core_seconds += unmet;
        }
    }
    report
}

/// A few lines for a person.
pub fn summary(r: &SimReport) -> String {
    let mut out = format!(
        "simulated {} in steps of {}: {:.0} sandbox-seconds, {:.0} unmet core-seconds, peak {} sandboxes, {} creates, {} kills, {} alerts fired, {} resolved",
        humantime::format_duration(Duration::from_secs_f64(r.duration_s)),
        humantime::format_duration(Duration::from_secs_f64(r.tick_s)),
        r.total.sandbox_seconds,
        r.total.unmet_core_seconds,
        r.total.peak_pool_size,
        r.total.creates,
        r.total.kills,
        r.total.alerts_fired,
        r.total.alerts_resolved
    );
    if r.create_failures > 0 {
        out.push_str(&format!(
            ", {} creates refused (rate limit or concurrency cap)",
            r.create_failures
        ));
    }
    if r.dry_run_decisions > 0 {
        out.push_str(&format!(
            ", {} dry-run decisions not carried out",
            r.dry_run_decisions
        ));
    }
    for (name, t) in &r.pools {
        out.push_str(&format!(
            "\n  pool {name}: {:.0} sandbox-seconds, {:.0} unmet core-seconds (template), peak {}, +{} -{}, alerts {} fired {} resolved",
            t.sandbox_seconds, t.unmet_core_seconds, t.peak_pool_size, t.creates, t.kills, t.alerts_fired, t.alerts_resolved
        ));
    }
    out
}
