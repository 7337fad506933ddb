//! Webhook delivery: POSTs each queued event to its webhook with E2B's four headers, the
//! signature in the standard base64 alphabet without padding, retrying failures with
//! exponential backoff. The delivery id stays the same across retries, so receivers can
//! deduplicate on it; retries mean duplicates and out-of-order arrival, as with E2B.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::core::Delivery;
use crate::e2b::signature;

/// How deliveries are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry.
    pub backoff: Duration,
    /// Limit of one POST.
    pub timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Delivery outcomes, shown at `GET /_emulator/stats`.
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
}

/// A snapshot of `DeliveryStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    pub in_flight: u64,
}

impl DeliveryStats {
    pub(crate) fn report(&self) -> DeliveryReport {
        DeliveryReport {
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Receives deliveries and posts each in its own task until the channel closes.
pub(crate) async fn run(
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    policy: DeliveryPolicy,
    stats: Arc<DeliveryStats>,
) {
    let http = match reqwest::Client::builder().timeout(policy.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; deliveries are off");
            return;
        }
    };
    while let Some(d) = rx.recv().await {
        let (http, policy, stats) = (http.clone(), policy.clone(), stats.clone());
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let ok = deliver(&http, &d, &policy, &stats).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            let counter = if ok { &stats.delivered } else { &stats.failed };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }
}

async fn deliver(
    http: &reqwest::Client,
    d: &Delivery,
    policy: &DeliveryPolicy,
    stats: &DeliveryStats,
) -> bool {
    let sig = signature::sign(&d.secret, &d.body);
    let mut wait = policy.backoff;
    for attempt in 1..=policy.max_attempts.max(1) {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let result = http
            .post(&d.url)
            .header("content-type", "application/json")
            .header("e2b-webhook-id", &d.webhook_id)
            .header("e2b-delivery-id", &d.delivery_id)
            .header("e2b-signature-version", "v1")
            .header("e2b-signature", &sig)
            .body(d.body.clone())
            .send()
            .await;
        match result {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::warn!(
                webhook = %d.webhook_id, delivery = %d.delivery_id, status = r.status().as_u16(), attempt,
                "webhook delivery refused"
            ),
            Err(e) => tracing::warn!(
                webhook = %d.webhook_id, delivery = %d.delivery_id, error = %e, attempt,
                "webhook delivery failed"
            ),
        }
        if attempt < policy.max_attempts {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
    false
}
