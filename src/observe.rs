//! One observation of E2B, shared by the agent and `simulate`: every sandbox with its latest
//! metrics sample. It only reads; deciding what the observation means is the engine's job.

use crate::e2b::{E2bApi, ListQuery, SandboxState};
use crate::engine::ObservedSandbox;

/// Every sandbox with its latest sample, as the agent observes them: the list endpoint page by
/// page, then the batch metrics endpoint in chunks of 100. A failed list is an error (no
/// observation at all); failed metrics leave the sandboxes without samples, which the engine
/// treats as missing data.
pub async fn observe(api: &dyn E2bApi) -> Result<Vec<ObservedSandbox>, crate::e2b::Error> {
    let listed = api.list_sandboxes(&ListQuery::default()).await?;
    let ids: Vec<String> = listed
        .iter()
        .filter(|s| s.state == SandboxState::Running)
        .map(|s| s.sandbox_id.clone())
        .collect();
    let mut metrics = match api.latest_metrics(&ids).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read metrics; treating them as missing");
            Default::default()
        }
    };
    Ok(listed
        .into_iter()
        .map(|s| ObservedSandbox {
            metric: metrics.remove(&s.sandbox_id),
            id: s.sandbox_id,
            template: s.template_id,
            started_at: s.started_at,
            end_at: s.end_at,
            state: s.state,
            metadata: s.metadata.unwrap_or_default(),
        })
        .collect())
}
