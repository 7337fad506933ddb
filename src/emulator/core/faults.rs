//! Things that go wrong on purpose: API faults (injected through `/_emulator/faults` or
//! scheduled by the scenario) and the scenario's kills of random sandboxes.
//!
//! A fault answers a request before the core sees it; it never changes state itself. Kill
//! victims are drawn from the seeded `rng`, so the same seed kills the same sandboxes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Core, Rejection, later};
use crate::e2b::{SandboxState, kill_reason};
use crate::emulator::scenario::{ApiErrorSpec, DEFAULT_TEMPLATE, FaultSpec, Scenario};

/// An active API fault: requests matching `path` get `status` until `until`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiFault {
    pub status: u16,
    pub until: Option<DateTime<Utc>>,
    /// Requests left to fail, when counted rather than timed.
    pub remaining: Option<u64>,
    pub path: Option<String>,
    /// Only requests with this method (e.g. `POST`); all when absent.
    pub method: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiFault {
    /// Whether the fault answers a request at `now`: not run out, and its path and method match.
    fn matches(&self, now: DateTime<Utc>, method: &str, path: &str) -> bool {
        self.until.is_none_or(|u| u > now)
            && self.remaining.is_none_or(|r| r > 0)
            && self.path.as_deref().is_none_or(|p| path.starts_with(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| method.is_empty() || m.eq_ignore_ascii_case(method))
    }
}

/// The scenario's scheduled faults and the API faults in force.
pub(super) struct Faults {
    /// The scenario's faults, by index: [`super::Task::Fault`] names one.
    scheduled: Vec<FaultSpec>,
    /// API faults in force, first match wins; run-out ones are pruned as time moves.
    api: Vec<ApiFault>,
}

impl Faults {
    pub(super) fn new(scenario: &Scenario) -> Faults {
        Faults {
            scheduled: scenario.faults.clone(),
            api: Vec::new(),
        }
    }

    /// Drops the API faults that have run out by `now`.
    pub(super) fn prune(&mut self, now: DateTime<Utc>) {
        self.api
            .retain(|f| f.until.is_none_or(|u| u > now) && f.remaining.is_none_or(|r| r > 0));
    }
}

impl Core {
    /// [`super::Task::Fault`]: kills sandboxes or starts an API fault, as the scenario says.
    pub(super) fn run_scenario_fault(&mut self, index: usize) {
        let Some(f) = self.faults.scheduled.get(index).cloned() else {
            return;
        };
        if let Some(n) = f.kill {
            let tpl = f.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
            let reason = f.reason.as_deref().unwrap_or(kill_reason::UNKNOWN);
            self.kill_random(tpl, n as usize, reason);
        }
        if let Some(e) = f.api_error {
            self.add_api_fault_spec(&e);
        }
    }

    fn add_api_fault_spec(&mut self, e: &ApiErrorSpec) {
        self.faults.api.push(ApiFault {
            status: e.status,
            // A fault that outlasts chrono's range lasts for good.
            until: later(self.now, e.duration.0),
            remaining: None,
            path: e.path.clone(),
            method: None,
            retry_after: e.retry_after.or((e.status == 429).then_some(1)),
        });
    }

    /// Kills up to `n` running sandboxes of a template, chosen by the seeded draw.
    fn kill_random(&mut self, template: &str, n: usize, reason: &str) -> Vec<String> {
        let mut candidates: Vec<u64> = self
            .sandboxes
            .live
            .values()
            .filter(|s| s.template == template && s.state == SandboxState::Running)
            .map(|s| s.key)
            .collect();
        self.rng.shuffle(&mut candidates);
        candidates
            .into_iter()
            .take(n)
            .filter_map(|k| self.kill_key(k, reason))
            .collect()
    }

    /// Makes requests fail: `count` requests, or for `duration`, or both (whichever ends first).
    pub(crate) fn inject_api_fault(&mut self, mut fault: ApiFault, duration: Option<Duration>) {
        if let Some(d) = duration {
            // A fault that outlasts chrono's range lasts for good.
            fault.until = later(self.now, d);
        }
        if fault.status == 429 && fault.retry_after.is_none() {
            fault.retry_after = Some(1);
        }
        self.faults.api.push(fault);
    }

    /// The fault, if any, that answers a request to `path` now; counts it down.
    #[cfg(test)]
    pub(crate) fn api_fault_for(&mut self, path: &str) -> Option<Rejection> {
        self.api_fault_for_request("", path)
    }

    /// The fault, if any, that answers a request with this method to `path` now (an empty
    /// method matches any fault); counts it down.
    pub(crate) fn api_fault_for_request(&mut self, method: &str, path: &str) -> Option<Rejection> {
        let now = self.now;
        let f = self
            .faults
            .api
            .iter_mut()
            .find(|f| f.matches(now, method, path))?;
        if let Some(r) = &mut f.remaining {
            *r -= 1;
        }
        let message = match f.status {
            429 => "Rate limit exceeded".to_string(),
            503 => "Service unavailable: injected fault".to_string(),
            s => format!("Injected fault: status {s}"),
        };
        let mut r = Rejection::new(f.status, message);
        r.retry_after = f.retry_after;
        Some(r)
    }
}
