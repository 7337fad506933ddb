//! The agent's HTTP side, one file per job:
//! - [`accept`]: the accept loop: header timeouts, a connection limit that makes room for new
//!   clients, the open files limit. It never reads a request or knows a route;
//! - [`api`]: `/healthz`, `/readyz` and the read API (`/api/v1/decisions`, `/pools`,
//!   `/pools/{pool}`, `/alerts`);
//! - [`history`]: the read API's history, from the history store (`/api/v1/events`,
//!   `/sandboxes/{id}/timeline`, `/alerts?state=`, a pool's sizes over time);
//! - [`metrics`]: `/metrics` in Prometheus text format; [`http_metrics`] the request
//!   durations of both APIs (the E2B client's calls, and every route here through the
//!   [`timed`] layer), [`process_metrics`] the standard `process_*` families;
//! - [`webhooks`]: the signed E2B webhook receiver, `POST /webhooks/e2b`;
//! - [`page`]: the status page for people, `GET /` and `GET /sandboxes/{id}`, live through
//!   `GET /api/v1/stream` (Server-Sent Events);
//! - [`claims`]: the claims API (hand-out, renew, release, shared pick), guarded by a token,
//!   and [`claim_metrics`] its families in `/metrics`.
//!
//! Apart from webhooks and claims, every handler only reads: what it shows comes from the [`Status`] the loop publishes (see
//! [`super::status`]) and from counters the client, receiver and notifiers keep. The server
//! listens on loopback unless told otherwise.

pub(crate) mod accept;
mod api;
mod claim_metrics;
pub(crate) mod claims;
pub(crate) mod history;
mod http_metrics;
pub(crate) mod metrics;
mod page;
mod process_metrics;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use super::status::Status;
use crate::notify::Dispatcher;
pub(crate) use http_metrics::timed;
use metrics::ApiMetrics;
use webhooks::WebhookStats;

/// Everything the handlers read.
#[derive(Clone)]
pub(crate) struct ServerState {
    pub(crate) status: Arc<Status>,
    pub(crate) api: Arc<ApiMetrics>,
    pub(crate) webhooks: Arc<WebhookStats>,
    pub(crate) notify: Option<Dispatcher>,
    /// Claims, for their gauges and counters in `/metrics`.
    pub(crate) claims: Option<Arc<crate::agent::claims::Claims>>,
    pub(crate) budget: std::sync::Arc<crate::agent::budget::Budget>,
    /// The history store, for the history half of the read API.
    pub(crate) history: Option<history::HistoryApi>,
}

/// An error answer as every poolpilot endpoint gives it: the status, and the JSON body
/// `{"code": <status>, "message": "..."}` saying what is wrong and what would be valid.
pub(crate) fn error(status: axum::http::StatusCode, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

/// The read-only routes; merge the webhook router into it when webhooks are on.
pub(crate) fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/decisions", get(api::decisions))
        .route("/api/v1/pools", get(api::pools))
        .route("/api/v1/pools/{pool}", get(api::pool))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/events", get(history::events))
        .route("/api/v1/sandboxes/{id}/timeline", get(history::timeline))
        .route("/", get(page::index))
        .route("/sandboxes/{id}", get(page::sandbox))
        .route("/api/v1/stream", get(page::sse::stream))
        .with_state(state)
}
