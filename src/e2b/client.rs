//! [`HttpClient`]: the E2B API over HTTP with reqwest (rustls).
//!
//! Retries capped-exponential with jitter on 429/502/503/504 and transport failures, always
//! honouring Retry-After. Only calls that are safe to repeat are retried: reads, kills,
//! timeouts, pauses, connects, and creates that carry an Idempotency-Key. A v1 create (no key)
//! is never retried. Creates are paced under the configured create rate.
//!
//! The API key lives in a [`SecretString`], goes only into the `X-API-Key` header, and never
//! into a log line, a `Debug` output or an error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode, header::HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::retry::{Pacer, RetryPolicy};
use super::{
    Connected, E2bApi, Error, ErrorBody, EventQuery, LifecycleEvent, ListQuery, NewSandbox,
    NewWebhook, Page, Result, Sandbox, SandboxInfo, SandboxMetric, SandboxesWithMetrics, Webhook,
    WebhookPatch,
};

/// E2B's production API.
pub const DEFAULT_API_URL: &str = "https://api.e2b.app";

/// Told about every request the client sends, for metrics. `route` is the path with ids
/// replaced by `{id}` (e.g. `/sandboxes/{id}/timeout`); `status` is None when no answer came.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, method: &str, route: &str, status: Option<u16>, elapsed: Duration);
}

/// The path with sandbox and webhook ids replaced by `{id}`: a bounded set of label values.
pub fn route_of(path: &str) -> String {
    let mut out = Vec::new();
    let mut prev = "";
    for seg in path.split('/') {
        if matches!(prev, "sandboxes" | "webhooks") && !seg.is_empty() && seg != "metrics" {
            out.push("{id}");
        } else {
            out.push(seg);
        }
        prev = seg;
    }
    out.join("/")
}

/// How to reach E2B.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://api.e2b.app` or `http://127.0.0.1:3000` for the emulator.
    pub api_url: String,
    /// The team API key.
    pub api_key: SecretString,
    /// Limit of one HTTP request, connection included.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Creates per second at most (E2B allows 1/s on Hobby, 5/s on Pro); None paces nothing.
    pub create_rate: Option<f64>,
    /// Told about every request, for metrics.
    pub observer: Option<Arc<dyn RequestObserver>>,
}

impl ClientConfig {
    pub fn new(api_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        ClientConfig {
            api_url: api_url.into(),
            api_key: SecretString::from(api_key.into()),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            create_rate: Some(5.0),
            observer: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &"[redacted]")
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("create_rate", &self.create_rate)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// The E2B API over HTTP.
pub struct HttpClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    retry: RetryPolicy,
    pacer: Option<Pacer>,
    /// Cleared once the server shows it has no `POST /v2/sandboxes`; creates then use v1.
    v2_create: AtomicBool,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("api_key", &"[redacted]")
            .field("retry", &self.retry)
            .field("v2_create", &self.v2_create.load(Ordering::Relaxed))
            .finish()
    }
}

/// Whether a request may be sent again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Repeat {
    /// Safe to repeat: reads, and writes whose repetition has the same effect.
    Safe,
    /// Repeat only after a 429, which E2B answers before doing any work.
    OnlyIfRejected,
    /// Never: a v1 create has no Idempotency-Key.
    Never,
}

struct Request<'a> {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    idempotency_key: Option<&'a str>,
    repeat: Repeat,
    paced: bool,
}

impl<'a> Request<'a> {
    fn new(method: Method, path: String) -> Self {
        let repeat = if method == Method::GET || method == Method::DELETE {
            Repeat::Safe
        } else {
            Repeat::OnlyIfRejected
        };
        Request {
            method,
            path,
            query: Vec::new(),
            body: None,
            idempotency_key: None,
            repeat,
            paced: false,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Self> {
        self.body = Some(serde_json::to_vec(body).map_err(|e| Error::Decode(e.to_string()))?);
        Ok(self)
    }

    fn repeat(mut self, repeat: Repeat) -> Self {
        self.repeat = repeat;
        self
    }
}

/// A response as received: status, headers, body.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Raw {
    fn is_e2b_error(&self) -> bool {
        serde_json::from_slice::<ErrorBody>(&self.body).is_ok()
    }

    fn into_error(self) -> Error {
        let message = match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => b.message,
            Err(_) => {
                let text = String::from_utf8_lossy(&self.body);
                let text = text.trim();
                if text.is_empty() {
                    self.status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    text.chars().take(500).collect()
                }
            }
        };
        Error::from_status(self.status.as_u16(), message, retry_after(&self.headers))
    }

    fn ok(self) -> Result<Raw> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }

    fn json<T: DeserializeOwned>(self) -> Result<T> {
        let raw = self.ok()?;
        serde_json::from_slice(&raw.body).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// Parses Retry-After as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn seg(id: &str) -> String {
    utf8_percent_encode(id, NON_ALPHANUMERIC).to_string()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl HttpClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("poolpilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(HttpClient {
            http,
            base: config.api_url.trim_end_matches('/').to_string(),
            key: config.api_key,
            retry: config.retry,
            pacer: config.create_rate.map(Pacer::new),
            v2_create: AtomicBool::new(true),
            observer: config.observer,
        })
    }

    /// Sends once; a response of any status is Ok, only transport failures are Err.
    async fn send_once(&self, req: &Request<'_>) -> Result<Raw> {
        let url = format!("{}{}", self.base, req.path);
        let mut rb = self
            .http
            .request(req.method.clone(), &url)
            .header("X-API-Key", self.key.expose_secret());
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(k) = req.idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(body) = &req.body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let started = Instant::now();
        let observe = |status: Option<u16>| {
            if let Some(o) = &self.observer {
                o.observe(
                    req.method.as_str(),
                    &route_of(&req.path),
                    status,
                    started.elapsed(),
                );
            }
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                observe(None);
                return Err(transport(e));
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        observe(Some(status.as_u16()));
        tracing::debug!(
            method = %req.method,
            path = %req.path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "e2b request"
        );
        Ok(Raw {
            status,
            headers,
            body,
        })
    }

    /// Sends with the retry policy; returns the final response whatever its status.
    async fn send(&self, req: Request<'_>) -> Result<Raw> {
        let policy = if req.repeat == Repeat::Never {
            RetryPolicy::none()
        } else {
            self.retry.clone()
        };
        let mut retry = 0u32;
        loop {
            if req.paced
                && let Some(p) = &self.pacer
            {
                p.acquire().await;
            }
            let outcome = self.send_once(&req).await;
            let err = match &outcome {
                Ok(raw) if is_retryable_status(raw.status) => Raw {
                    status: raw.status,
                    headers: raw.headers.clone(),
                    body: raw.body.clone(),
                }
                .into_error(),
                Ok(_) => return outcome,
                Err(e) => e.clone(),
            };
            let allowed = match req.repeat {
                Repeat::Safe => err.is_transient(),
                Repeat::OnlyIfRejected => err.is_not_processed(),
                Repeat::Never => false,
            };
            if !allowed || retry + 1 >= policy.max_attempts {
                return outcome;
            }
            let Some(delay) = policy.delay(retry, err.retry_after(), fastrand::f64()) else {
                return outcome;
            };
            tracing::warn!(
                method = %req.method,
                path = %req.path,
                error = %err,
                retry = retry + 1,
                delay_ms = delay.as_millis() as u64,
                "e2b request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    fn list_query(q: &ListQuery) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !q.states.is_empty() {
            let s: Vec<&str> = q.states.iter().map(|s| s.as_str()).collect();
            out.push(("state", s.join(",")));
        }
        if !q.metadata.is_empty() {
            // E2B wants `k=v&k2=v2` with each key and value URL-encoded; the query string
            // encoding then encodes the whole value once more, as E2B's SDKs do.
            let pairs: Vec<String> = q
                .metadata
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect();
            out.push(("metadata", pairs.join("&")));
        }
        if let Some(t) = &q.template {
            out.push(("template", t.clone()));
        }
        if let Some(o) = q.order {
            out.push(("order", o.as_str().to_string()));
        }
        if let Some(t) = q.started_after {
            out.push((
                "startedAfter",
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ));
        }
        if let Some(l) = q.limit {
            out.push(("limit", l.to_string()));
        }
        if let Some(t) = &q.next_token {
            out.push(("nextToken", t.clone()));
        }
        out
    }

    fn event_query(q: &EventQuery) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("offset", q.offset.to_string()),
            ("limit", q.limit.to_string()),
            ("orderAsc", q.order_asc.to_string()),
        ];
        for t in &q.types {
            out.push(("types", t.as_str().to_string()));
        }
        out
    }

    async fn no_content(&self, req: Request<'_>) -> Result<()> {
        self.send(req).await?.ok().map(|_| ())
    }
}

fn is_retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 429 | 502 | 503 | 504)
}

fn transport(e: reqwest::Error) -> Error {
    // reqwest's Display names the URL, never headers, so the key cannot leak through it.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else {
        "request failed"
    };
    Error::Transport(format!("{kind}: {e}"))
}

#[async_trait]
impl E2bApi for HttpClient {
    async fn create_sandbox(&self, req: &NewSandbox, idempotency_key: &str) -> Result<Sandbox> {
        if self.v2_create.load(Ordering::Relaxed) {
            let mut r = Request::new(Method::POST, "/v2/sandboxes".into())
                .json(req)?
                .repeat(Repeat::Safe);
            r.idempotency_key = Some(idempotency_key);
            r.paced = true;
            let raw = self.send(r).await?;
            // A server without v2 answers its router's 404/405, not an E2B error body; a
            // 404 for an unknown template carries E2B's body and must not fall back.
            let v2_absent = matches!(raw.status.as_u16(), 404 | 405) && !raw.is_e2b_error();
            if !v2_absent {
                return raw.json();
            }
            tracing::info!("POST /v2/sandboxes is absent; creating through POST /sandboxes");
            self.v2_create.store(false, Ordering::Relaxed);
        }
        let mut r = Request::new(Method::POST, "/sandboxes".into())
            .json(req)?
            .repeat(Repeat::Never);
        r.paced = true;
        self.send(r).await?.json()
    }

    async fn list_sandboxes_page(&self, query: &ListQuery) -> Result<Page<SandboxInfo>> {
        let mut r = Request::new(Method::GET, "/v2/sandboxes".into());
        r.query = Self::list_query(query);
        let raw = self.send(r).await?.ok()?;
        let header = |name: &str| {
            raw.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next_token = header("x-next-token").filter(|t| !t.is_empty());
        let total_running = header("x-total-running").and_then(|v| v.parse().ok());
        let items = serde_json::from_slice(&raw.body).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Page {
            items,
            next_token,
            total_running,
        })
    }

    async fn get_sandbox(&self, sandbox_id: &str) -> Result<SandboxInfo> {
        let r = Request::new(Method::GET, format!("/sandboxes/{}", seg(sandbox_id)));
        self.send(r).await?.json()
    }

    async fn kill_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let r = Request::new(Method::DELETE, format!("/sandboxes/{}", seg(sandbox_id)));
        self.no_content(r).await
    }

    async fn set_timeout(&self, sandbox_id: &str, timeout_secs: u64) -> Result<()> {
        let r = Request::new(
            Method::POST,
            format!("/sandboxes/{}/timeout", seg(sandbox_id)),
        )
        .json(&serde_json::json!({ "timeout": timeout_secs }))?
        .repeat(Repeat::Safe);
        self.no_content(r).await
    }

    async fn pause_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let r = Request::new(
            Method::POST,
            format!("/sandboxes/{}/pause", seg(sandbox_id)),
        )
        .repeat(Repeat::Safe);
        self.no_content(r).await
    }

    async fn connect_sandbox(&self, sandbox_id: &str, timeout_secs: u64) -> Result<Connected> {
        let r = Request::new(
            Method::POST,
            format!("/sandboxes/{}/connect", seg(sandbox_id)),
        )
        .json(&serde_json::json!({ "timeout": timeout_secs }))?
        .repeat(Repeat::Safe);
        let raw = self.send(r).await?;
        let resumed = raw.status == StatusCode::CREATED;
        Ok(Connected {
            sandbox: raw.json()?,
            resumed,
        })
    }

    async fn sandbox_metrics(
        &self,
        sandbox_id: &str,
        start: Option<i64>,
        end: Option<i64>,
    ) -> Result<Vec<SandboxMetric>> {
        let mut r = Request::new(
            Method::GET,
            format!("/sandboxes/{}/metrics", seg(sandbox_id)),
        );
        if let Some(s) = start {
            r.query.push(("start", s.to_string()));
        }
        if let Some(e) = end {
            r.query.push(("end", e.to_string()));
        }
        self.send(r).await?.json()
    }

    async fn metrics_batch(
        &self,
        sandbox_ids: &[String],
    ) -> Result<BTreeMap<String, SandboxMetric>> {
        if sandbox_ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut r = Request::new(Method::GET, "/sandboxes/metrics".into());
        r.query.push(("sandbox_ids", sandbox_ids.join(",")));
        let body: SandboxesWithMetrics = self.send(r).await?.json()?;
        Ok(body.sandboxes)
    }

    async fn events_page(
        &self,
        sandbox_id: Option<&str>,
        query: &EventQuery,
    ) -> Result<Vec<LifecycleEvent>> {
        let path = match sandbox_id {
            Some(id) => format!("/events/sandboxes/{}", seg(id)),
            None => "/events/sandboxes".to_string(),
        };
        let mut r = Request::new(Method::GET, path);
        r.query = Self::event_query(query);
        self.send(r).await?.json()
    }

    async fn create_webhook(&self, req: &NewWebhook) -> Result<Webhook> {
        let r = Request::new(Method::POST, "/events/webhooks".into()).json(req)?;
        self.send(r).await?.json()
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        let r = Request::new(Method::GET, "/events/webhooks".into());
        self.send(r).await?.json()
    }

    async fn get_webhook(&self, webhook_id: &str) -> Result<Webhook> {
        let r = Request::new(Method::GET, format!("/events/webhooks/{}", seg(webhook_id)));
        self.send(r).await?.json()
    }

    async fn update_webhook(&self, webhook_id: &str, patch: &WebhookPatch) -> Result<Webhook> {
        let r = Request::new(
            Method::PATCH,
            format!("/events/webhooks/{}", seg(webhook_id)),
        )
        .json(patch)?
        .repeat(Repeat::Safe);
        self.send(r).await?.json()
    }

    async fn delete_webhook(&self, webhook_id: &str) -> Result<()> {
        let r = Request::new(
            Method::DELETE,
            format!("/events/webhooks/{}", seg(webhook_id)),
        );
        self.no_content(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_key() {
        let cfg = ClientConfig::new("http://127.0.0.1:1", "e2b_supersecretkey");
        assert!(!format!("{cfg:?}").contains("supersecret"));
        let client = HttpClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("supersecret"));
    }

    #[test]
    fn metadata_filter_is_encoded_pairwise() {
        let mut q = ListQuery::default();
        q.metadata.insert("pool".into(), "a b&c".into());
        q.metadata.insert("owner".into(), "poolpilot".into());
        let params = HttpClient::list_query(&q);
        assert_eq!(
            params,
            vec![("metadata", "owner=poolpilot&pool=a%20b%26c".to_string())]
        );
    }

    #[test]
    fn routes_replace_ids() {
        assert_eq!(
            route_of("/sandboxes/abc123/timeout"),
            "/sandboxes/{id}/timeout"
        );
        assert_eq!(route_of("/sandboxes/metrics"), "/sandboxes/metrics");
        assert_eq!(route_of("/v2/sandboxes"), "/v2/sandboxes");
        assert_eq!(route_of("/events/sandboxes/xyz"), "/events/sandboxes/{id}");
        assert_eq!(route_of("/events/webhooks/w1"), "/events/webhooks/{id}");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
