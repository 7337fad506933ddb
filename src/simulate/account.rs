//! The books of a simulation: what the agent decided and what came of it, pool sizes over
//! time, and the emulator's own integrals of demand.
//!
//! Decisions are read from the agent's record of them ([`LoggedDecision`]), which carries the
//! outcome: a create decision is recorded when all its creates have returned, with the
//! sandboxes made, so a create refused by E2B's cap is counted as refused, not as made.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::world::World;
use super::{Frame, Mark, SimReport, Totals};
use crate::agent::act::ActionResult;
use crate::agent::control::{LoggedDecision, TickReport};
use crate::e2b::{E2bApi, ListQuery, SandboxState};
use crate::emulator::Core;
use crate::emulator::core::StatsReport;
use crate::engine::{Action, AlertNotice, AlertStatus};
use crate::rules::{POOL_KEY, RuleSet};
use crate::sync::lock;

/// The books, kept turn by turn.
pub struct Accounts {
    rules: std::sync::Arc<RuleSet>,
    start: DateTime<Utc>,
    tick: Duration,
    report: SimReport,
    /// The number of the newest decision record read, to read each record once.
    last_read: Option<u64>,
    /// (alert, subject) of the alert rules firing now.
    firing: BTreeSet<(String, String)>,
    /// Every sandbox's pool as last seen, to attribute alerts about sandboxes already gone.
    owners: BTreeMap<String, String>,
    /// Whether some alert or trigger has no pool of its own, so that its notices are
    /// attributed through `owners`; without one, the sandboxes are not listed every turn.
    needs_owners: bool,
    /// Create decisions whose creates had not all returned when read: the agent updates
    /// their record in place when they have, and they are booked then.
    sent: BTreeSet<u64>,
}

impl Accounts {
    pub fn new(
        rules: &std::sync::Arc<RuleSet>,
        start: DateTime<Utc>,
        duration: Duration,
        tick: Duration,
    ) -> Accounts {
        let report = SimReport {
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
            jobs: BTreeMap::new(),
            frames: Vec::new(),
            marks: Vec::new(),
            decisions: Vec::new(),
        };
        Accounts {
            rules: rules.clone(),
            start,
            tick,
            report,
            last_read: None,
            firing: BTreeSet::new(),
            owners: BTreeMap::new(),
            needs_owners: rules.alerts.iter().any(|a| a.pool.is_none())
                || rules.triggers.iter().any(|t| t.pool.is_none()),
            sent: BTreeSet::new(),
        }
    }

    /// After a tick: the decisions it recorded, and a frame with the pool sizes it observed;
    /// with `integrate`, those sizes are billed for the coming tick.
    pub async fn turn(&mut self, world: &World, report: &TickReport, integrate: bool) {
        if self.needs_owners {
            self.note_owners(world).await;
        }
        self.read_decisions(world);
        let t_s = (world.now() - self.start).as_seconds_f64();
        let (stats, unmanaged) = {
            let core = lock(&world.core);
            (core.stats(), unmanaged(&core, &self.rules))
        };
        let mut frame = Frame {
            t_s,
            demand: BTreeMap::new(),
            capacity: BTreeMap::new(),
            pool_size: BTreeMap::new(),
            unmanaged,
            alerts_firing: self.firing_names(),
        };
        for (name, t) in &stats.templates {
            if t.demand_cores > 0.0 || t.running > 0 {
                frame.demand.insert(name.clone(), t.demand_cores);
                frame.capacity.insert(name.clone(), t.capacity_cores);
            }
        }
        for pool in &self.rules.pools {
            let size = report.actual.get(&pool.name).copied().unwrap_or(0);
            frame.pool_size.insert(pool.name.clone(), size);
            if let Some(t) = self.report.pools.get_mut(&pool.name) {
                t.peak_pool_size = t.peak_pool_size.max(size);
                if integrate {
                    t.sandbox_seconds += f64::from(size) * self.tick.as_secs_f64();
                }
            }
        }
        self.report.frames.push(frame);
    }

    /// The names of the alert rules firing now, each once (a rule may fire for many subjects).
    fn firing_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self.firing.iter().map(|(alert, _)| alert).collect();
        names.into_iter().cloned().collect()
    }

    /// Remembers the pool of every sandbox that exists now.
    async fn note_owners(&mut self, world: &World) {
        let Ok(all) = world.api.list_sandboxes(&ListQuery::default()).await else {
            return;
        };
        for s in all {
            if let Some(p) = s.metadata.as_ref().and_then(|m| m.get(POOL_KEY)) {
                self.owners.insert(s.sandbox_id.clone(), p.clone());
            }
        }
    }

    /// Books every decision the agent recorded since the last read, and the creates whose
    /// outcome has come in since.
    pub fn read_decisions(&mut self, world: &World) {
        let (fresh, settled) = {
            let recent = lock(&world.agent.recent);
            let fresh: Vec<LoggedDecision> = recent
                .iter()
                .rev()
                .take_while(|d| Some(d.seq) != self.last_read)
                .cloned()
                .collect();
            let settled: Vec<LoggedDecision> = if self.sent.is_empty() {
                Vec::new()
            } else {
                recent
                    .iter()
                    .filter(|d| self.sent.contains(&d.seq) && d.result != ActionResult::Sent)
                    .cloned()
                    .collect()
            };
            (fresh, settled)
        };
        for d in settled {
            self.sent.remove(&d.seq);
            self.book(d);
        }
        if let Some(newest) = fresh.first() {
            self.last_read = Some(newest.seq);
        }
        for d in fresh.into_iter().rev() {
            if d.result == ActionResult::Sent {
                self.sent.insert(d.seq);
            } else {
                self.book(d);
            }
        }
    }

    fn book(&mut self, d: LoggedDecision) {
        let t_s = (d.decision.at - self.start).as_seconds_f64();
        if d.decision.dry_run {
            self.report.dry_run_decisions += 1;
        } else {
            match &d.decision.action {
                Action::Create { pool, count } => {
                    let made = d.sandbox_ids.len() as u64;
                    self.report.create_failures += u64::from(*count).saturating_sub(made);
                    self.scaled(pool, t_s, made as i64);
                }
                Action::Kill { pool, .. } => {
                    self.scaled(pool, t_s, -(d.sandbox_ids.len() as i64));
                }
                Action::Alert(n) => self.alerted(n),
                Action::SetTimeout { .. }
                | Action::Pause { .. }
                | Action::KeepAlive { .. }
                | Action::Note { .. } => {}
            }
        }
        self.report.decisions.push(d.decision);
    }

    /// Counts `change` sandboxes made (positive) or killed (negative) for `pool`, and marks it.
    fn scaled(&mut self, pool: &str, t_s: f64, change: i64) {
        if change == 0 {
            return;
        }
        let n = change.unsigned_abs();
        let bump = |t: &mut Totals| {
            if change > 0 {
                t.creates += n;
            } else {
                t.kills += n;
            }
        };
        bump(&mut self.report.total);
        if let Some(t) = self.report.pools.get_mut(pool) {
            bump(t);
        }
        self.report.marks.push(Mark {
            t_s,
            pool: pool.to_string(),
            change,
        });
    }

    /// Counts an alert notice for its pool, and tracks the firing spans of alert rules.
    fn alerted(&mut self, n: &AlertNotice) {
        let pool = self.alert_pool(n);
        let counter = |t: &mut Totals| match (n.status, n.repeat) {
            (AlertStatus::Firing, false) => t.alerts_fired += 1,
            (AlertStatus::Resolved, _) => t.alerts_resolved += 1,
            _ => {}
        };
        counter(&mut self.report.total);
        if let Some(t) = pool.and_then(|p| self.report.pools.get_mut(&p)) {
            counter(t);
        }
        // Trigger alerts are one-shot notices: only alert rules have a firing span.
        if self.rules.alerts.iter().any(|a| a.name == n.alert) {
            let key = (n.alert.clone(), n.subject.clone());
            match n.status {
                AlertStatus::Firing => {
                    self.firing.insert(key);
                }
                AlertStatus::Resolved => {
                    self.firing.remove(&key);
                }
            }
        }
    }

    /// The pool an alert belongs to: the rule's, else the subject's (a pool name or a member
    /// sandbox).
    fn alert_pool(&self, n: &AlertNotice) -> Option<String> {
        let rules = &self.rules;
        rules
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
            .or_else(|| self.owners.get(&n.subject).cloned())
    }

    /// The report: totals over pools, and per template the demand and what went unmet (the
    /// emulator's integrals in `books`, read at the last tick) against `floors`, the perfect-foresight floor of each template.
    pub fn finish(mut self, books: &StatsReport, floors: &BTreeMap<String, f64>) -> SimReport {
        let r = &mut self.report;
        r.total.sandbox_seconds = r.pools.values().map(|t| t.sandbox_seconds).sum();
        r.total.peak_pool_size = r
            .frames
            .iter()
            .map(|f| f.pool_size.values().sum::<u32>())
            .max()
            .unwrap_or(0);
        // Creates are booked when they return: put the decisions back in the order taken.
        r.decisions.sort_by_key(|d| d.at);
        self.book_templates(books, floors);
        self.report
    }

    /// Gives each pool its template's demand, floor and unmet demand, with the template's
    /// cost over its floor, and adds each template with a pool once to the total.
    fn book_templates(&mut self, books: &StatsReport, floors: &BTreeMap<String, f64>) {
        let r = &mut self.report;
        let mut on_template: BTreeMap<&str, f64> = BTreeMap::new();
        for pool in &self.rules.pools {
            let own = r.pools.get(&pool.name).map_or(0.0, |t| t.sandbox_seconds);
            *on_template.entry(pool.template.as_str()).or_default() += own;
        }
        let mut total = Totals::default();
        for (template, sandbox_seconds) in &on_template {
            let book = books.templates.get(*template).map(|t| &t.totals);
            let mut t = Totals {
                sandbox_seconds: *sandbox_seconds,
                floor_sandbox_seconds: floors.get(*template).copied().unwrap_or(0.0),
                demand_core_seconds: book.map_or(0.0, |b| b.demand_core_seconds),
                unmet_core_seconds: book.map_or(0.0, |b| b.unmet_core_seconds),
                ..Totals::default()
            };
            set_ratios(&mut t);
            for pool in self.rules.pools.iter().filter(|p| p.template == *template) {
                if let Some(p) = r.pools.get_mut(&pool.name) {
                    p.floor_sandbox_seconds = t.floor_sandbox_seconds;
                    p.cost_vs_floor = t.cost_vs_floor;
                    p.demand_core_seconds = t.demand_core_seconds;
                    p.unmet_core_seconds = t.unmet_core_seconds;
                    p.unmet_pct = t.unmet_pct;
                }
            }
            total.floor_sandbox_seconds += t.floor_sandbox_seconds;
            total.demand_core_seconds += t.demand_core_seconds;
            total.unmet_core_seconds += t.unmet_core_seconds;
        }
        r.total.floor_sandbox_seconds = total.floor_sandbox_seconds;
        r.total.demand_core_seconds = total.demand_core_seconds;
        r.total.unmet_core_seconds = total.unmet_core_seconds;
        set_ratios(&mut r.total);
    }
}

/// The running sandboxes in `core` that no pool of `rules` owns, read from the core itself
/// (not through the modeled API, whose faults and clock are the agent's).
fn unmanaged(core: &Core, rules: &RuleSet) -> u32 {
    let mut query = ListQuery {
        states: vec![SandboxState::Running],
        ..ListQuery::default()
    };
    let mut count = 0;
    loop {
        let Ok(page) = core.list(&query) else {
            return count;
        };
        count += page
            .items
            .iter()
            .filter(|s| {
                let pool = s.metadata.as_ref().and_then(|m| m.get(POOL_KEY));
                pool.is_none_or(|p| rules.pool(p).is_none())
            })
            .count() as u32;
        match page.next_token {
            Some(t) if Some(&t) != query.next_token.as_ref() => query.next_token = Some(t),
            _ => return count,
        }
    }
}

/// `cost_vs_floor` and `unmet_pct` from the sums they divide, absent where the divisor is 0.
fn set_ratios(t: &mut Totals) {
    t.cost_vs_floor =
        (t.floor_sandbox_seconds > 0.0).then(|| t.sandbox_seconds / t.floor_sandbox_seconds);
    t.unmet_pct =
        (t.demand_core_seconds > 0.0).then(|| t.unmet_core_seconds / t.demand_core_seconds * 100.0);
}
