//! The agent's HTTP server: `/healthz`, `/readyz` (ready after the first successful poll),
//! `/metrics` (Prometheus text format), `/api/v1/decisions`, `/api/v1/pools`, `/api/v1/alerts`,
//! and the webhook receiver. It listens on loopback unless told otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::control::LoggedDecision;
use super::webhooks::WebhookStats;
use crate::engine::{AlertPhase, EngineState};
use crate::notify::Dispatcher;

/// What the server shows, updated by the loop after each tick.
#[derive(Default)]
pub struct Status {
    pub ready: AtomicBool,
    pub ticks: AtomicU64,
    pub tick_failures: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// The last rule reload error, as `file:line:col: message` lines.
    pub last_reload_error: Mutex<Option<String>>,
    pub engine: Mutex<EngineState>,
    /// Running members per pool, as last observed.
    pub actual: Mutex<BTreeMap<String, u32>>,
    pub pending: Mutex<BTreeMap<String, u32>>,
    /// Actions by kind and outcome.
    pub actions: Mutex<BTreeMap<(String, String), u64>>,
    pub last_tick_seconds: Mutex<f64>,
    pub recent: Mutex<Arc<Mutex<VecDeque<LoggedDecision>>>>,
}

/// Everything the handlers read.
#[derive(Clone)]
pub struct ServerState {
    pub status: Arc<Status>,
    pub webhooks: Arc<WebhookStats>,
    pub notify: Option<Dispatcher>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The router; merge the webhook router into it when webhooks are on.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/decisions", get(decisions))
        .route("/api/v1/pools", get(pools))
        .route("/api/v1/alerts", get(alerts))
        .with_state(state)
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if s.status.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful poll yet\n",
        )
            .into_response()
    }
}

async fn decisions(State(s): State<ServerState>) -> Response {
    let recent = lock(&s.status.recent).clone();
    let list: Vec<LoggedDecision> = lock(&recent).iter().cloned().collect();
    Json(list).into_response()
}

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

async fn pools(State(s): State<ServerState>) -> Response {
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

async fn alerts(State(s): State<ServerState>) -> Response {
    Json(lock(&s.status.engine).alerts.clone()).into_response()
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(s): State<ServerState>) -> Response {
    let st = &s.status;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family("poolpilot_up", "gauge", "1 once the first poll succeeded.");
    let mut body = String::new();
    let _ = writeln!(
        body,
        "poolpilot_up {}",
        u8::from(st.ready.load(Ordering::Relaxed))
    );
    let engine = lock(&st.engine).clone();
    let actual = lock(&st.actual).clone();
    let pending = lock(&st.pending).clone();
    let _ = writeln!(
        body,
        "# HELP poolpilot_pool_size Pool sizes: desired (last decision), actual (running members), pending (creates in flight).\n# TYPE poolpilot_pool_size gauge"
    );
    for (name, p) in &engine.pools {
        let n = esc(name);
        if let Some(status) = &p.status {
            let _ = writeln!(
                body,
                "poolpilot_pool_size{{pool=\"{n}\",kind=\"desired\"}} {}",
                status.desired
            );
            let _ = writeln!(
                body,
                "poolpilot_pool_size{{pool=\"{n}\",kind=\"min\"}} {}",
                status.min
            );
            let _ = writeln!(
                body,
                "poolpilot_pool_size{{pool=\"{n}\",kind=\"max\"}} {}",
                status.max
            );
        }
        let _ = writeln!(
            body,
            "poolpilot_pool_size{{pool=\"{n}\",kind=\"actual\"}} {}",
            actual.get(name).copied().unwrap_or(0)
        );
        let _ = writeln!(
            body,
            "poolpilot_pool_size{{pool=\"{n}\",kind=\"pending\"}} {}",
            pending.get(name).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        body,
        "# HELP poolpilot_actions_total Actions by kind and result.\n# TYPE poolpilot_actions_total counter"
    );
    for ((kind, result), n) in lock(&st.actions).iter() {
        let _ = writeln!(
            body,
            "poolpilot_actions_total{{kind=\"{}\",result=\"{}\"}} {n}",
            esc(kind),
            esc(result)
        );
    }
    let _ = writeln!(
        body,
        "# HELP poolpilot_alerts_firing Alert instances firing, by alert.\n# TYPE poolpilot_alerts_firing gauge"
    );
    for (name, subjects) in &engine.alerts {
        let firing = subjects
            .values()
            .filter(|a| a.phase == AlertPhase::Firing)
            .count();
        let _ = writeln!(
            body,
            "poolpilot_alerts_firing{{alert=\"{}\"}} {firing}",
            esc(name)
        );
    }
    let _ = writeln!(
        body,
        "# HELP poolpilot_ticks_total Control loop turns, and those whose observation failed.\n# TYPE poolpilot_ticks_total counter"
    );
    let _ = writeln!(
        body,
        "poolpilot_ticks_total{{result=\"ok\"}} {}",
        st.ticks.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        body,
        "poolpilot_ticks_total{{result=\"failed\"}} {}",
        st.tick_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        body,
        "# HELP poolpilot_rule_evaluation_seconds Duration of the last control loop turn.\n# TYPE poolpilot_rule_evaluation_seconds gauge"
    );
    let _ = writeln!(
        body,
        "poolpilot_rule_evaluation_seconds {}",
        *lock(&st.last_tick_seconds)
    );
    let _ = writeln!(
        body,
        "# HELP poolpilot_rule_reloads_total Rule reloads by result.\n# TYPE poolpilot_rule_reloads_total counter"
    );
    let _ = writeln!(
        body,
        "poolpilot_rule_reloads_total{{result=\"ok\"}} {}",
        st.reloads.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        body,
        "poolpilot_rule_reloads_total{{result=\"failed\"}} {}",
        st.reload_failures.load(Ordering::Relaxed)
    );
    let w = s.webhooks.report();
    let _ = writeln!(
        body,
        "# HELP poolpilot_webhook_deliveries_total Webhook deliveries by outcome.\n# TYPE poolpilot_webhook_deliveries_total counter"
    );
    for (k, v) in [
        ("accepted", w.accepted),
        ("duplicate", w.duplicate),
        ("bad_signature", w.bad_signature),
        ("malformed", w.malformed),
        ("too_large", w.too_large),
        ("queue_full", w.queue_full),
    ] {
        let _ = writeln!(
            body,
            "poolpilot_webhook_deliveries_total{{outcome=\"{k}\"}} {v}"
        );
    }
    if let Some(d) = &s.notify {
        let _ = writeln!(
            body,
            "# HELP poolpilot_notifications_total Notifications by notifier and result.\n# TYPE poolpilot_notifications_total counter"
        );
        for (name, n) in d.stats() {
            let name = esc(&name);
            for (k, v) in [
                ("sent", n.sent),
                ("failed", n.failed),
                ("retried", n.retries),
                ("queue_full", n.queue_full),
            ] {
                let _ = writeln!(
                    body,
                    "poolpilot_notifications_total{{notifier=\"{name}\",result=\"{k}\"}} {v}"
                );
            }
        }
    }
    out.push_str(&body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
