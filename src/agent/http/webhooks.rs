//! The E2B webhook receiver: `POST /webhooks/e2b`.
//!
//! In order, before anything else is done with a delivery:
//! 1. the body is read up to [`WebhookConfig::max_body`] bytes (413 beyond), within
//!    [`WebhookConfig::body_timeout`] (408 after, so a slow sender cannot hold a connection);
//! 2. `e2b-signature` is verified over the raw bytes, in either base64 alphabet, in constant
//!    time (401 when missing or wrong);
//! 3. the body is parsed strictly as exactly one event and nothing else, not even whitespace
//!    (400 otherwise). The signature is SHA-256(secret || body), so anyone holding one signed
//!    body can sign that body followed by SHA-256 padding and any bytes they like. The padding
//!    starts with byte 0x80, so an extension is never valid JSON whitespace and serde would
//!    refuse it anyway; we refuse every trailing byte regardless, because E2B sends the event
//!    alone and a rule with no exception is one a reader can check;
//! 4. the event must have a plausible id (at most [`dedup::MAX_ID_LEN`] printable bytes) and a
//!    timestamp no more than [`dedup::MAX_CLOCK_SKEW`] ahead (400 otherwise);
//! 5. the dedup window decides (see [`dedup`] for why this is exactly once): a
//!    duplicate, or an event older than the horizon, is acknowledged with 200 and not processed;
//!    a full window answers 503 so that E2B retries;
//! 6. the event is queued for the agent and acknowledged with 202 at once. A full queue answers
//!    503 so that E2B retries: nothing is lost.
//!
//! Errors are JSON `{"code", "message"}`. The secret never appears in a log line or a response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::agent::dedup::{self, Dedup, Verdict};
use crate::e2b::{LifecycleEvent, signature};

/// Where the receiver reads the time (to refuse events from the future): the wall clock, or a
/// test's.
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The receiver's settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub(crate) secret: SecretString,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
    /// How long the body may take to arrive once the headers have: a sender slower than this
    /// gets 408 and its connection closed, instead of holding it open.
    pub body_timeout: Duration,
    pub clock: Clock,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"[redacted]")
            .field("max_body", &self.max_body)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

impl WebhookConfig {
    pub fn new(secret: impl Into<String>) -> Self {
        WebhookConfig {
            secret: SecretString::from(secret.into()),
            max_body: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            clock: Arc::new(chrono::Utc::now),
        }
    }
}

/// Delivery outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicate: AtomicU64,
    pub(crate) bad_signature: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    /// Older than the dedup horizon: acknowledged, not processed.
    pub(crate) stale: AtomicU64,
    /// The dedup window was full of live ids: asked to retry.
    pub(crate) window_full: AtomicU64,
    /// The body did not arrive within the body timeout.
    pub(crate) timeout: AtomicU64,
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
    pub stale: u64,
    pub window_full: u64,
    pub timeout: u64,
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
            stale: g(&self.stale),
            window_full: g(&self.window_full),
            timeout: g(&self.timeout),
        }
    }
}

impl WebhookReport {
    /// Every outcome with its count, by the `outcome` label `/metrics` gives it.
    pub(crate) fn outcomes(&self) -> [(&'static str, u64); 9] {
        [
            ("accepted", self.accepted),
            ("duplicate", self.duplicate),
            ("bad_signature", self.bad_signature),
            ("malformed", self.malformed),
            ("too_large", self.too_large),
            ("queue_full", self.queue_full),
            ("stale", self.stale),
            ("window_full", self.window_full),
            ("timeout", self.timeout),
        ]
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
pub(crate) fn router_with_wake(
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

/// A fixed JSON answer, without building a JSON value per delivery.
fn status_json(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A JSON error that also closes the connection: after a body timeout the rest of the body
/// may still be on its way, and reading it is what the sender wants.
fn error_closing(status: StatusCode, message: &str) -> Response {
    let mut r = error(status, message);
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, req: Request) -> Response {
    let received = std::time::Instant::now();
    let body = match read_body(&r, req).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let (event, delivery_id) = match verify_and_parse(&r, &headers, &body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    take(&r, event, delivery_id, received)
}

/// Step 1: the body, whole, within the size limit and the body timeout.
async fn read_body(r: &Receiver, req: Request) -> Result<Bytes, Response> {
    let too_large = || {
        r.stats.too_large.fetch_add(1, Ordering::Relaxed);
        error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")
    };
    match tokio::time::timeout(r.cfg.body_timeout, Bytes::from_request(req, &())).await {
        Ok(Ok(b)) if b.len() <= r.cfg.max_body => Ok(b),
        Ok(Ok(_)) => Err(too_large()),
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
        Ok(Err(e)) => {
            r.stats.malformed.fetch_add(1, Ordering::Relaxed);
            Err(error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read body: {}", e.body_text()),
            ))
        }
        Err(_) => {
            r.stats.timeout.fetch_add(1, Ordering::Relaxed);
            Err(error_closing(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s",
                    r.cfg.body_timeout.as_secs_f64()
                ),
            ))
        }
    }
}

/// Steps 2 to 4: the signature over the raw bytes, then exactly one plausible event.
fn verify_and_parse(
    r: &Receiver,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(LifecycleEvent, Option<String>), Box<Response>> {
    let sig = headers
        .get("e2b-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if sig.is_empty() || !signature::verify(r.cfg.secret.expose_secret(), body, sig) {
        r.stats.bad_signature.fetch_add(1, Ordering::Relaxed);
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing or invalid e2b-signature",
        )));
    }
    let malformed = |message: &str| {
        r.stats.malformed.fetch_add(1, Ordering::Relaxed);
        Box::new(error(StatusCode::BAD_REQUEST, message))
    };
    let event = parse_exactly_one(body).map_err(|m| malformed(&m))?;
    if !dedup::valid_id(&event.id) {
        return Err(malformed(&format!(
            "event id must be 1 to {} printable ASCII characters without spaces",
            dedup::MAX_ID_LEN
        )));
    }
    let delivery_id = match headers.get("e2b-delivery-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(id)) if dedup::valid_id(id) => Some(id.to_string()),
        Some(_) => {
            return Err(malformed(&format!(
                "e2b-delivery-id must be 1 to {} printable ASCII characters without spaces",
                dedup::MAX_ID_LEN
            )));
        }
    };
    Ok((event, delivery_id))
}

/// The body as one lifecycle event with nothing before or after it, whitespace included.
fn parse_exactly_one(body: &[u8]) -> Result<LifecycleEvent, String> {
    let mut events = serde_json::Deserializer::from_slice(body).into_iter::<LifecycleEvent>();
    let event = match events.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(format!("body is not one lifecycle event: {e}")),
        None => return Err("body is empty; expected one lifecycle event".into()),
    };
    let end = events.byte_offset();
    if body.first().is_some_and(u8::is_ascii_whitespace) || end != body.len() {
        return Err(format!(
            "body must be exactly one JSON event, with no bytes before or after it \
             (not even whitespace); found {} extra",
            body.len().saturating_sub(end)
                + body.iter().take_while(|b| b.is_ascii_whitespace()).count()
        ));
    }
    Ok(event)
}

/// Steps 5 and 6: the dedup window's verdict, then a queue slot, then the id is remembered.
fn take(
    r: &Receiver,
    event: LifecycleEvent,
    delivery_id: Option<String>,
    received: std::time::Instant,
) -> Response {
    let now = (r.cfg.clock)();
    let slot = {
        let mut d = crate::sync::lock(&r.dedup);
        let verdict = d.check_delivery(&event.id, event.timestamp, now);
        if verdict != Verdict::New {
            drop(d);
            return not_new(r, verdict, &event);
        }
        // A queue slot is taken before the id is remembered: with the queue full, the
        // delivery is refused with 503 and nothing is remembered, so E2B's retry is taken.
        let Ok(slot) = r.tx.try_reserve() else {
            drop(d);
            return queue_full(r, &event);
        };
        d.remember(&event.id, event.timestamp);
        slot
    };
    slot.send(Delivered {
        event,
        delivery_id,
        received,
    });
    r.stats.accepted.fetch_add(1, Ordering::Relaxed);
    if let Some(w) = &r.wake {
        w.notify_one();
    }
    status_json(StatusCode::ACCEPTED, r#"{"status":"accepted"}"#)
}

/// The answer to an event the dedup window did not take as new, counted by why.
fn not_new(r: &Receiver, verdict: Verdict, event: &LifecycleEvent) -> Response {
    match verdict {
        // `take` takes a new event and never asks here; were it to, not taking it again is safe.
        Verdict::Duplicate | Verdict::New => {
            r.stats.duplicate.fetch_add(1, Ordering::Relaxed);
            status_json(StatusCode::OK, r#"{"status":"duplicate"}"#)
        }
        Verdict::Stale => {
            r.stats.stale.fetch_add(1, Ordering::Relaxed);
            status_json(StatusCode::OK, r#"{"status":"stale"}"#)
        }
        Verdict::BadId => {
            r.stats.malformed.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::BAD_REQUEST, "event id is not a valid id")
        }
        Verdict::Future => {
            r.stats.malformed.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "event timestamp {} is more than {} minutes ahead of this host's clock",
                    event.timestamp,
                    dedup::MAX_CLOCK_SKEW.num_minutes()
                ),
            )
        }
        Verdict::Full => {
            r.stats.window_full.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "dedup window full of recent events; retry later",
            )
        }
    }
}

/// The answer when the agent's queue is full: 503, so that E2B retries.
fn queue_full(r: &Receiver, event: &LifecycleEvent) -> Response {
    // Logged once per burst, not per delivery: a flood must not become a log flood.
    if r.stats
        .queue_full
        .fetch_add(1, Ordering::Relaxed)
        .is_multiple_of(1000)
    {
        tracing::warn!(event = %event.id, "webhook queue full; asking E2B to retry (logged once per 1,000)");
    }
    error(StatusCode::SERVICE_UNAVAILABLE, "busy; retry later")
}
