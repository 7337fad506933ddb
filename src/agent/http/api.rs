//! `/readyz` (whether the agent can see E2B, by the rule in [`crate::agent::health`], with the
//! reason as JSON) and the read API: `/api/v1/decisions`, `/api/v1/pools`, `/api/v1/alerts`.
//!
//! Each handler copies what it shows out of the [`Status`](crate::agent::status::Status)
//! under its lock and answers from the copy: it never writes, and never holds a lock while
//! the answer is sent.

use crate::sync::lock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ServerState;
use crate::agent::control::LoggedDecision;

/// `GET /readyz`: 200 when the agent can see E2B, 503 when not; the readiness as JSON.
pub(super) async fn readyz(State(s): State<ServerState>) -> Response {
    let r = lock(&s.status.health).readiness(chrono::Utc::now());
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

/// `GET /api/v1/decisions`: the newest decisions, oldest first, with what came of each.
pub(super) async fn decisions(State(s): State<ServerState>) -> Response {
    let list: Vec<LoggedDecision> = lock(&s.status.recent).iter().cloned().collect();
    Json(list).into_response()
}

/// One pool as `GET /api/v1/pools` shows it.
#[derive(Serialize)]
struct PoolView {
    name: String,
    actual: u32,
    pending_creates: u32,
    #[serde(flatten)]
    status: Option<crate::engine::PoolStatus>,
    cooldown_up_until: Option<chrono::DateTime<chrono::Utc>>,
    cooldown_down_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api/v1/pools`: each pool's sizes, last recommendation and cooldowns.
pub(super) async fn pools(State(s): State<ServerState>) -> Response {
    let engine = lock(&s.status.engine).clone();
    let actual = lock(&s.status.actual).clone();
    let pending = lock(&s.status.pending).clone();
    let views: Vec<PoolView> = engine
        .pools
        .iter()
        .map(|(name, p)| PoolView {
            name: name.clone(),
            actual: actual.get(name).copied().unwrap_or(0),
            pending_creates: pending.get(name).copied().unwrap_or(0),
            status: p.status.clone(),
            cooldown_up_until: p.cooldown_up_until,
            cooldown_down_until: p.cooldown_down_until,
        })
        .collect();
    Json(views).into_response()
}

/// `GET /api/v1/alerts`: every alert instance, by alert and subject.
pub(super) async fn alerts(State(s): State<ServerState>) -> Response {
    Json(lock(&s.status.engine).alerts.clone()).into_response()
}
