//! The emulator's own controls under `/_emulator/*`, for tests and demos: stats, request
//! counts, fault injection, the manual clock, and crashing a sandbox.
//!
//! They need no API key and are not part of E2B's API; nothing in the E2B endpoints may
//! depend on them beyond the state they change in the core.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{Body, Id, Res, parse_json, parse_optional_json, reply};
use super::{Clock, Emulator};
use crate::duration::HumanDuration;
use crate::emulator::core::{ApiFault, Rejection, StatsReport};
use crate::emulator::delivery::DeliveryReport;
use crate::emulator::limits::{self, OutOfRange};

/// `GET /_emulator/stats`.
#[derive(Serialize)]
struct Stats {
    #[serde(flatten)]
    core: StatsReport,
    webhook_deliveries: DeliveryReport,
}

pub(super) async fn stats(State(emu): State<Emulator>) -> Response {
    let core = emu.with_core(|c| c.stats());
    reply(
        StatusCode::OK,
        &Stats {
            core,
            webhook_deliveries: emu.delivery_report(),
        },
    )
}

pub(super) async fn requests(State(emu): State<Emulator>) -> Response {
    reply(StatusCode::OK, &emu.request_counts())
}

/// Body of `POST /_emulator/faults`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    status: u16,
    /// Fail this many requests.
    #[serde(default)]
    count: Option<u64>,
    /// Fail requests for this long (virtual time).
    #[serde(default, rename = "for")]
    duration: Option<HumanDuration>,
    /// Only paths starting with this.
    #[serde(default)]
    path: Option<String>,
    /// Only this method, e.g. POST.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    retry_after: Option<u64>,
}

pub(super) async fn inject_fault(State(emu): State<Emulator>, Body(body): Body) -> Res {
    let b: FaultBody = parse_json(&body)?;
    check_fault(&b).map_err(|e| Rejection::bad_request(e.to_string()))?;
    if b.count.is_none() && b.duration.is_none() {
        return Err(Rejection::bad_request("give `count`, `for`, or both"));
    }
    let fault = ApiFault {
        status: b.status,
        until: None,
        remaining: b.count,
        path: b.path,
        method: b.method,
        retry_after: b.retry_after,
    };
    emu.with_core(|c| c.inject_api_fault(fault, b.duration.map(|d| d.0)));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The bounds of a fault's fields: see [`limits`].
fn check_fault(b: &FaultBody) -> Result<(), OutOfRange> {
    limits::integer("status", b.status, 400, 599)?;
    if let Some(n) = b.count {
        limits::integer("count", n, 1, limits::MAX_FAULT_COUNT)?;
    }
    if let Some(d) = b.duration {
        limits::span("for", d.0)?;
    }
    if let Some(s) = b.retry_after {
        limits::integer("retry_after", s, 0, limits::MAX_RETRY_AFTER_SECS)?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    by: HumanDuration,
}

pub(super) async fn advance(State(emu): State<Emulator>, Body(body): Body) -> Res {
    if emu.shared.clock != Clock::Manual {
        return Err(Rejection::new(
            409,
            "the clock follows the wall clock; start the emulator with --manual-clock to advance it",
        ));
    }
    let b: AdvanceBody = parse_json(&body)?;
    let by = limits::span("by", b.by.0).map_err(|e| Rejection::bad_request(e.to_string()))?;
    let now = emu.with_core(|c| c.try_advance(by))?;
    Ok(reply(StatusCode::OK, &serde_json::json!({ "now": now })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CrashBody {
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn crash_sandbox(
    State(emu): State<Emulator>,
    Id(id): Id,
    Body(body): Body,
) -> Res {
    let b: CrashBody = parse_optional_json(&body)?;
    let reason = b
        .reason
        .unwrap_or_else(|| crate::e2b::kill_reason::UNKNOWN.to_string());
    emu.with_core(|c| c.kill_with_reason(&id, &reason))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
