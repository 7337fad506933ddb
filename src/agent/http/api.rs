//! `/readyz` (whether the agent can see E2B, by the rule in [`crate::agent::health`], with the
//! reason as JSON) and the read API: `/api/v1/decisions`, `/api/v1/pools`,
//! `/api/v1/pools/{pool}` (one pool now: its sizes, claims and recent decisions, and its
//! sizes over time from the history store) and `/api/v1/alerts`.
//!
//! Each handler copies what it shows out of the [`Status`](crate::agent::status::Status)
//! under its lock and answers from the copy: it never writes, and never holds a lock while
//! the answer is sent.

use crate::sync::lock;

use axum::Json;
use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Segment, ServerState};
use crate::agent::control::LoggedDecision;
use crate::agent::leader::Role;

/// `GET /readyz`: 200 when the agent can see E2B, 503 when not; the readiness as JSON. A
/// replica sharing a PostgreSQL store says its role too: a standby is ready (it serves the
/// read API), and one that cannot reach the store is not.
pub(super) async fn readyz(State(s): State<ServerState>) -> Response {
    let mut r = lock(&s.status.health).readiness(chrono::Utc::now());
    let role = lock(&s.status.role).clone();
    match &role {
        Some(Role::Standby { leader }) => {
            r.ready = true;
            r.reason = format!(
                "standing by; {} leads",
                leader.as_deref().unwrap_or("no replica yet")
            );
        }
        Some(Role::Unavailable { why }) => {
            r.ready = false;
            r.reason = why.clone();
        }
        Some(Role::Leader { .. }) | None => {}
    }
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::to_value(&r).unwrap_or_default();
    if let (Some(role), Some(map)) = (role, body.as_object_mut()) {
        map.insert(
            "replica".into(),
            serde_json::to_value(role).unwrap_or_default(),
        );
    }
    (code, Json(body)).into_response()
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

/// Each pool as `GET /api/v1/pools` shows it, by name.
fn pool_views(s: &ServerState) -> Vec<PoolView> {
    let engine = lock(&s.status.engine).clone();
    let actual = lock(&s.status.actual).clone();
    let pending = lock(&s.status.pending).clone();
    engine
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
        .collect()
}

/// `GET /api/v1/pools`: each pool's sizes, last recommendation and cooldowns.
pub(super) async fn pools(State(s): State<ServerState>) -> Response {
    Json(pool_views(&s)).into_response()
}

/// A pool's members as the claims service sees them.
#[derive(Serialize)]
struct ClaimCounts {
    claimed: usize,
    /// Running, unclaimed: a claim gets one at once.
    idle: usize,
    /// Paused, unclaimed: a claim would resume one.
    idle_paused: usize,
}

/// How many of a pool's newest decisions `GET /api/v1/pools/{pool}` shows.
const POOL_RECENT: usize = 20;

/// One pool as `GET /api/v1/pools/{pool}` shows it: the list's entry, its claims, and its
/// newest decisions, oldest first.
#[derive(Serialize)]
struct PoolDetail {
    #[serde(flatten)]
    pool: PoolView,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<ClaimCounts>,
    recent: Vec<LoggedDecision>,
    /// Sizes and demand over time (`?since=`, default the last hour), oldest first.
    history: Vec<crate::store::PoolSample>,
}

/// `GET /api/v1/pools/{pool}`: the pool now; 404 with the known pools' names when there is
/// no such pool.
pub(super) async fn pool(
    State(s): State<ServerState>,
    Segment(name): Segment,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut views = pool_views(&s);
    let Some(at) = views.iter().position(|v| v.name == name) else {
        let known: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        let known = if known.is_empty() {
            "none yet".to_string()
        } else {
            known.join(", ")
        };
        let message = format!("no pool named {name}; known: {known}");
        return super::error(StatusCode::NOT_FOUND, &message);
    };
    let claims = s.claims.as_ref().and_then(|c| c.counts().remove(&name));
    let history = match super::history::pool_history(&s, &name, &q).await {
        Ok(h) => h,
        Err(bad) => return bad.into_response(),
    };
    Json(PoolDetail {
        pool: views.swap_remove(at),
        claims: claims.map(|c| ClaimCounts {
            claimed: c.claimed,
            idle: c.idle,
            idle_paused: c.paused,
        }),
        recent: recent_of(&s, &name),
        history,
    })
    .into_response()
}

/// The pool's newest [`POOL_RECENT`] decisions in the shared buffer, oldest first.
fn recent_of(s: &ServerState, pool: &str) -> Vec<LoggedDecision> {
    let recent = lock(&s.status.recent);
    let mut mine: Vec<LoggedDecision> = recent
        .iter()
        .rev()
        .filter(|d| d.decision.rule == pool)
        .take(POOL_RECENT)
        .cloned()
        .collect();
    mine.reverse();
    mine
}

/// `GET /api/v1/alerts`: every alert instance, by alert and subject; with `?state=`, the
/// alert episodes of the history store ([`super::history::alert_episodes`]).
pub(super) async fn alerts(
    State(s): State<ServerState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(answer) = super::history::alert_episodes(&s, &q).await {
        return answer;
    }
    Json(lock(&s.status.engine).alerts.clone()).into_response()
}
