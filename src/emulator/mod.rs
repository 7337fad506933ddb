//! A local, E2B-compatible control plane.
//!
//! - [`core`]: pure state in virtual time (sandboxes, load model, events, webhooks, limits).
//! - [`scenario`]: the scenario file format that drives the load model.
//! - [`http`]: serves the core over E2B's HTTP API with axum, plus `/_emulator/*` controls.
//! - [`delivery`]: posts signed webhook deliveries, retrying with backoff.
//! - `limits`: the bounds on every number and duration a user gives the emulator.
//! - [`InProcess`]: the [`E2bApi`] trait over the core, with no HTTP, for `simulate` and tests.
//!
//! The emulator plays E2B: it uses `e2b` (the types and the API trait it serves) and the
//! helpers of floor 0 (`duration`, `files`, `sync`), never the engine, the agent or anything
//! else that drives it.

pub mod core;
pub mod delivery;
pub mod http;
pub(crate) mod limits;
pub mod scenario;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

pub use self::core::{Core, CoreConfig, Rejection};
use crate::e2b::{
    Connected, E2bApi, Error, EventQuery, LifecycleEvent, ListQuery, NewSandbox, NewWebhook, Page,
    Result, Sandbox, SandboxInfo, SandboxMetric, Webhook, WebhookPatch,
};
pub use http::{Clock, Emulator, EmulatorOptions, RunningEmulator};
pub use scenario::Scenario;

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Error {
        Error::from_status(
            r.status,
            r.message,
            r.retry_after.map(std::time::Duration::from_secs),
        )
    }
}

/// [`E2bApi`] straight over a shared [`Core`]: no HTTP, no clock. Calls act at the core's
/// current virtual time; whoever owns the core advances it.
#[derive(Clone)]
pub struct InProcess {
    core: Arc<Mutex<Core>>,
}

impl InProcess {
    pub fn new(core: Arc<Mutex<Core>>) -> Self {
        InProcess { core }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves the core as it was between two calls.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl E2bApi for InProcess {
    async fn create_sandbox(&self, req: &NewSandbox, idempotency_key: &str) -> Result<Sandbox> {
        Ok(self.core().create(req, true, Some(idempotency_key))?)
    }

    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>> {
        Ok(self.core().list(query)?)
    }

    async fn get_sandbox(&self, sandbox_id: &str) -> Result<SandboxInfo> {
        Ok(self.core().get(sandbox_id)?)
    }

    async fn kill_sandbox(&self, sandbox_id: &str) -> Result<()> {
        Ok(self.core().kill(sandbox_id)?)
    }

    async fn set_timeout(&self, sandbox_id: &str, timeout_secs: u64) -> Result<()> {
        Ok(self.core().set_timeout(sandbox_id, timeout_secs)?)
    }

    async fn pause_sandbox(&self, sandbox_id: &str) -> Result<()> {
        Ok(self.core().pause(sandbox_id)?)
    }

    async fn connect_sandbox(&self, sandbox_id: &str, timeout_secs: u64) -> Result<Connected> {
        let (sandbox, resumed) = self.core().connect(sandbox_id, timeout_secs)?;
        Ok(Connected { sandbox, resumed })
    }

    async fn sandbox_metrics(
        &self,
        sandbox_id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        Ok(self.core().metrics(sandbox_id, start, end)?)
    }

    async fn metrics_batch(
        &self,
        sandbox_ids: &[String],
    ) -> Result<BTreeMap<String, SandboxMetric>> {
        Ok(self.core().metrics_batch(sandbox_ids)?)
    }

    async fn events_page(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        Ok(self.core().events(sandbox_id, query)?)
    }

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook> {
        Ok(self.core().create_webhook(req)?)
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(self.core().list_webhooks())
    }

    async fn get_webhook(&self, webhook_id: &str) -> Result<Webhook> {
        Ok(self.core().get_webhook(webhook_id)?)
    }

    async fn update_webhook(&self, webhook_id: &str, patch: &WebhookPatch) -> Result<Webhook> {
        Ok(self.core().update_webhook(webhook_id, patch)?)
    }

    async fn delete_webhook(&self, webhook_id: &str) -> Result<()> {
        Ok(self.core().delete_webhook(webhook_id)?)
    }
}
