//! The history half of the read API, answered from the history store ([`crate::store`]):
//! - `GET /api/v1/events?sandbox=&pool=&type=&since=&until=&limit=&cursor=`: lifecycle
//!   events, newest first, in pages (`next_cursor`);
//! - `GET /api/v1/sandboxes/{id}/timeline`: Pattern 1, everything known about one sandbox;
//! - `GET /api/v1/alerts?state=firing|resolved|all&since=`: alert episodes (without `state`,
//!   `/api/v1/alerts` answers the engine's alert states as before, in [`super::api`]);
//! - a pool's sizes over time, for `GET /api/v1/pools/{pool}` ([`pool_history`]).
//!
//! `since` and `until` take an RFC 3339 time or a duration back from now (`1h`, `7d`). A bad
//! parameter is a 400 naming it and what would be valid; a store that fails is a 503. These
//! handlers only read.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};

use super::{Segment, ServerState, error};
use crate::store::read::{self, AlertFilter, Cursor, EventFilter, MAX_LIMIT};
use crate::store::{Clock, History};

/// The store and the agent's clock, for `since=1h`.
#[derive(Clone)]
pub(crate) struct HistoryApi {
    pub(crate) history: History,
    pub(crate) clock: Clock,
}

/// A request's parameter that is wrong: what to say in the 400.
pub(crate) struct Bad(String);

impl IntoResponse for Bad {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// `GET /api/v1/events`.
pub(crate) async fn events(
    State(s): State<ServerState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(h) = &s.history else {
        return no_store();
    };
    let filter = match event_filter(&q, (h.clock)()) {
        Ok(f) => f,
        Err(bad) => return bad.into_response(),
    };
    match read::events(h.history.pool(), &filter).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// The filter a query string asks for.
fn event_filter(q: &HashMap<String, String>, now: DateTime<Utc>) -> Result<EventFilter, Bad> {
    known(
        q,
        &[
            "sandbox", "pool", "type", "since", "until", "limit", "cursor",
        ],
    )?;
    let types = q
        .get("type")
        .map(|t| {
            t.split(',')
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(full_type)
                .collect()
        })
        .unwrap_or_default();
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(&format!(
                    "limit {l:?} is not a number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let cursor = match q.get("cursor") {
        None => None,
        Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
            bad(&format!(
                "cursor {c:?} is not one this API gave; pass next_cursor from the previous page"
            ))
        })?),
    };
    let since = time_param(q, "since", now)?;
    let until = time_param(q, "until", now)?;
    if let (Some(s), Some(u)) = (since, until)
        && u < s
    {
        return Err(bad(&format!(
            "until ({}) is before since ({}): nothing can match; give until after since",
            u.to_rfc3339(),
            s.to_rfc3339()
        )));
    }
    Ok(EventFilter {
        sandbox: q.get("sandbox").cloned(),
        pool: q.get("pool").cloned(),
        types,
        since,
        until,
        limit,
        cursor,
    })
}

/// `killed` means `sandbox.lifecycle.killed`; a full type is taken as it is.
fn full_type(t: &str) -> String {
    if t.contains('.') {
        t.to_string()
    } else {
        format!("sandbox.lifecycle.{t}")
    }
}

/// `GET /api/v1/sandboxes/{id}/timeline`.
pub(crate) async fn timeline(State(s): State<ServerState>, Segment(id): Segment) -> Response {
    let Some(h) = &s.history else {
        return no_store();
    };
    match read::timeline(h.history.pool(), &id).await {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("the history has nothing about sandbox {id}"),
        ),
        Err(e) => store_failed(&e),
    }
}

/// `GET /api/v1/alerts?state=...`: alert episodes; `None` when `state` is absent (the
/// caller then answers the engine's alert states).
pub(crate) async fn alert_episodes(
    s: &ServerState,
    q: &HashMap<String, String>,
) -> Option<Response> {
    let state = q.get("state")?;
    let Some(h) = &s.history else {
        return Some(no_store());
    };
    let filter = match state.as_str() {
        "firing" => AlertFilter::Firing,
        "resolved" => AlertFilter::Resolved,
        "all" => AlertFilter::All,
        other => {
            return Some(
                bad(&format!(
                    "state {other:?} is not one of firing, resolved, all"
                ))
                .into_response(),
            );
        }
    };
    let now = (h.clock)();
    let since = match known(q, &["state", "since"]).and_then(|()| time_param(q, "since", now)) {
        Ok(s) => s.unwrap_or(now - TimeDelta::hours(24)),
        Err(bad) => return Some(bad.into_response()),
    };
    Some(match read::alerts(h.history.pool(), filter, since).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_failed(&e),
    })
}

/// A pool's sizes and demand since `since` (default: the last hour), for
/// `GET /api/v1/pools/{pool}`; empty without a store or when it fails (logged).
pub(crate) async fn pool_history(
    s: &ServerState,
    pool: &str,
    q: &HashMap<String, String>,
) -> Result<Vec<crate::store::PoolSample>, Bad> {
    let Some(h) = &s.history else {
        return Ok(Vec::new());
    };
    let now = (h.clock)();
    let since = time_param(q, "since", now)?.unwrap_or(now - TimeDelta::hours(1));
    match read::pool_history(h.history.pool(), pool, since).await {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a pool's history");
            Ok(Vec::new())
        }
    }
}

/// An RFC 3339 time, or a duration back from `now`.
fn time_param(
    q: &HashMap<String, String>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Bad> {
    let Some(v) = q.get(name) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    match v.parse::<crate::duration::HumanDuration>() {
        Ok(d) => Ok(Some(
            TimeDelta::from_std(d.0)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )),
        Err(_) => Err(bad(&format!(
            "{name} {v:?} is neither an RFC 3339 time (2026-11-27T10:00:00Z) nor a duration back from now (30m, 24h, 7d)"
        ))),
    }
}

/// A 400 for a parameter this endpoint does not take.
fn known(q: &HashMap<String, String>, names: &[&str]) -> Result<(), Bad> {
    match q.keys().find(|k| !names.contains(&k.as_str())) {
        Some(k) => Err(bad(&format!(
            "unknown parameter {k:?}; this endpoint takes {}",
            names.join(", ")
        ))),
        None => Ok(()),
    }
}

fn bad(message: &str) -> Bad {
    Bad(message.to_string())
}

fn no_store() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this agent keeps no history store",
    )
}

fn store_failed(e: &sqlx::Error) -> Response {
    tracing::warn!(error = %e, "a history query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the history store cannot answer now: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pairs: &[(&str, &str)]) -> Result<EventFilter, String> {
        let q = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        event_filter(&q, Utc::now()).map_err(|Bad(m)| m)
    }

    #[test]
    fn until_before_since_is_refused_and_extreme_times_are_not_errors() {
        let err = filter(&[("since", "1h"), ("until", "2h")]).expect_err("a 400");
        assert!(
            err.contains("until") && err.contains("before since"),
            "{err}"
        );
        let err = filter(&[
            ("since", "2030-01-01T00:00:00Z"),
            ("until", "2020-01-01T00:00:00Z"),
        ])
        .expect_err("a 400");
        assert!(err.contains("give until after since"), "{err}");
        for (since, until) in [
            ("99999999d", "9999-12-31T23:59:59Z"),
            ("0001-01-01T00:00:00Z", "1s"),
            ("9223372036854775807s", "0s"),
        ] {
            let f = filter(&[("since", since), ("until", until)]);
            assert!(f.is_ok(), "{since}..{until}: {:?}", f.err());
        }
    }

    #[test]
    fn the_last_page_has_no_next_cursor_as_documented() {
        let last = read::EventPage {
            events: Vec::new(),
            next_cursor: None,
        };
        let json = serde_json::to_value(&last).expect("JSON");
        assert_eq!(json, serde_json::json!({ "events": [] }));
    }
}
