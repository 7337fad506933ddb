//! The E2B webhook receiver: `POST /webhooks/e2b`.
//!
//! In order, before anything else is done with a delivery:
//! 1. the body is read up to [`WebhookConfig::max_body`] bytes (413 beyond);
//! 2. `e2b-signature` is verified over the raw bytes, in either base64 alphabet, in constant
//!    time (401 when missing or wrong);
//! 3. the body is parsed strictly as one event, with no trailing bytes (400 otherwise): the
//!    signature is SHA-256(secret || body), so a body can be length-extended without knowing
//!    the secret, and only strict parsing stops that;
//! 4. a duplicate (same event id or `e2b-delivery-id`) is acknowledged and not processed again;
//! 5. the event is queued for the agent and acknowledged with 202 at once. A full queue answers
//!    503 so that E2B retries: nothing is lost.
//!
//! Errors are JSON `{"code", "message"}`. The secret never appears in a log line or a response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::mpsc;

use super::dedup::Dedup;
use crate::e2b::{LifecycleEvent, signature};

/// The receiver's settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub secret: SecretString,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"[redacted]")
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl WebhookConfig {
    pub fn new(secret: impl Into<String>) -> Self {
        WebhookConfig {
            secret: SecretString::from(secret.into()),
            max_body: 64 * 1024,
        }
    }
}

/// Delivery outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub accepted: AtomicU64,
    pub duplicate: AtomicU64,
    pub bad_signature: AtomicU64,
    pub malformed: AtomicU64,
    pub too_large: AtomicU64,
    pub queue_full: AtomicU64,
}

/// A snapshot of [`WebhookStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WebhookReport {
    pub accepted: u64,
    pub duplicate: u64,
    pub bad_signature: u64,
    pub malformed: u64,
    pub too_large: u64,
    pub queue_full: u64,
}

impl WebhookStats {
    pub fn report(&self) -> WebhookReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookReport {
            accepted: g(&self.accepted),
            duplicate: g(&self.duplicate),
            bad_signature: g(&self.bad_signature),
            malformed: g(&self.malformed),
            too_large: g(&self.too_large),
            queue_full: g(&self.queue_full),
        }
    }
}

/// A verified, new event, with the delivery it came in.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub event: LifecycleEvent,
    pub delivery_id: Option<String>,
    /// When the receiver took it (for webhook-to-action latency).
    pub received: std::time::Instant,
}

#[derive(Clone)]
struct Receiver {
    cfg: Arc<WebhookConfig>,
    tx: mpsc::Sender<Delivered>,
    dedup: Arc<Mutex<Dedup>>,
    stats: Arc<WebhookStats>,
    /// Woken on each accepted event, so the agent reacts at once instead of at its next tick.
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// The router serving `POST /webhooks/e2b`; verified events go to `tx`.
pub fn router(
    cfg: WebhookConfig,
    tx: mpsc::Sender<Delivered>,
    dedup: Arc<Mutex<Dedup>>,
    stats: Arc<WebhookStats>,
) -> Router {
    router_with_wake(cfg, tx, dedup, stats, None)
}

/// Like [`router`], notifying `wake` after each accepted event.
pub fn router_with_wake(
    cfg: WebhookConfig,
    tx: mpsc::Sender<Delivered>,
    dedup: Arc<Mutex<Dedup>>,
    stats: Arc<WebhookStats>,
    wake: Option<Arc<tokio::sync::Notify>>,
) -> Router {
    let limit = cfg.max_body;
    let r = Receiver {
        cfg: Arc::new(cfg),
        tx,
        dedup,
        stats,
        wake,
    };
    Router::new()
        .route("/webhooks/e2b", post(receive))
        // Read one byte more than allowed so that "too large" is ours to answer, in JSON.
        .layer(DefaultBodyLimit::max(limit + 1))
        .with_state(r)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

/// A fixed JSON answer, without building a JSON value per delivery.
fn status_json(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let received = std::time::Instant::now();
    let body = match body {
        Ok(b) if b.len() <= r.cfg.max_body => b,
        Ok(_) => {
            r.stats.too_large.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            r.stats.too_large.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
        Err(e) => {
            r.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {}", e.body_text()),
            );
        }
    };
    let sig = headers
        .get("e2b-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if sig.is_empty() || !signature::verify(r.cfg.secret.expose_secret(), &body, sig) {
        r.stats.bad_signature.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::UNAUTHORIZED, "missing or invalid e2b-signature");
    }
    let event: LifecycleEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            r.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                &format!("body is not one lifecycle event: {e}"),
            );
        }
    };
    let delivery_id = headers
        .get("e2b-delivery-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    {
        let mut d = r.dedup.lock().unwrap_or_else(|p| p.into_inner());
        let dup_delivery = delivery_id.as_deref().is_some_and(|id| d.contains(id));
        if dup_delivery || d.contains(&event.id) {
            drop(d);
            r.stats.duplicate.fetch_add(1, Ordering::Relaxed);
            return status_json(StatusCode::OK, r#"{"status":"duplicate"}"#);
        }
        // A queue slot is taken before the ids are remembered: with the queue full, the
        // delivery is refused with 503 and nothing is remembered, so E2B's retry is taken.
        let Ok(slot) = r.tx.try_reserve() else {
            drop(d);
            r.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = %event.id, "webhook queue full; asking E2B to retry");
            return error(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later");
        };
        d.insert(&event.id);
        if let Some(id) = &delivery_id {
            d.insert(id);
        }
        // Queued before the window's lock is let go: a copy of the window never holds an id
        // that is neither handled nor queued (see `Agent::persist`).
        slot.send(Delivered {
            event,
            delivery_id,
            received,
        });
    }
    r.stats.accepted.fetch_add(1, Ordering::Relaxed);
    if let Some(w) = &r.wake {
        w.notify_one();
    }
    status_json(StatusCode::ACCEPTED, r#"{"status":"accepted"}"#)
}
