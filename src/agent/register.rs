//! Self-registration of the agent's webhook with E2B, idempotent: the webhook is found by name
//! or URL and patched into shape, or created when there is none. Running it twice changes
//! nothing; moving the agent to a new URL updates the same webhook.

use crate::e2b::{E2bApi, EventType, NewWebhook, Result, Webhook, WebhookPatch};

/// Makes sure E2B delivers every lifecycle event to `url`, signed with `secret`.
pub async fn register_webhook(
    api: &dyn E2bApi,
    name: &str,
    url: &str,
    secret: &str,
) -> Result<Webhook> {
    let events: Vec<EventType> = EventType::KNOWN.to_vec();
    let existing = api.list_webhooks().await?;
    let found = existing
        .iter()
        .find(|w| w.name == name)
        .or_else(|| existing.iter().find(|w| w.url == url));
    match found {
        Some(w) => {
            let patch = WebhookPatch {
                name: Some(name.to_string()),
                url: Some(url.to_string()),
                enabled: Some(true),
                events: Some(events),
                // The secret is never shown by E2B, so it is always set: it may have changed.
                signature_secret: Some(secret.to_string()),
            };
            let updated = api.update_webhook(&w.id, &patch).await?;
            tracing::info!(webhook = %updated.id, url, "webhook registration updated");
            Ok(updated)
        }
        None => {
            let created = api
                .create_webhook(&NewWebhook {
                    name: name.to_string(),
                    url: url.to_string(),
                    enabled: true,
                    events,
                    signature_secret: secret.to_string(),
                })
                .await?;
            tracing::info!(webhook = %created.id, url, "webhook registered");
            Ok(created)
        }
    }
}
