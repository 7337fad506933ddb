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

/// One `{name}` segment of a route's path, as text. A segment that is not percent-encoded
/// UTF-8 is a JSON 400 like any other bad input, where axum's own rejection is plain text.
pub(crate) struct Segment(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(s)) => Ok(Segment(s)),
            Err(e) => Err(error(
                axum::http::StatusCode::BAD_REQUEST,
                &format!("{}; give it as percent-encoded UTF-8", e.body_text()),
            )),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    async fn answer(uri: &str) -> (u16, String, String) {
        let app = Router::new().route("/x/{id}", get(|Segment(id): Segment| async move { id }));
        let req = axum::http::Request::builder()
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        let kind = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_segment_that_is_not_utf8_is_a_json_400() {
        assert_eq!(answer("/x/a%20b").await.2, "a b");
        let (status, kind, body) = answer("/x/%FF").await;
        assert_eq!((status, kind.as_str()), (400, "application/json"), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["code"], 400);
        assert!(v["message"].as_str().unwrap().contains("UTF-8"), "{body}");
    }
}
