//! The claims API: an application takes a pool member for itself, renews and releases it.
//!
//! ```text
//! POST   /api/v1/pools/{pool}/claims[?wait=5s]  {"holder","lease","metadata"}  -> 201 claim
//! GET    /api/v1/pools/{pool}/claims                                          -> 200 [claim]
//! GET    /api/v1/claims/{id}                                                  -> 200 claim
//! POST   /api/v1/claims/{id}/renew               {"lease"}                    -> 200 claim
//! DELETE /api/v1/claims/{id}                                                  -> 200 claim
//! GET    /api/v1/pools/{pool}/pick                                            -> 200 {"sandbox_id"}
//! ```
//!
//! These hand out live sandboxes, so they are guarded ([`Access`]): with a token configured
//! every request needs `Authorization: Bearer <token>`, compared in constant time; without
//! one they are served only when the agent listens on loopback, and refused (403) otherwise.
//! Errors are JSON `{"code", "message"}` with the status that fits: 400 bad input, 401 no or
//! wrong token, 403 refused, 404 unknown pool or claim, 409 an Idempotency-Key conflict, 503
//! with `Retry-After` when no member is free (or none is known yet).
//!
//! The handlers only translate: what a claim does is [`crate::agent::claims`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::error;
use crate::agent::claims::{ClaimError, ClaimRequest, Claims};
use crate::duration::HumanDuration;

/// Who may use the claims API.
#[derive(Clone)]
pub(crate) enum Access {
    /// No token, on loopback: anyone on this machine.
    Loopback,
    /// Requests must carry this bearer token.
    Token(Arc<str>),
    /// No token on a non-loopback address: refused, with this reason.
    Refused(&'static str),
}

impl Access {
    /// The access for a server on `listen` with `token`.
    pub(crate) fn new(listen: &str, token: Option<String>) -> Access {
        match token {
            Some(t) => Access::Token(t.into()),
            None if is_loopback(listen) => Access::Loopback,
            None => Access::Refused(
                "claims are off: the agent listens on a non-loopback address without an API token; set token_file, the api-token credential or POOLPILOT_API_TOKEN",
            ),
        }
    }

    /// Ok when `headers` may use the claims API; else why not.
    fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        match self {
            Access::Loopback => Ok(()),
            Access::Refused(why) => Err(Denied::Refused(why)),
            Access::Token(t) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if bool::from(given.as_bytes().ct_eq(t.as_bytes())) {
                    Ok(())
                } else {
                    Err(Denied::Token)
                }
            }
        }
    }
}

/// Why a request may not use the claims API.
#[derive(Debug)]
enum Denied {
    /// No token, or the wrong one: 401.
    Token,
    /// Claims are off on this address: 403.
    Refused(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Refused(why) => error(StatusCode::FORBIDDEN, why),
            Denied::Token => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs Authorization: Bearer <the agent's API token>",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
        }
    }
}

/// Whether `listen` (HOST:PORT) is a loopback address.
pub(crate) fn is_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    }
}

/// What the claim handlers share.
#[derive(Clone)]
pub(crate) struct ClaimsState {
    pub(crate) claims: Arc<Claims>,
    pub(crate) access: Access,
}

/// A claim or renewal body is small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 64 << 10;
/// The longest `?wait=` a claim may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// The wait when none is asked for.
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// The longest holder name and Idempotency-Key.
const MAX_TEXT: usize = 256;

/// The claims routes.
pub(crate) fn router(state: ClaimsState) -> Router {
    Router::new()
        .route("/api/v1/pools/{pool}/claims", post(claim).get(list))
        .route("/api/v1/pools/{pool}/pick", get(pick))
        .route("/api/v1/claims/{id}", get(show).delete(release))
        .route("/api/v1/claims/{id}/renew", post(renew))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The claims routes of replicas sharing a PostgreSQL store: each answers 503, since claims
/// are not yet shared between replicas (a claim held by a leader that dies would be lost).
pub(crate) fn not_shared() -> Router {
    async fn refuse() -> axum::response::Response {
        super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "claims are not served by replicas sharing a PostgreSQL store yet; serve claims from a single agent with the SQLite store",
        )
    }
    Router::new()
        .route("/api/v1/pools/{pool}/claims", post(refuse).get(refuse))
        .route("/api/v1/pools/{pool}/pick", get(refuse))
        .route("/api/v1/claims/{id}", get(refuse).delete(refuse))
        .route("/api/v1/claims/{id}/renew", post(refuse))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    #[serde(default)]
    holder: Option<String>,
    #[serde(default)]
    lease: Option<HumanDuration>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    #[serde(default)]
    lease: Option<HumanDuration>,
}

#[derive(Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// `POST /api/v1/pools/{pool}/claims`.
async fn claim(
    State(s): State<ClaimsState>,
    Path(pool): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(d) = s.access.check(&headers) {
        return d.into_response();
    }
    let req = match claim_request(&q, &headers, &body) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    match s.claims.claim(&pool, req).await {
        Ok(g) => {
            let mut r = (StatusCode::CREATED, Json(&g.claim)).into_response();
            if g.replayed {
                r.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            r
        }
        Err(e) => claim_error(&e),
    }
}

/// The claim request from the query, headers and body; a message saying what is wrong.
fn claim_request(q: &WaitQuery, headers: &HeaderMap, body: &[u8]) -> Result<ClaimRequest, String> {
    let b: ClaimBody = if body.iter().all(u8::is_ascii_whitespace) {
        ClaimBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            format!("the body is not a claim ({e}); send {{\"holder\": \"job-42\", \"lease\": \"10m\", \"metadata\": {{}}}} or nothing")
        })?
    };
    let wait = match &q.wait {
        None => DEFAULT_WAIT,
        Some(w) => humantime::parse_duration(w)
            .ok()
            .filter(|d| *d <= MAX_WAIT)
            .ok_or_else(|| format!("wait={w:?} is not a duration from 0s to 5m (e.g. wait=5s)"))?,
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_TEXT)
                .ok_or("Idempotency-Key must be 1 to 256 printable characters")?
                .to_string(),
        ),
    };
    if b.holder.as_ref().is_some_and(|h| h.len() > MAX_TEXT) {
        return Err("holder must be at most 256 bytes".into());
    }
    Ok(ClaimRequest {
        holder: b.holder,
        lease: b.lease.map(|l| l.0),
        metadata: b.metadata.unwrap_or_default(),
        idempotency_key: key,
        wait,
    })
}

/// The answer of a guarded handler: its result as JSON, its error as [`claim_error`]'s, or
/// the refusal when `headers` may not use the claims API.
fn guarded<T: serde::Serialize>(
    s: &ClaimsState,
    headers: &HeaderMap,
    work: impl FnOnce() -> Result<T, ClaimError>,
) -> Response {
    if let Err(d) = s.access.check(headers) {
        return d.into_response();
    }
    match work() {
        Ok(v) => Json(v).into_response(),
        Err(e) => claim_error(&e),
    }
}

/// `GET /api/v1/pools/{pool}/claims`.
async fn list(
    State(s): State<ClaimsState>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Response {
    guarded(&s, &headers, || s.claims.of_pool(&pool))
}

/// `GET /api/v1/claims/{id}`.
async fn show(
    State(s): State<ClaimsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    guarded(&s, &headers, || s.claims.get(&id))
}

/// `POST /api/v1/claims/{id}/renew`.
async fn renew(
    State(s): State<ClaimsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(d) = s.access.check(&headers) {
        return d.into_response();
    }
    let b: RenewBody = if body.iter().all(u8::is_ascii_whitespace) {
        RenewBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                let m = format!(
                    "the body is not a renewal ({e}); send {{\"lease\": \"10m\"}} or nothing for the pool's lease"
                );
                return error(StatusCode::BAD_REQUEST, &m);
            }
        }
    };
    guarded(&s, &headers, || s.claims.renew(&id, b.lease.map(|l| l.0)))
}

/// `DELETE /api/v1/claims/{id}`.
async fn release(
    State(s): State<ClaimsState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    guarded(&s, &headers, || s.claims.release(&id))
}

/// `GET /api/v1/pools/{pool}/pick`: shared, not exclusive.
async fn pick(
    State(s): State<ClaimsState>,
    Path(pool): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(d) = s.access.check(&headers) {
        return d.into_response();
    }
    match s.claims.pick(&pool) {
        Ok(Some(id)) => Json(serde_json::json!({ "pool": pool, "sandbox_id": id })).into_response(),
        Ok(None) => retry_later(
            &format!("pool {pool:?} has no running unclaimed member now"),
            Duration::from_secs(1),
        ),
        Err(e) => claim_error(&e),
    }
}

/// The answer for a claims error.
fn claim_error(e: &ClaimError) -> Response {
    let m = e.to_string();
    match e {
        ClaimError::UnknownPool(_) | ClaimError::NotFound(_) => error(StatusCode::NOT_FOUND, &m),
        ClaimError::Invalid(_) => error(StatusCode::BAD_REQUEST, &m),
        ClaimError::KeyInProgress | ClaimError::KeyEnded(_) => error(StatusCode::CONFLICT, &m),
        ClaimError::NotReady => retry_later(&m, Duration::from_secs(1)),
        ClaimError::Exhausted { retry_after } => retry_later(&m, *retry_after),
    }
}

/// 503 with `Retry-After` in whole seconds (at least 1).
fn retry_later(message: &str, after: Duration) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    let secs = after.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_serves_claims_without_a_token() {
        assert!(matches!(
            Access::new("127.0.0.1:9477", None),
            Access::Loopback
        ));
        assert!(matches!(Access::new("[::1]:9477", None), Access::Loopback));
        assert!(matches!(
            Access::new("localhost:9477", None),
            Access::Loopback
        ));
        assert!(matches!(
            Access::new("0.0.0.0:9477", None),
            Access::Refused(_)
        ));
        assert!(matches!(
            Access::new("10.0.0.5:9477", None),
            Access::Refused(_)
        ));
        assert!(matches!(
            Access::new("0.0.0.0:9477", Some("t".into())),
            Access::Token(_)
        ));
    }

    #[test]
    fn a_token_is_checked_whole() {
        let a = Access::new("0.0.0.0:1", Some("sekret".into()));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
            a.check(&h).is_ok()
        };
        assert!(with("Bearer sekret"));
        assert!(!with("Bearer sekre"));
        assert!(!with("Bearer sekret2"));
        assert!(!with("sekret"));
        assert!(a.check(&HeaderMap::new()).is_err());
    }
}
