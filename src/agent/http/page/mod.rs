//! The status page for people (issue 12): `GET /` (pools, alerts, members, decisions and an
//! events timeline filterable by `?pool=&sandbox=`) and `GET /sandboxes/{id}` (one sandbox's
//! timeline, Pattern 1), plus the live stream `GET /api/v1/stream` ([`sse`]).
//!
//! The HTML is complete without JavaScript: every number, table and chart is rendered on the
//! server ([`render`], [`chart`]). One small inline script ([`assets`]) listens to the stream
//! and, on each published turn, fetches the same URL again and swaps the sections marked
//! `data-live` whose HTML changed. Nothing is loaded from elsewhere: the Content-Security-Policy
//! allows only this origin and the inline style and script carrying the response's nonce.
//!
//! This module gathers what a page shows ([`Snapshot`]) from the published [`Status`], the
//! claims ledger and the history store, and hands it to [`render`]. It only reads; it never
//! holds a lock while it awaits the store or sends the answer.
//!
//! [`Status`]: crate::agent::status::Status

mod assets;
mod chart;
mod render;
pub(crate) mod sse;

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};

use super::ServerState;
use crate::agent::control::LoggedDecision;
use crate::engine::{AlertPhase, ObservedSandbox, PoolState};
use crate::store::read::{self, AlertEpisode, EventFilter, StoredEvent};
use crate::store::{PoolSample, SandboxSample};
use crate::sync::lock;

/// How many of the newest decisions the page lists.
const DECISIONS: usize = 30;
/// How many events the timeline lists.
const EVENTS: u32 = 50;
/// How many members the table lists.
const MEMBERS: usize = 200;

/// Everything `GET /` shows, copied out of the agent at one moment.
pub(crate) struct Snapshot {
    /// The agent's time (sped up against a sped-up emulator).
    pub(crate) now: DateTime<Utc>,
    pub(crate) ready: bool,
    pub(crate) reason: String,
    pub(crate) dry_run: bool,
    pub(crate) ticks: u64,
    pub(crate) pools: Vec<PoolCard>,
    /// Alert instances firing now: (alert, subject, since, message from the history).
    pub(crate) firing: Vec<Firing>,
    /// Alert episodes firing or resolved in the last 24 h, newest first.
    pub(crate) episodes: Option<Vec<AlertEpisode>>,
    pub(crate) members: Vec<MemberRow>,
    /// The newest decisions, newest first.
    pub(crate) decisions: Vec<LoggedDecision>,
    /// The events timeline; `None` without a store.
    pub(crate) events: Option<Vec<StoredEvent>>,
    pub(crate) filter: Filter,
}

/// The events timeline's filter: `?pool=&sandbox=`.
#[derive(Default)]
pub(crate) struct Filter {
    pub(crate) pool: Option<String>,
    pub(crate) sandbox: Option<String>,
}

/// One pool as its card shows it.
pub(crate) struct PoolCard {
    pub(crate) name: String,
    pub(crate) actual: u32,
    pub(crate) pending: u32,
    pub(crate) claimed: usize,
    pub(crate) idle: usize,
    pub(crate) paused: usize,
    pub(crate) state: PoolState,
    /// Sizes and demand over the last hour, oldest first.
    pub(crate) history: Vec<PoolSample>,
}

/// One alert instance firing now.
pub(crate) struct Firing {
    pub(crate) alert: String,
    pub(crate) subject: String,
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) message: Option<String>,
}

/// One member in the members table.
pub(crate) struct MemberRow {
    pub(crate) sandbox: ObservedSandbox,
    pub(crate) pool: String,
    pub(crate) holder: Option<String>,
    /// The last hour's samples, oldest first.
    pub(crate) samples: Vec<SandboxSample>,
}

/// `GET /`: the status page; a 400 page for a parameter it does not take.
pub(crate) async fn index(
    State(s): State<ServerState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(k) = q
        .keys()
        .find(|k| !["pool", "sandbox"].contains(&k.as_str()))
    {
        let message = format!("unknown parameter {k:?}; this page takes pool and sandbox");
        return page(StatusCode::BAD_REQUEST, |n| render::problem(n, &message));
    }
    let filter = Filter {
        pool: q.get("pool").filter(|p| !p.is_empty()).cloned(),
        sandbox: q.get("sandbox").filter(|p| !p.is_empty()).cloned(),
    };
    let snapshot = snapshot(&s, filter).await;
    page(StatusCode::OK, |n| render::index(n, &snapshot))
}

/// `GET /sandboxes/{id}`: one sandbox's timeline; a 404 page when the history knows nothing
/// of it.
pub(crate) async fn sandbox(
    State(s): State<ServerState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => {
            let message = format!("{}; give it as percent-encoded UTF-8", e.body_text());
            return page(StatusCode::BAD_REQUEST, |n| render::problem(n, &message));
        }
    };
    let Some(h) = &s.history else {
        let message = "this agent keeps no history store, so it has no timelines";
        return page(StatusCode::SERVICE_UNAVAILABLE, |n| {
            render::problem(n, message)
        });
    };
    let now = (h.clock)();
    match read::timeline(h.history.pool(), &id).await {
        Ok(Some(t)) => page(StatusCode::OK, |n| render::timeline(n, &t, now)),
        Ok(None) => {
            let message = format!("the history has nothing about sandbox {id}");
            page(StatusCode::NOT_FOUND, |n| render::problem(n, &message))
        }
        Err(e) => {
            tracing::warn!(error = %e, "a history query failed");
            let message = format!("the history store cannot answer now: {e}");
            page(StatusCode::SERVICE_UNAVAILABLE, |n| {
                render::problem(n, &message)
            })
        }
    }
}

/// An HTML answer rendered with a fresh nonce, under a policy that allows nothing but this
/// origin and the inline style and script that carry the nonce.
fn page(code: StatusCode, body: impl FnOnce(&str) -> String) -> Response {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let html = body(&nonce);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    );
    let mut response = (code, html).into_response();
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::CACHE_CONTROL, "no-store".to_string()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (header::REFERRER_POLICY, "no-referrer".to_string()),
    ];
    for (name, value) in set {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

/// What the page shows now: the published status first (under its locks, copied), then the
/// history store's part.
async fn snapshot(s: &ServerState, filter: Filter) -> Snapshot {
    let now = s.history.as_ref().map_or_else(Utc::now, |h| (h.clock)());
    let readiness = lock(&s.status.health).readiness(Utc::now());
    let engine = lock(&s.status.engine).clone();
    let mut snapshot = Snapshot {
        now,
        ready: readiness.ready,
        reason: readiness.reason,
        dry_run: s.status.dry_run.load(std::sync::atomic::Ordering::Relaxed),
        ticks: s.status.ticks.load(std::sync::atomic::Ordering::Relaxed),
        pools: pool_cards(s, &engine.pools),
        firing: firing(&engine.alerts),
        episodes: None,
        members: members(s),
        decisions: newest_decisions(s),
        events: None,
        filter,
    };
    if let Some(h) = &s.history {
        read_history(h.history.pool(), &mut snapshot).await;
    }
    snapshot
}

/// Each pool the engine knows, with its counts from the status and the claims ledger.
fn pool_cards(s: &ServerState, pools: &BTreeMap<String, PoolState>) -> Vec<PoolCard> {
    let actual = lock(&s.status.actual).clone();
    let pending = lock(&s.status.pending).clone();
    let counts = s.claims.as_ref().map(|c| c.counts()).unwrap_or_default();
    pools
        .iter()
        .map(|(name, state)| {
            let c = counts.get(name);
            PoolCard {
                name: name.clone(),
                actual: actual.get(name).copied().unwrap_or(0),
                pending: pending.get(name).copied().unwrap_or(0),
                claimed: c.map_or(0, |c| c.claimed),
                idle: c.map_or(0, |c| c.idle),
                paused: c.map_or(0, |c| c.paused),
                state: state.clone(),
                history: Vec::new(),
            }
        })
        .collect()
}

/// The alert instances firing now, by alert and subject.
fn firing(alerts: &BTreeMap<String, BTreeMap<String, crate::engine::AlertState>>) -> Vec<Firing> {
    let mut out = Vec::new();
    for (alert, subjects) in alerts {
        for (subject, state) in subjects {
            if state.phase == AlertPhase::Firing {
                out.push(Firing {
                    alert: alert.clone(),
                    subject: subject.clone(),
                    since: state.fired_at,
                    message: None,
                });
            }
        }
    }
    out
}

/// The members the last tick observed (pools' only), each with its claim's holder.
fn members(s: &ServerState) -> Vec<MemberRow> {
    let observed = lock(&s.status.members).clone();
    let mut holders: HashMap<String, String> = HashMap::new();
    if let Some(claims) = &s.claims {
        for pool in observed.iter().filter_map(|m| m.pool()) {
            for c in claims.of_pool(pool).unwrap_or_default() {
                holders.insert(c.sandbox_id, c.holder);
            }
        }
    }
    let mut rows: Vec<MemberRow> = observed
        .into_iter()
        .filter_map(|m| {
            let pool = m.pool()?.to_string();
            Some(MemberRow {
                holder: holders.get(&m.id).cloned(),
                samples: current_sample(&m, &pool).into_iter().collect(),
                pool,
                sandbox: m,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.pool, a.sandbox.started_at).cmp(&(&b.pool, b.sandbox.started_at)));
    rows.truncate(MEMBERS);
    rows
}

/// A member's latest metric as observed, as a sample: the sparkline's newest point, before
/// the store has kept any.
fn current_sample(m: &ObservedSandbox, pool: &str) -> Option<SandboxSample> {
    let metric = m.metric.as_ref()?;
    Some(SandboxSample {
        sandbox_id: m.id.clone(),
        at: metric.timestamp,
        pool: Some(pool.to_string()),
        cpu_pct: metric.cpu_used_pct,
        cpu_count: metric.cpu_count,
        mem_used: metric.mem_used,
        mem_total: metric.mem_total,
        disk_used: metric.disk_used,
        disk_total: metric.disk_total,
    })
}

/// The newest [`DECISIONS`] decisions, newest first.
fn newest_decisions(s: &ServerState) -> Vec<LoggedDecision> {
    lock(&s.status.recent)
        .iter()
        .rev()
        .take(DECISIONS)
        .cloned()
        .collect()
}

/// Fills in what the history store knows: pools' last hour, members' samples, alert
/// episodes and their messages, the events timeline. A query that fails leaves its part
/// empty (logged): the page still shows the agent's own status.
async fn read_history(db: &sqlx::AnyPool, snap: &mut Snapshot) {
    let hour_ago = snap.now - TimeDelta::hours(1);
    let mut samples: HashMap<String, Vec<SandboxSample>> = HashMap::new();
    for card in &mut snap.pools {
        card.history = logged(read::pool_history(db, &card.name, hour_ago).await);
        for sample in logged(read::pool_member_samples(db, &card.name, hour_ago).await) {
            samples
                .entry(sample.sandbox_id.clone())
                .or_default()
                .push(sample);
        }
    }
    for m in &mut snap.members {
        let mut kept = samples.remove(&m.sandbox.id).unwrap_or_default();
        let newest = kept.last().map(|s| s.at);
        kept.extend(
            m.samples
                .drain(..)
                .filter(|c| newest.is_none_or(|t| c.at > t)),
        );
        m.samples = kept;
    }
    let day_ago = snap.now - TimeDelta::hours(24);
    let episodes = logged(read::alerts(db, read::AlertFilter::All, day_ago).await);
    for f in &mut snap.firing {
        f.message = episodes
            .iter()
            .find(|e| e.alert == f.alert && e.subject == f.subject && e.resolved_at.is_none())
            .map(|e| e.message.clone());
    }
    snap.episodes = Some(episodes);
    let filter = EventFilter {
        pool: snap.filter.pool.clone(),
        sandbox: snap.filter.sandbox.clone(),
        limit: EVENTS,
        ..EventFilter::default()
    };
    snap.events = Some(logged(read::events(db, &filter).await.map(|p| p.events)));
}

/// The rows a query gave, or none when it failed (logged).
fn logged<T>(result: Result<Vec<T>, sqlx::Error>) -> Vec<T> {
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "a history query for the status page failed");
        Vec::new()
    })
}
