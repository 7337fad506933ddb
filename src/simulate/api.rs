//! E2B as the agent meets it, in virtual time: the in-process emulator behind the costs that a
//! real API has and the in-process one does not.
//!
//! - **Time.** The emulator core follows tokio's clock: before every call it is moved to
//!   `start + (tokio now - t0)`. On a paused runtime that clock is virtual, so the agent's
//!   timers, its create pacing and the latencies below all run in simulated time.
//! - **Create rate.** Creates are paced at the plan's rate by the same [`Pacer`] the HTTP
//!   client uses, so a pool grows as fast as E2B lets it (5 a second on Pro), no faster.
//! - **Latency.** A create answers after its template's boot time, as E2B's create returns a
//!   booted sandbox; a pause and a resume take the scenario's `latency`, or E2B's figures
//!   without one (4 s per GiB of memory, 1 s).
//!   The concurrency cap and every refusal are the emulator core's own.
//!
//! Never used by the live agent: only `simulate` and tests build one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use crate::e2b::retry::Pacer;
use crate::e2b::{
    Connected, E2bApi, EventQuery, LifecycleEvent, ListQuery, NewSandbox, NewWebhook, Page, Result,
    Sandbox, SandboxInfo, SandboxMetric, Webhook, WebhookPatch,
};
use crate::emulator::scenario::LatencySpec;
use crate::emulator::{Core, InProcess, Scenario};
use crate::sync::lock;

/// Boot time of a template the scenario does not describe (the emulator's default).
const DEFAULT_BOOT: Duration = Duration::from_secs(1);

/// The emulator core as a virtual-time E2B with its rate, cap and latencies.
pub struct Modeled {
    inner: InProcess,
    core: Arc<Mutex<Core>>,
    /// The core's time when tokio's clock read `t0`.
    start: DateTime<Utc>,
    t0: Instant,
    pacer: Pacer,
    /// Boot time and memory (MiB) by template id and alias.
    templates: BTreeMap<String, (Duration, u32)>,
    /// Pause and resume latency: the scenario's, else E2B's.
    latency: LatencySpec,
}

impl Modeled {
    /// Wraps `core`, whose clock reads `start` now; creates paced at `create_rate` a second.
    pub fn new(core: Arc<Mutex<Core>>, scenario: &Scenario, create_rate: f64) -> Modeled {
        let start = lock(&core).now();
        let mut templates = BTreeMap::new();
        for (name, t) in &scenario.templates {
            let spec = (t.boot.0, t.memory_mb);
            templates.insert(name.clone(), spec);
            if let Some(a) = &t.alias {
                templates.insert(a.clone(), spec);
            }
        }
        Modeled {
            inner: InProcess::new(core.clone()),
            core,
            start,
            t0: Instant::now(),
            pacer: Pacer::new(create_rate),
            templates,
            latency: scenario.latency.clone().unwrap_or_default(),
        }
    }

    /// The virtual wall clock: the core's start plus tokio's time since.
    pub fn now(&self) -> DateTime<Utc> {
        let since = Instant::now().saturating_duration_since(self.t0);
        self.start + TimeDelta::from_std(since).unwrap_or(TimeDelta::MAX)
    }

    /// Moves the core to the virtual now; everything due by then (samples, expiries, faults,
    /// webhooks) happens first.
    pub fn sync(&self) {
        let now = self.now();
        let mut core = lock(&self.core);
        if core.now() < now {
            core.advance_to(now);
        }
    }

    fn boot(&self, template: &str) -> Duration {
        self.templates.get(template).map_or(DEFAULT_BOOT, |t| t.0)
    }

    /// How long pausing `sandbox_id` takes: the pause latency per GiB of its template's memory.
    fn pause_time(&self, sandbox_id: &str) -> Duration {
        let template = lock(&self.core)
            .get(sandbox_id)
            .map(|s| s.template_id)
            .unwrap_or_default();
        let mib = self.templates.get(&template).map_or(512, |t| t.1);
        self.latency.pause(mib)
    }
}

#[async_trait]
impl E2bApi for Modeled {
    async fn create_sandbox(&self, req: &NewSandbox, key: &str) -> Result<Sandbox> {
        self.pacer.acquire().await;
        self.sync();
        let made = self.inner.create_sandbox(req, key).await?;
        tokio::time::sleep(self.boot(&req.template_id)).await;
        Ok(made)
    }

    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>> {
        self.sync();
        self.inner.list_sandboxes_page(query).await
    }

    async fn get_sandbox(&self, id: &str) -> Result<SandboxInfo> {
        self.sync();
        self.inner.get_sandbox(id).await
    }

    async fn kill_sandbox(&self, id: &str) -> Result<()> {
        self.sync();
        self.inner.kill_sandbox(id).await
    }

    async fn set_timeout(&self, id: &str, secs: u64) -> Result<()> {
        self.sync();
        self.inner.set_timeout(id, secs).await
    }

    async fn pause_sandbox(&self, id: &str) -> Result<()> {
        self.sync();
        let took = self.pause_time(id);
        self.inner.pause_sandbox(id).await?;
        tokio::time::sleep(took).await;
        Ok(())
    }

    async fn connect_sandbox(&self, id: &str, secs: u64) -> Result<Connected> {
        self.sync();
        let c = self.inner.connect_sandbox(id, secs).await?;
        if c.resumed {
            tokio::time::sleep(self.latency.resume.0).await;
        }
        Ok(c)
    }

    async fn sandbox_metrics(
        &self,
        id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        self.sync();
        self.inner.sandbox_metrics(id, start, end).await
    }

    async fn metrics_batch(&self, ids: &[String]) -> Result<BTreeMap<String, SandboxMetric>> {
        self.sync();
        self.inner.metrics_batch(ids).await
    }

    async fn events_page(
        &self,
        id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        self.sync();
        self.inner.events_page(id, query).await
    }

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook> {
        self.sync();
        self.inner.create_webhook(req).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.inner.list_webhooks().await
    }

    async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        self.inner.get_webhook(id).await
    }

    async fn update_webhook(&self, id: &str, patch: &WebhookPatch) -> Result<Webhook> {
        self.inner.update_webhook(id, patch).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<()> {
        self.inner.delete_webhook(id).await
    }
}
