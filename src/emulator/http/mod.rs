//! The emulator's HTTP server: E2B's sandbox, events and webhooks API over the [`Core`],
//! plus `/_emulator/*` controls for tests and demos.
//!
//! Every request first brings the core up to the current virtual time, then runs, then hands
//! the webhook deliveries it caused to the delivery worker. Every error is E2B's JSON body
//! `{"code", "message"}` with the right status; no input a client sends can panic a handler.
//!
//! `/_emulator/*` needs no API key: the emulator listens on loopback and these are its test
//! controls (stats, request counts, fault injection, manual clock, crash a sandbox).
//!
//! This file holds the options, the shared state, the router, the server with its ticker
//! and delivery worker, and the gate every E2B API request passes (API key, request count,
//! injected faults). Handlers live by the part of the API they serve:
//!
//! - `extract.rs`: request bodies, path ids and queries; every error as E2B's JSON body;
//! - `sandboxes.rs`: `/sandboxes`, `/v2/sandboxes` and their metrics;
//! - `events.rs`: `/events/sandboxes`;
//! - `webhooks.rs`: `/events/webhooks`;
//! - `controls.rs`: `/_emulator/*`.
//!
//! Handlers never hold the core's lock across an await: they reach the core only through
//! [`Emulator::with_core`].

mod controls;
mod events;
mod extract;
mod sandboxes;
mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::controls::{advance, crash_sandbox, inject_fault, requests, stats};
use self::events::{sandbox_events, team_events};
use self::sandboxes::{
    connect_v1, connect_v2, create_v1, create_v2, get_sandbox, kill_sandbox, list_v1, list_v2,
    metrics_batch, pause, resume, sandbox_metrics, set_timeout,
};
use self::webhooks::{create_webhook, delete_webhook, get_webhook, list_webhooks, update_webhook};
use super::core::{Core, CoreConfig, Delivery, Rejection};
use super::delivery::{self, DeliveryPolicy, DeliveryReport, DeliveryStats};
use super::limits::{self, OutOfRange};
use super::scenario::Scenario;
use crate::sync::lock;

/// How often a call waiting on the manual clock looks whether it has moved far enough.
const MANUAL_POLL: Duration = Duration::from_millis(5);

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
    pub(crate) fn validate(&self) -> Result<(), OutOfRange> {
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

/// What the server, the ticker and every handler share.
struct Shared {
    /// The one core; reached only through [`Emulator::with_core`], which brings it to the
    /// current virtual time first and sends out the deliveries each call causes.
    core: Arc<Mutex<Core>>,
    /// The key clients must send; None accepts any non-empty key.
    api_key: Option<String>,
    clock: Clock,
    /// The wall-clock instant that `virt0` stands for: virtual time is `virt0` plus the
    /// wall time since, times the speed.
    wall0: Instant,
    virt0: DateTime<Utc>,
    /// To the delivery worker; unbounded, since the core may not wait while it holds its lock.
    outbox: mpsc::UnboundedSender<Delivery>,
    /// Shared with the delivery worker, shown at `/_emulator/stats`.
    delivery_stats: Arc<DeliveryStats>,
    /// Requests by method and route, shown at `/_emulator/requests`.
    requests: Mutex<BTreeMap<String, u64>>,
}

/// A handle on an emulator's state, shared by its server, ticker and callers.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
}

impl Emulator {
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

    /// Waits until virtual time is `d` past now: `d / speed` of wall time on the wall clock;
    /// on the manual clock, until `POST /_emulator/advance` has moved it that far. How the
    /// emulator makes a call take E2B's time (pause, resume) without holding the core.
    pub(crate) async fn wait_virtual(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let Some(due) = TimeDelta::from_std(d)
            .ok()
            .and_then(|d| self.with_core(|c| c.now().checked_add_signed(d)))
        else {
            return;
        };
        loop {
            let left = (due - self.with_core(|c| c.now()))
                .to_std()
                .unwrap_or_default();
            if left.is_zero() {
                return;
            }
            let nap = match self.shared.clock {
                Clock::Wall { speed } => left.div_f64(speed.max(1e-9)),
                Clock::Manual => MANUAL_POLL,
            };
            tokio::time::sleep(nap.max(Duration::from_millis(1))).await;
        }
    }

    /// Requests served so far, by method and route (e.g. `GET /sandboxes/metrics`).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.shared.requests).clone()
    }

    pub fn delivery_report(&self) -> DeliveryReport {
        self.shared.delivery_stats.report()
    }

    /// The axum router of the E2B API and the controls.
    fn router(&self, serve_v2_create: bool) -> Router {
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
    pub(crate) fn start(
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
        let server = spawn_server(listener, emulator.router(opts.serve_v2_create), stop_rx);
        let ticker = spawn_ticker(emulator.clone(), opts.tick);
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

/// Serves `app` on `listener` until `stop` fires, then finishes the requests in flight.
fn spawn_server(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: oneshot::Receiver<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stop.await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "emulator server stopped");
        }
    })
}

/// Brings virtual time forward every `tick` when no request does, so that expiries,
/// samples and webhook deliveries happen on time in a quiet emulator.
fn spawn_ticker(emulator: Emulator, tick: Duration) -> JoinHandle<()> {
    let tick = tick.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            emulator.with_core(|_| ());
        }
    })
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
