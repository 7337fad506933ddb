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
//! With a store shared by replicas only the leader serves claims; a standby forwards each
//! claims request to the leader named in the lease row (its `advertise` URL): method, path,
//! query, `Authorization`, `Idempotency-Key`, `Content-Type` and body, relaying status,
//! `Retry-After`, `WWW-Authenticate` and body. The standby checks access as the leader does
//! (the token is the same on every replica), and the leader checks again. With no leader
//! known, or one that does not answer, the answer is 503 with `Retry-After: 1`.
//!
//! The handlers only translate: what a claim does is [`crate::agent::claims`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{Segment, error};
use crate::agent::claims::{ClaimError, ClaimRequest, Claims};
use crate::duration::HumanDuration;
use crate::store::lease::Lease;

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
    /// With a store shared by replicas: how a standby reaches the leader.
    pub(crate) forward: Option<Forward>,
}

/// A standby's way to the leader: the lease row names it and its address.
#[derive(Clone)]
pub(crate) struct Forward {
    lease: Lease,
    client: reqwest::Client,
    /// The leader's address as last read, and when: read again after [`LEADER_FRESH`], or
    /// at once when the leader did not answer.
    cached: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
}

/// How long a standby forwards to the leader's address before it reads the lease row again.
const LEADER_FRESH: Duration = Duration::from_secs(1);

/// Marks a forwarded request, so it is never forwarded twice (two replicas each believing
/// the other leads).
const FORWARDED: &str = "x-poolpilot-forwarded";
/// How much longer than the claim's wait a forwarded request may take.
const FORWARD_SLACK: Duration = Duration::from_secs(5);

impl Forward {
    pub(crate) fn new(lease: Lease) -> Result<Forward, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Forward {
            lease,
            client,
            cached: std::sync::Arc::default(),
        })
    }

    /// The leader's address: cached for [`LEADER_FRESH`], else read from the lease row.
    async fn leader(&self) -> Result<String, String> {
        if let Some((at, base)) = &*crate::sync::lock(&self.cached)
            && at.elapsed() < LEADER_FRESH
        {
            return Ok(base.clone());
        }
        let base = self.read_leader().await?;
        *crate::sync::lock(&self.cached) = Some((std::time::Instant::now(), base.clone()));
        Ok(base)
    }

    /// The address of the leader when another replica leads now, from the lease row.
    async fn read_leader(&self) -> Result<String, String> {
        match self.lease.current().await {
            Ok(Some(h)) if h.live && h.holder != self.lease.holder() => h
                .address
                .ok_or_else(|| format!("the leader {} has not said where it serves", h.holder)),
            Ok(_) => Err("no replica leads now".into()),
            Err(e) => Err(format!("the store cannot be reached: {e}")),
        }
    }

    /// Sends `req` to the leader at `base` and relays its answer.
    async fn relay(&self, base: &str, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than 64 KiB or did not arrive whole",
            );
        };
        let wait = Query::<WaitQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.wait)
            .and_then(|w| humantime::parse_duration(&w).ok())
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT);
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut out = self
            .client
            .request(parts.method.clone(), format!("{base}{target}"))
            .timeout(wait + FORWARD_SLACK)
            .header(FORWARDED, "1")
            .body(body);
        for h in [header::AUTHORIZATION, IDEMPOTENCY_KEY, header::CONTENT_TYPE] {
            if let Some(v) = parts.headers.get(&h) {
                out = out.header(h, v.clone());
            }
        }
        match out.send().await {
            Ok(answer) => relayed(answer).await,
            Err(e) => {
                *crate::sync::lock(&self.cached) = None;
                retry_later(
                    &format!("the leader at {base} did not answer ({e}); retry in a second"),
                    Duration::from_secs(1),
                )
            }
        }
    }
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The leader's answer, as this replica's.
async fn relayed(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for h in [
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
        header::CONTENT_TYPE,
        REPLAYED,
    ] {
        if let Some(v) = answer.headers().get(&h) {
            headers.insert(h, v.clone());
        }
    }
    match answer.bytes().await {
        Ok(body) => (status, headers, body).into_response(),
        Err(e) => retry_later(
            &format!("the leader's answer did not arrive whole ({e}); retry in a second"),
            Duration::from_secs(1),
        ),
    }
}

/// Serves a claims request here when this replica serves claims (a single agent, or the
/// leader), else forwards it to the leader.
async fn to_leader(State(s): State<ClaimsState>, req: Request, next: Next) -> Response {
    let Some(forward) = s.forward.as_ref().filter(|_| !s.claims.local()) else {
        return next.run(req).await;
    };
    if let Err(d) = s.access.check(req.headers()) {
        return d.into_response();
    }
    if req.headers().contains_key(FORWARDED) {
        return retry_later(
            "this replica does not lead now, and the request was already forwarded to it; retry in a second",
            Duration::from_secs(1),
        );
    }
    match forward.leader().await {
        Ok(base) => forward.relay(&base, req).await,
        Err(why) => retry_later(
            &format!("claims are served by the leader, and {why}; retry in a second"),
            Duration::from_secs(1),
        ),
    }
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
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            to_leader,
        ))
        .with_state(state)
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
    Segment(pool): Segment,
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
    answer(work())
}

/// A result as JSON, an error as [`claim_error`]'s.
fn answer<T: serde::Serialize>(result: Result<T, ClaimError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => claim_error(&e),
    }
}

/// `GET /api/v1/pools/{pool}/claims`.
async fn list(
    State(s): State<ClaimsState>,
    Segment(pool): Segment,
    headers: HeaderMap,
) -> Response {
    guarded(&s, &headers, || s.claims.of_pool(&pool))
}

/// `GET /api/v1/claims/{id}`.
async fn show(State(s): State<ClaimsState>, Segment(id): Segment, headers: HeaderMap) -> Response {
    guarded(&s, &headers, || s.claims.get(&id))
}

/// `POST /api/v1/claims/{id}/renew`.
async fn renew(
    State(s): State<ClaimsState>,
    Segment(id): Segment,
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
    answer(s.claims.renew_durably(&id, b.lease.map(|l| l.0)).await)
}

/// `DELETE /api/v1/claims/{id}`.
async fn release(
    State(s): State<ClaimsState>,
    Segment(id): Segment,
    headers: HeaderMap,
) -> Response {
    if let Err(d) = s.access.check(&headers) {
        return d.into_response();
    }
    answer(s.claims.release_durably(&id).await)
}

/// `GET /api/v1/pools/{pool}/pick`: shared, not exclusive.
async fn pick(
    State(s): State<ClaimsState>,
    Segment(pool): Segment,
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
        ClaimError::Unsaved => retry_later(&m, Duration::from_secs(1)),
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
