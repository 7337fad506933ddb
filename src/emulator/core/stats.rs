//! Running totals and [`StatsReport`], what `GET /_emulator/stats`, `simulate` and the
//! benchmarks read.
//!
//! The counters only ever grow; they are added to where things happen (creates and kills
//! in `sandboxes.rs`, refusals in `quota.rs`, integrals in `load.rs`) and never drive a
//! decision of the core.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Core;
use super::load::Template;
use crate::e2b::SandboxState;

/// Running totals, in all and per template.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TemplateStats {
    pub sandbox_seconds: f64,
    pub unmet_core_seconds: f64,
    pub demand_core_seconds: f64,
    pub creates: u64,
    pub kills: u64,
}

/// What `GET /_emulator/stats` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub now: DateTime<Utc>,
    pub elapsed_s: f64,
    pub running: usize,
    pub paused: usize,
    pub sandbox_seconds: f64,
    pub unmet_core_seconds: f64,
    pub demand_core_seconds: f64,
    pub creates: u64,
    pub kills: u64,
    pub kills_by_reason: BTreeMap<String, u64>,
    pub events: usize,
    pub rejected_rate_limit: u64,
    pub rejected_concurrency: u64,
    pub templates: BTreeMap<String, TemplateReport>,
}

/// Per-template part of [`StatsReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateReport {
    /// Busy cores asked for right now.
    pub demand_cores: f64,
    /// Cores of booted, running sandboxes right now.
    pub capacity_cores: f64,
    pub running: usize,
    pub booting: usize,
    /// Mean of the latest CPU sample of its running sandboxes, in percent.
    pub avg_cpu_pct: f64,
    #[serde(flatten)]
    pub totals: TemplateStats,
}

/// The core's running totals.
#[derive(Default)]
pub(super) struct Counters {
    /// Over all templates.
    pub(super) totals: TemplateStats,
    /// Per template; a template appears once something happened to it.
    pub(super) per_template: BTreeMap<String, TemplateStats>,
    /// Kills by `kill_reason` (`request`, `timeout`, ...).
    kills_by_reason: BTreeMap<String, u64>,
    /// Creates refused by the create rate limit.
    pub(super) rejected_rate_limit: u64,
    /// Creates and resumes refused by the concurrency cap.
    pub(super) rejected_concurrency: u64,
}

impl Counters {
    pub(super) fn add_sandbox_seconds(&mut self, template: &str, secs: f64) {
        self.totals.sandbox_seconds += secs;
        if let Some(st) = self.per_template.get_mut(template) {
            st.sandbox_seconds += secs;
        } else {
            self.per_template.insert(
                template.to_string(),
                TemplateStats {
                    sandbox_seconds: secs,
                    ..Default::default()
                },
            );
        }
    }

    pub(super) fn count_create(&mut self, template: &str) {
        self.totals.creates += 1;
        self.per_template
            .entry(template.to_string())
            .or_default()
            .creates += 1;
    }

    pub(super) fn count_kill(&mut self, template: &str, reason: &str) {
        self.totals.kills += 1;
        self.per_template
            .entry(template.to_string())
            .or_default()
            .kills += 1;
        *self.kills_by_reason.entry(reason.to_string()).or_default() += 1;
    }
}

impl Core {
    /// Totals and the current state of the load model.
    pub fn stats(&self) -> StatsReport {
        let templates = self
            .templates
            .iter()
            .map(|(name, t)| (name.clone(), self.template_report(name, t)))
            .collect();
        let running = self.running_count();
        let c = &self.counters;
        StatsReport {
            now: self.now,
            elapsed_s: self.elapsed_s(self.now),
            running,
            paused: self.sandboxes.live.len() - running,
            sandbox_seconds: c.totals.sandbox_seconds,
            unmet_core_seconds: c.totals.unmet_core_seconds,
            demand_core_seconds: c.totals.demand_core_seconds,
            creates: c.totals.creates,
            kills: c.totals.kills,
            kills_by_reason: c.kills_by_reason.clone(),
            events: self.events.len(),
            rejected_rate_limit: c.rejected_rate_limit,
            rejected_concurrency: c.rejected_concurrency,
            templates,
        }
    }

    fn template_report(&self, name: &str, t: &Template) -> TemplateReport {
        let running = self
            .sandboxes
            .live
            .values()
            .filter(|s| s.template == name && s.state == SandboxState::Running)
            .count();
        let booted = *self.load.booted.get(name).unwrap_or(&0);
        let latest: Vec<f64> = self
            .sandboxes
            .live
            .values()
            .filter(|s| s.template == name && s.state == SandboxState::Running)
            .filter_map(|s| s.metrics.back().map(|m| m.cpu_used_pct))
            .collect();
        let avg_cpu_pct = if latest.is_empty() {
            0.0
        } else {
            latest.iter().sum::<f64>() / latest.len() as f64
        };
        TemplateReport {
            demand_cores: self.demand(name),
            capacity_cores: booted as f64 * f64::from(t.spec.cpu_count),
            running,
            booting: running.saturating_sub(booted),
            avg_cpu_pct,
            totals: self
                .counters
                .per_template
                .get(name)
                .cloned()
                .unwrap_or_default(),
        }
    }
}
