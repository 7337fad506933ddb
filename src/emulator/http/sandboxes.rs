//! The sandbox endpoints: create (v1 and v2, with Idempotency-Key), list (v1 and v2 with
//! its cursor and `X-Total-Running`), get, kill, metrics (one sandbox or a batch), timeout,
//! pause, resume and connect (v1 and v2).
//!
//! Handlers only parse and answer; every rule of E2B's (defaults aside) lives in the core.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Emulator;
use super::extract::{Body, Id, Query, Res, parse_json, parse_optional_json, reply};
use crate::e2b::{ListQuery, NewSandbox, Order, SandboxState};
use crate::emulator::core::Rejection;

/// Lifetime a v2 connect gives when the body has no `timeout` (E2B's default).
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 300;
/// Lifetime a resume gives when the body has no `timeout` (E2B's `ResumedSandbox` default).
const DEFAULT_RESUME_TIMEOUT_SECS: u64 = 15;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            Rejection::bad_request("Idempotency-Key must be 1 to 255 characters of [a-z0-9-]")
        }),
    }
}

pub(super) async fn create_v2(
    State(emu): State<Emulator>,
    headers: HeaderMap,
    Body(body): Body,
) -> Res {
    let req: NewSandbox = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let sbx = emu.with_core(|c| c.create(&req, true, key.as_deref()))?;
    Ok(reply(StatusCode::CREATED, &sbx))
}

pub(super) async fn create_v1(State(emu): State<Emulator>, Body(body): Body) -> Res {
    let req: NewSandbox = parse_json(&body)?;
    let sbx = emu.with_core(|c| c.create(&req, false, None))?;
    Ok(reply(StatusCode::CREATED, &sbx))
}

fn parse_metadata_filter(raw: &str) -> Result<BTreeMap<String, String>, Rejection> {
    let mut out = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Rejection::bad_request(
                "Error parsing metadata: invalid key value pair in query",
            ));
        };
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Rejection::bad_request("Error parsing metadata: invalid encoding"))
        };
        out.insert(dec(k)?, dec(v)?);
    }
    Ok(out)
}

fn list_query(q: &Query) -> Result<ListQuery, Rejection> {
    let mut out = ListQuery::default();
    if let Some(states) = q.one("state") {
        for s in states.split(',').filter(|s| !s.is_empty()) {
            out.states.push(match s {
                "running" => SandboxState::Running,
                "paused" => SandboxState::Paused,
                _ => {
                    return Err(Rejection::bad_request(format!(
                        "parameter \"state\" in query has an error: value {s:?} is not one of the allowed values [running paused]"
                    )));
                }
            });
        }
    }
    if let Some(m) = q.one("metadata") {
        out.metadata = parse_metadata_filter(m)?;
    }
    out.template = q.one("template").map(str::to_string);
    out.order = match q.one("order") {
        None => None,
        Some("asc") => Some(Order::Asc),
        Some("desc") => Some(Order::Desc),
        Some(o) => {
            return Err(Rejection::bad_request(format!(
                "parameter \"order\" in query has an error: value {o:?} is not one of the allowed values [asc desc]"
            )));
        }
    };
    if let Some(t) = q.one("startedAfter") {
        let parsed = DateTime::parse_from_rfc3339(t).map_err(|_| {
            Rejection::bad_request(format!(
                "parameter \"startedAfter\" in query has an error: {t:?} is not an RFC 3339 date-time"
            ))
        })?;
        out.started_after = Some(parsed.with_timezone(&Utc));
    }
    out.limit = q.parsed::<u32>("limit", "an integer from 1 to 100")?;
    out.next_token = q.one("nextToken").map(str::to_string);
    Ok(out)
}

pub(super) async fn list_v2(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
    let query = list_query(&Query::new(raw))?;
    let page = emu.with_core(|c| c.list(&query))?;
    let mut resp = reply(StatusCode::OK, &page.items);
    if let Some(t) = page.next_token
        && let Ok(v) = HeaderValue::from_str(&t)
    {
        resp.headers_mut().insert("x-next-token", v);
    }
    if let Some(n) = page.total_running {
        resp.headers_mut()
            .insert("x-total-running", HeaderValue::from(n));
    }
    Ok(resp)
}

pub(super) async fn list_v1(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
    let q = Query::new(raw);
    let mut query = ListQuery {
        states: vec![SandboxState::Running],
        ..Default::default()
    };
    if let Some(m) = q.one("metadata") {
        query.metadata = parse_metadata_filter(m)?;
    }
    let items = emu.with_core(|c| -> Result<_, Rejection> {
        let mut all = Vec::new();
        loop {
            let page = c.list(&query)?;
            all.extend(page.items);
            match page.next_token {
                Some(t) => query.next_token = Some(t),
                None => return Ok(all),
            }
        }
    })?;
    Ok(reply(StatusCode::OK, &items))
}

pub(super) async fn get_sandbox(State(emu): State<Emulator>, Id(id): Id) -> Res {
    Ok(reply(StatusCode::OK, &emu.with_core(|c| c.get(&id))?))
}

pub(super) async fn kill_sandbox(State(emu): State<Emulator>, Id(id): Id) -> Res {
    emu.with_core(|c| c.kill(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn sandbox_metrics(
    State(emu): State<Emulator>,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Res {
    let q = Query::new(raw);
    let start = q.integer::<i64>("start", 0, i64::MAX)?;
    let end = q.integer::<i64>("end", 0, i64::MAX)?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.metrics(&id, start, end))?,
    ))
}

pub(super) async fn metrics_batch(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
    let q = Query::new(raw);
    let Some(ids) = q.one("sandbox_ids") else {
        return Err(Rejection::bad_request(
            "Query argument sandbox_ids is required, but not found",
        ));
    };
    let ids: Vec<String> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut seen = std::collections::HashSet::new();
    if !ids.iter().all(|i| seen.insert(i)) {
        return Err(Rejection::bad_request(
            "parameter \"sandbox_ids\" in query has an error: duplicate items found",
        ));
    }
    let sandboxes = emu.with_core(|c| c.metrics_batch(&ids))?;
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "sandboxes": sandboxes }),
    ))
}

#[derive(Deserialize)]
struct TimeoutBody {
    timeout: u64,
}

pub(super) async fn set_timeout(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: TimeoutBody = parse_json(&body)?;
    emu.with_core(|c| c.set_timeout(&id, b.timeout))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct PauseBody {
    #[serde(default)]
    #[allow(dead_code)]
    memory: Option<bool>,
}

pub(super) async fn pause(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let _: PauseBody = parse_optional_json(&body)?;
    let took = emu.with_core(|c| {
        let took = c.pause_latency(&id);
        c.pause(&id).map(|()| took)
    })?;
    emu.wait_virtual(took).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct ResumeBody {
    #[serde(default)]
    timeout: Option<u64>,
}

pub(super) async fn resume(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: ResumeBody = parse_optional_json(&body)?;
    let sbx = emu.with_core(|c| c.resume(&id, b.timeout.unwrap_or(DEFAULT_RESUME_TIMEOUT_SECS)))?;
    emu.wait_virtual(emu.with_core(|c| c.resume_latency()))
        .await;
    Ok(reply(StatusCode::CREATED, &sbx))
}

/// Body of `POST /v2/sandboxes/{id}/connect`: every field optional, as the SDKs send it.
#[derive(Deserialize, Default)]
struct ConnectV2Body {
    #[serde(default)]
    timeout: Option<u64>,
    /// `false` would resume from disk only; the emulator has no memory to lose.
    #[serde(default)]
    #[allow(dead_code)]
    memory: Option<bool>,
}

/// `POST /sandboxes/{id}/connect`: `timeout` is required, as in E2B's v1 schema.
pub(super) async fn connect_v1(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: TimeoutBody = parse_json(&body)?;
    connect(&emu, &id, b.timeout).await
}

/// `POST /v2/sandboxes/{id}/connect`: the SDKs' `connect(id)` sends `{}` or no body; the
/// timeout then defaults to E2B's 300 s.
pub(super) async fn connect_v2(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: ConnectV2Body = parse_optional_json(&body)?;
    connect(&emu, &id, b.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS)).await
}

/// Connects; a resume answers after the scenario's resume latency, in virtual time.
async fn connect(emu: &Emulator, id: &str, timeout: u64) -> Res {
    let (sbx, resumed) = emu.with_core(|c| c.connect(id, timeout))?;
    let status = if resumed {
        emu.wait_virtual(emu.with_core(|c| c.resume_latency()))
            .await;
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, &sbx))
}
