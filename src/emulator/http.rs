//! The emulator's HTTP server: E2B's sandbox, events and webhooks API over the [`Core`],
//! plus `/_emulator/*` controls for tests and demos.
//!
//! Every request first brings the core up to the current virtual time, then runs, then hands
//! the webhook deliveries it caused to the delivery worker. Every error is E2B's JSON body
//! `{"code", "message"}` with the right status; no input a client sends can panic a handler.
//!
//! `/_emulator/*` needs no API key: the emulator listens on loopback and these are its test
//! controls (stats, request counts, fault injection, manual clock, crash a sandbox).

use crate::sync::lock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{ApiFault, Core, CoreConfig, Delivery, Rejection, StatsReport};
use super::delivery::{self, DeliveryPolicy, DeliveryReport, DeliveryStats};
use super::limits::{self, OutOfRange};
use super::scenario::Scenario;
use crate::duration::HumanDuration;
use crate::e2b::{
    EventQuery, EventType, ListQuery, NewSandbox, NewWebhook, Order, SandboxState, WebhookPatch,
};

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// Lifetime a v2 connect gives when the body has no `timeout` (E2B's default).
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 300;
/// Lifetime a resume gives when the body has no `timeout` (E2B's `ResumedSandbox` default).
const DEFAULT_RESUME_TIMEOUT_SECS: u64 = 15;

/// Where virtual time comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clock {
    /// Follows the wall clock, `speed` times faster (1.0 = real time).
    Wall { speed: f64 },
    /// Moves only on `POST /_emulator/advance`.
    Manual,
}

/// Everything the emulator server is started with.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub core: CoreConfig,
    pub scenario: Scenario,
    /// The key clients must send; None accepts any non-empty key.
    pub api_key: Option<String>,
    pub clock: Clock,
    pub delivery: DeliveryPolicy,
    /// Serve `POST /v2/sandboxes`; off emulates an API that has only v1 creates.
    pub serve_v2_create: bool,
    /// How often virtual time is brought forward when no request arrives.
    pub tick: Duration,
    /// Virtual time at start; the wall clock's now when None.
    pub start_at: Option<DateTime<Utc>>,
}

impl EmulatorOptions {
    /// Checks every number and duration against [`limits`]; errors name the matching
    /// `poolpilot emulator` flag.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        if let Clock::Wall { speed } = self.clock {
            limits::speed("--speed", speed)?;
        }
        limits::duration(
            "--metrics-interval",
            self.core.metrics_interval,
            limits::MIN_METRICS_INTERVAL,
            limits::MAX_METRICS_INTERVAL,
        )?;
        limits::number(
            "--create-rate",
            self.core.create_rate,
            0.0,
            limits::MAX_CREATE_RATE,
            false,
        )?;
        limits::integer(
            "--max-concurrent",
            self.core.max_concurrent,
            1,
            limits::MAX_CONCURRENT,
        )?;
        limits::integer(
            "--webhook-attempts",
            self.delivery.max_attempts,
            1,
            limits::MAX_WEBHOOK_ATTEMPTS,
        )?;
        limits::span("--webhook-backoff", self.delivery.backoff)?;
        limits::span("webhook delivery timeout", self.delivery.timeout)?;
        limits::duration(
            "tick",
            self.tick,
            Duration::from_millis(1),
            limits::MAX_METRICS_INTERVAL,
        )?;
        Ok(())
    }
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            core: CoreConfig::default(),
            scenario: Scenario::default(),
            api_key: None,
            clock: Clock::Wall { speed: 1.0 },
            delivery: DeliveryPolicy::default(),
            serve_v2_create: true,
            tick: Duration::from_millis(50),
            start_at: None,
        }
    }
}

struct Shared {
    core: Arc<Mutex<Core>>,
    api_key: Option<String>,
    clock: Clock,
    wall0: Instant,
    virt0: DateTime<Utc>,
    outbox: mpsc::UnboundedSender<Delivery>,
    delivery_stats: Arc<DeliveryStats>,
    requests: Mutex<BTreeMap<String, u64>>,
}

/// A handle on an emulator's state, shared by its server, ticker and callers.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
    /// The shared core; lock it briefly and never across an await.
    pub fn core(&self) -> Arc<Mutex<Core>> {
        self.shared.core.clone()
    }

    /// Where virtual time is now. Past chrono's range (a fast clock left running for
    /// millennia) it stays where it is; it never panics.
    fn virtual_now(&self, core: &Core) -> DateTime<Utc> {
        match self.shared.clock {
            Clock::Wall { speed } => {
                let elapsed = self.shared.wall0.elapsed().as_secs_f64() * speed;
                Duration::try_from_secs_f64(elapsed)
                    .ok()
                    .and_then(|d| TimeDelta::from_std(d).ok())
                    .and_then(|d| self.shared.virt0.checked_add_signed(d))
                    .unwrap_or_else(|| core.now())
            }
            Clock::Manual => core.now(),
        }
    }

    /// Brings the core to the current virtual time, runs `f`, and sends out the deliveries
    /// it caused.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = lock(&self.shared.core);
        let now = self.virtual_now(&core);
        core.advance_to(now);
        let out = f(&mut core);
        for d in core.take_outbox() {
            // The receiver lives as long as the server; if it is gone we are shutting down.
            let _ = self.shared.outbox.send(d);
        }
        out
    }

    /// Requests served so far, by method and route (e.g. `GET /sandboxes/metrics`).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.requests).clone()
    }

    pub fn delivery_report(&self) -> DeliveryReport {
        self.shared.delivery_stats.report()
    }

    /// The axum router of the E2B API and the controls.
    pub fn router(&self, serve_v2_create: bool) -> Router {
        let v2 = if serve_v2_create {
            post(create_v2).get(list_v2)
        } else {
            get(list_v2)
        };
        let api = Router::new()
            .route("/sandboxes", post(create_v1).get(list_v1))
            .route("/v2/sandboxes", v2)
            .route("/sandboxes/metrics", get(metrics_batch))
            .route("/sandboxes/{id}", get(get_sandbox).delete(kill_sandbox))
            .route("/sandboxes/{id}/metrics", get(sandbox_metrics))
            .route("/sandboxes/{id}/timeout", post(set_timeout))
            .route("/sandboxes/{id}/pause", post(pause))
            .route("/sandboxes/{id}/resume", post(resume))
            .route("/sandboxes/{id}/connect", post(connect_v1))
            .route("/v2/sandboxes/{id}/connect", post(connect_v2))
            .route("/events/sandboxes", get(team_events))
            .route("/events/sandboxes/{id}", get(sandbox_events))
            .route("/events/webhooks", post(create_webhook).get(list_webhooks))
            .route(
                "/events/webhooks/{id}",
                get(get_webhook)
                    .patch(update_webhook)
                    .delete(delete_webhook),
            );
        let api = api.route_layer(middleware::from_fn_with_state(self.clone(), gate));
        let controls = Router::new()
            .route("/health", get(|| async { StatusCode::OK }))
            .route("/_emulator/stats", get(stats))
            .route("/_emulator/requests", get(requests))
            .route("/_emulator/faults", post(inject_fault))
            .route("/_emulator/advance", post(advance))
            .route("/_emulator/sandboxes/{id}/kill", post(crash_sandbox));
        api.merge(controls)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }
}

/// An emulator serving on a socket, with its ticker and delivery worker. Dropping it stops
/// all three.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub emulator: Emulator,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningEmulator {
    /// Starts serving on `listener`; options outside [`limits`] are an `InvalidInput` error.
    pub fn start(
        opts: EmulatorOptions,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<Self> {
        opts.validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let addr = listener.local_addr()?;
        let virt0 = opts.start_at.unwrap_or_else(Utc::now);
        let core = Core::new(opts.core.clone(), &opts.scenario, virt0);
        let (tx, rx) = mpsc::unbounded_channel();
        let delivery_stats = Arc::new(DeliveryStats::default());
        let emulator = Emulator {
            shared: Arc::new(Shared {
                core: Arc::new(Mutex::new(core)),
                api_key: opts.api_key.clone(),
                clock: opts.clock,
                wall0: Instant::now(),
                virt0,
                outbox: tx,
                delivery_stats: delivery_stats.clone(),
                requests: Mutex::new(BTreeMap::new()),
            }),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = emulator.router(opts.serve_v2_create);
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        let ticker_emu = emulator.clone();
        let tick = opts.tick.max(Duration::from_millis(1));
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticker_emu.with_core(|_| ());
            }
        });
        let worker = tokio::spawn(delivery::run(rx, opts.delivery.clone(), delivery_stats));
        Ok(RunningEmulator {
            addr,
            emulator,
            shutdown: Some(stop_tx),
            tasks: vec![server, ticker, worker],
        })
    }

    /// Binds `addr` (use port 0 for any free port) and starts serving.
    pub async fn bind(opts: EmulatorOptions, addr: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Self::start(opts, listener)
    }

    /// The base URL to give clients, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits for the server to finish the ones in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut tasks = std::mem::take(&mut self.tasks);
        if !tasks.is_empty() {
            let server = tasks.remove(0);
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(serde_json::json!({ "code": self.status, "message": self.message })),
        )
            .into_response();
        let h = resp.headers_mut();
        if let Some(s) = self.retry_after {
            h.insert("retry-after", HeaderValue::from(s));
        }
        if let Some((limit, remaining, reset)) = self.rate_limit {
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(remaining));
            h.insert("ratelimit-reset", HeaderValue::from(reset));
        }
        resp
    }
}

type Res = Result<Response, Rejection>;

fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}

/// A request body of at most [`MAX_BODY`] bytes; read failures become JSON errors.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) if b.len() > MAX_BODY => Err(Rejection::new(413, "Request body too large")),
            Ok(b) => Ok(Body(b)),
            Err(e) => Err(Rejection::new(
                e.status().as_u16(),
                format!("Error reading request body: {}", e.body_text()),
            )),
        }
    }
}

/// Parses a JSON body strictly (nothing after the value); errors name the field at fault
/// and, for the fields with a range, what would be valid.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::bad_request("Request body is required"));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = match (field.as_str(), field_range(&field)) {
            (".", _) => format!("Error when parsing request: {inner}"),
            (_, Some(range)) => {
                format!("Error when parsing request: {field}: {inner}; {field} must be {range}")
            }
            (_, None) => format!("Error when parsing request: {field}: {inner}"),
        };
        Rejection::bad_request(message)
    })?;
    de.end()
        .map_err(|e| Rejection::bad_request(format!("Error when parsing request: {e}")))?;
    Ok(value)
}

/// What a numeric body field accepts, for the error of a value that does not parse.
fn field_range(field: &str) -> Option<String> {
    Some(match field {
        "timeout" => format!(
            "a whole number of seconds from 0 to {}",
            super::core::MAX_TIMEOUT_SECS
        ),
        "status" => "an HTTP error status from 400 to 599".to_string(),
        "count" => format!("an integer from 1 to {}", limits::MAX_FAULT_COUNT),
        "retry_after" => format!("an integer from 0 to {}", limits::MAX_RETRY_AFTER_SECS),
        "for" | "by" => format!(
            "a duration text from \"0s\" to \"{}\", e.g. \"30s\"",
            humantime::format_duration(limits::MAX_SPAN)
        ),
        _ => return None,
    })
}

/// A `{id}` path parameter; one that is not valid UTF-8 is a JSON 400 like any bad input.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(e) => Err(Rejection::new(
                e.status().as_u16(),
                format!("invalid path parameter: {}", e.body_text()),
            )),
        }
    }
}

fn parse_optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// Decoded query pairs, repeated keys kept.
struct Query(Vec<(String, String)>);

impl Query {
    fn new(raw: Option<String>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, Rejection> {
        match self.one(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| query_error(name, what, v)),
        }
    }

    /// An integer parameter in `min..=max`.
    fn integer<T>(&self, name: &str, min: T, max: T) -> Result<Option<T>, Rejection>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let what = format!("an integer from {min} to {max}");
        let v = self.parsed::<T>(name, &what)?;
        match v {
            Some(n) if n < min || n > max => Err(query_error(name, &what, &n.to_string())),
            _ => Ok(v),
        }
    }
}

fn query_error(name: &str, what: &str, got: &str) -> Rejection {
    Rejection::bad_request(format!(
        "parameter \"{name}\" in query has an error: expected {what}, got {got:?}"
    ))
}

async fn gate(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    *lock(&emu.shared.requests)
        .entry(format!("{} {}", req.method(), route))
        .or_default() += 1;
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    if key.is_empty() {
        return Rejection::new(401, "API key is required in the X-API-Key header").into_response();
    }
    if emu.shared.api_key.as_deref().is_some_and(|k| k != key) {
        return Rejection::new(401, "Invalid API key").into_response();
    }
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    if let Some(fault) = emu.with_core(|c| c.api_fault_for_request(&method, &path)) {
        return fault.into_response();
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    // Like a router's 404 rather than a handler's: no E2B `code`, so clients can tell an
    // absent route (e.g. no v2 create) from a missing sandbox.
    let body = serde_json::json!({
        "message": format!("no route for {} {}", req.method(), req.uri().path())
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let body = serde_json::json!({
        "message": format!("method {} not allowed on {}", req.method(), req.uri().path())
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Rejection> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            Rejection::bad_request("Idempotency-Key must be 1 to 255 characters of [a-z0-9-]")
        }),
    }
}

async fn create_v2(State(emu): State<Emulator>, headers: HeaderMap, Body(body): Body) -> Res {
    let req: NewSandbox = parse_json(&body)?;
    let key = idempotency_key(&headers)?;
    let sbx = emu.with_core(|c| c.create(&req, true, key.as_deref()))?;
    Ok(reply(StatusCode::CREATED, &sbx))
}

async fn create_v1(State(emu): State<Emulator>, Body(body): Body) -> Res {
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

async fn list_v2(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
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

async fn list_v1(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
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

async fn get_sandbox(State(emu): State<Emulator>, Id(id): Id) -> Res {
    Ok(reply(StatusCode::OK, &emu.with_core(|c| c.get(&id))?))
}

async fn kill_sandbox(State(emu): State<Emulator>, Id(id): Id) -> Res {
    emu.with_core(|c| c.kill(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn sandbox_metrics(State(emu): State<Emulator>, Id(id): Id, RawQuery(raw): RawQuery) -> Res {
    let q = Query::new(raw);
    let start = q.integer::<i64>("start", 0, i64::MAX)?;
    let end = q.integer::<i64>("end", 0, i64::MAX)?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.metrics(&id, start, end))?,
    ))
}

async fn metrics_batch(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
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

async fn set_timeout(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
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

async fn pause(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let _: PauseBody = parse_optional_json(&body)?;
    emu.with_core(|c| c.pause(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct ResumeBody {
    #[serde(default)]
    timeout: Option<u64>,
}

async fn resume(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: ResumeBody = parse_optional_json(&body)?;
    let sbx = emu.with_core(|c| c.resume(&id, b.timeout.unwrap_or(DEFAULT_RESUME_TIMEOUT_SECS)))?;
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
async fn connect_v1(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: TimeoutBody = parse_json(&body)?;
    connect(&emu, &id, b.timeout)
}

/// `POST /v2/sandboxes/{id}/connect`: the SDKs' `connect(id)` sends `{}` or no body; the
/// timeout then defaults to E2B's 300 s.
async fn connect_v2(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: ConnectV2Body = parse_optional_json(&body)?;
    connect(&emu, &id, b.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS))
}

fn connect(emu: &Emulator, id: &str, timeout: u64) -> Res {
    let (sbx, resumed) = emu.with_core(|c| c.connect(id, timeout))?;
    let status = if resumed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(reply(status, &sbx))
}

fn event_query(q: &Query) -> Result<EventQuery, Rejection> {
    let mut out = EventQuery {
        offset: q.integer::<u64>("offset", 0, u64::MAX)?.unwrap_or(0),
        limit: q
            .parsed::<u32>("limit", "an integer from 1 to 100")?
            .unwrap_or(10),
        order_asc: q
            .parsed::<bool>("orderAsc", "true or false")?
            .unwrap_or(false),
        types: Vec::new(),
    };
    for t in q.all("types") {
        for t in t.split(',').filter(|s| !s.is_empty()) {
            let ty = EventType::parse(t);
            if let EventType::Other(_) = ty {
                let known: Vec<&str> = EventType::KNOWN.iter().map(|e| e.as_str()).collect();
                return Err(Rejection::bad_request(format!(
                    "parameter \"types\" in query has an error: {t:?} is not one of [{}]",
                    known.join(" ")
                )));
            }
            out.types.push(ty);
        }
    }
    Ok(out)
}

async fn team_events(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
    let q = event_query(&Query::new(raw))?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.events(None, &q))?,
    ))
}

async fn sandbox_events(State(emu): State<Emulator>, Id(id): Id, RawQuery(raw): RawQuery) -> Res {
    let q = event_query(&Query::new(raw))?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.events(Some(&id), &q))?,
    ))
}

async fn create_webhook(State(emu): State<Emulator>, Body(body): Body) -> Res {
    let req: NewWebhook = parse_json(&body)?;
    Ok(reply(
        StatusCode::CREATED,
        &emu.with_core(|c| c.create_webhook(&req))?,
    ))
}

async fn list_webhooks(State(emu): State<Emulator>) -> Res {
    Ok(reply(StatusCode::OK, &emu.with_core(|c| c.list_webhooks())))
}

async fn get_webhook(State(emu): State<Emulator>, Id(id): Id) -> Res {
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.get_webhook(&id))?,
    ))
}

async fn update_webhook(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let patch: WebhookPatch = parse_json(&body)?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.update_webhook(&id, &patch))?,
    ))
}

async fn delete_webhook(State(emu): State<Emulator>, Id(id): Id) -> Res {
    emu.with_core(|c| c.delete_webhook(&id))?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /_emulator/stats`.
#[derive(Serialize)]
struct Stats {
    #[serde(flatten)]
    core: StatsReport,
    webhook_deliveries: DeliveryReport,
}

async fn stats(State(emu): State<Emulator>) -> Response {
    let core = emu.with_core(|c| c.stats());
    reply(
        StatusCode::OK,
        &Stats {
            core,
            webhook_deliveries: emu.delivery_report(),
        },
    )
}

async fn requests(State(emu): State<Emulator>) -> Response {
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

async fn inject_fault(State(emu): State<Emulator>, Body(body): Body) -> Res {
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

async fn advance(State(emu): State<Emulator>, Body(body): Body) -> Res {
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

async fn crash_sandbox(State(emu): State<Emulator>, Id(id): Id, Body(body): Body) -> Res {
    let b: CrashBody = parse_optional_json(&body)?;
    let reason = b
        .reason
        .unwrap_or_else(|| crate::e2b::kill_reason::UNKNOWN.to_string());
    emu.with_core(|c| c.kill_with_reason(&id, &reason))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
