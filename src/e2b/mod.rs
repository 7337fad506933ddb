//! The E2B API: wire types, typed errors, webhook signatures, and the [`E2bApi`] trait with
//! its HTTP implementation.
//!
//! Only this module (and the emulator, which plays E2B's part) knows E2B's URLs and JSON
//! shapes. Everything above it talks to [`E2bApi`], so the engine and the agent run the same
//! against the real API over HTTP or against the emulator's core in-process.
//!
//! Paging and batching live here once, as provided methods over the page-sized calls, so
//! every implementation follows `X-Next-Token` to the end, splits metric batches into chunks
//! of at most 100 ids, and walks the offset-paginated events API the same way.

pub mod client;
pub mod error;
pub mod retry;
pub mod signature;
pub mod types;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use client::{ClientConfig, HttpClient, RequestObserver};
pub use error::{Error, Result};
pub use types::*;

/// Most sandbox ids E2B accepts in one batch metrics request.
pub const METRICS_BATCH_MAX: usize = 100;
/// Largest page E2B serves for lists and events.
pub const PAGE_MAX: u32 = 100;

/// The calls poolpilot makes to E2B.
#[async_trait]
pub trait E2bApi: Send + Sync {
    /// Creates a sandbox. `idempotency_key` (1-255 of `[a-z0-9-]`) makes a retried create
    /// return the first one's sandbox instead of creating a second.
    async fn create_sandbox(&self, req: &NewSandbox, idempotency_key: &str) -> Result<Sandbox>;

    /// One page of `GET /v2/sandboxes`.
    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>>;

    async fn get_sandbox(&self, sandbox_id: &str) -> Result<SandboxInfo>;

    async fn kill_sandbox(&self, sandbox_id: &str) -> Result<()>;

    /// Makes the sandbox end `timeout_secs` seconds from now.
    async fn set_timeout(&self, sandbox_id: &str, timeout_secs: u64) -> Result<()>;

    async fn pause_sandbox(&self, sandbox_id: &str) -> Result<()>;

    /// Resumes a paused sandbox, or extends a running one's timeout.
    async fn connect_sandbox(&self, sandbox_id: &str, timeout_secs: u64) -> Result<Connected>;

    /// Samples of one sandbox between `start` and `end` (Unix seconds; None = unbounded).
    async fn sandbox_metrics(
        &self,
        sandbox_id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>>;

    /// The latest sample of each of at most [`METRICS_BATCH_MAX`] sandboxes; sandboxes with
    /// no sample yet are absent.
    async fn metrics_batch(
        &self,
        sandbox_ids: &[String],
    ) -> Result<BTreeMap<String, SandboxMetric>>;

    /// One page of lifecycle events: the team's (`sandbox_id` None) or one sandbox's.
    async fn events_page(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>>;

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook>;
    async fn list_webhooks(&self) -> Result<Vec<Webhook>>;
    async fn get_webhook(&self, webhook_id: &str) -> Result<Webhook>;
    async fn update_webhook(&self, webhook_id: &str, patch: &WebhookPatch) -> Result<Webhook>;
    async fn delete_webhook(&self, webhook_id: &str) -> Result<()>;

    /// Every sandbox matching `query`, following `X-Next-Token` to the last page.
    async fn list_sandboxes(&self, query: &ListQuery) -> Result<Vec<SandboxInfo>> {
        let mut q = query.clone();
        let mut all = Vec::new();
        loop {
            let page = self.list_sandboxes_page(&q).await?;
            all.extend(page.items);
            match page.next_token {
                // A server that hands back the token it was given would loop forever.
                Some(t) if Some(&t) != q.next_token.as_ref() => q.next_token = Some(t),
                _ => return Ok(all),
            }
        }
    }

    /// The latest sample of each sandbox, in requests of at most [`METRICS_BATCH_MAX`] ids.
    async fn latest_metrics(
        &self,
        sandbox_ids: &[String],
    ) -> Result<BTreeMap<String, SandboxMetric>> {
        let mut all = BTreeMap::new();
        for chunk in sandbox_ids.chunks(METRICS_BATCH_MAX) {
            all.extend(self.metrics_batch(chunk).await?);
        }
        Ok(all)
    }

    /// Every event from `query.offset` on (the team's, or one sandbox's), page by page
    /// until an empty page, as E2B documents.
    async fn all_events(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        let mut q = query.clone();
        q.limit = q.limit.clamp(1, PAGE_MAX);
        let mut all = Vec::new();
        loop {
            let events = self.events_page(sandbox_id, &q).await?;
            if events.is_empty() {
                return Ok(all);
            }
            q.offset += events.len() as u64;
            all.extend(events);
        }
    }
}
