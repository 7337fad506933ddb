//! Request durations on both of the agent's HTTP sides, as histograms labelled `method`,
//! `route` and `code`: the calls the E2B client makes (fed through
//! [`crate::e2b::RequestObserver`]) and the requests the agent's own API serves (fed by
//! [`timed`], a layer around every route). `route` is always a template (`/sandboxes/{id}`,
//! `/api/v1/pools/{pool}`), never a raw path, and `method` is one of the standard methods or
//! `other`, so that no client can grow the number of series. It only counts: it never
//! changes a request or its answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::metrics::{esc, family};
use crate::agent::histogram::Histogram;
use crate::sync::lock;

/// The route label of a request no route matched (a 404 from the fallback).
pub(crate) const UNMATCHED: &str = "unmatched";

/// Durations by (method, route, code).
#[derive(Default)]
pub(crate) struct RequestDurations {
    by: Mutex<BTreeMap<(String, String, String), Histogram>>,
}

impl RequestDurations {
    /// Counts one request of `method` to `route` that ended with `code` after `took`.
    pub(crate) fn observe(&self, method: &str, route: &str, code: &str, took: Duration) {
        let key = (bounded_method(method), route.to_string(), code.to_string());
        lock(&self.by).entry(key).or_default().observe(took);
    }

    /// The family `name` and one histogram per (method, route, code) seen.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, "histogram", help);
        for ((method, route, code), h) in lock(&self.by).iter() {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",code=\"{}\"",
                esc(route),
                esc(code)
            );
            h.write(out, name, &labels);
        }
    }
}

/// A standard method as itself, any other as `other`.
fn bounded_method(method: &str) -> String {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if KNOWN.contains(&method) {
        method.to_string()
    } else {
        "other".to_string()
    }
}

/// The request durations of both APIs: `e2b` (the client's calls) and `served` (the
/// agent's own routes).
#[derive(Default)]
pub(crate) struct ApiMetrics {
    e2b: RequestDurations,
    served: Arc<RequestDurations>,
}

impl crate::e2b::RequestObserver for ApiMetrics {
    fn observe(&self, method: &str, route: &str, status: Option<u16>, elapsed: Duration) {
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.e2b.observe(method, route, &code, elapsed);
    }
}

impl ApiMetrics {
    /// `poolpilot_http_request_duration_seconds` and `poolpilot_e2b_request_duration_seconds`.
    pub(super) fn render(&self, out: &mut String) {
        self.served.render(
            out,
            "poolpilot_http_request_duration_seconds",
            "Requests the agent's own API served, by method, route template and status code.",
        );
        self.e2b.render(
            out,
            "poolpilot_e2b_request_duration_seconds",
            "E2B API requests by method, route template and status code (error: no answer).",
        );
    }
}

/// `app` with every request it serves timed into `metrics`, labelled with the route
/// template it matched (or [`UNMATCHED`]). Apply it after every router is merged in.
pub(crate) fn timed(app: Router, metrics: &ApiMetrics) -> Router {
    app.layer(axum::middleware::from_fn_with_state(
        metrics.served.clone(),
        time_request,
    ))
}

/// Times one request through the rest of the stack.
async fn time_request(
    State(served): State<Arc<RequestDurations>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_string();
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let answer = next.run(req).await;
    let code = answer.status().as_u16().to_string();
    served.observe(&method, &route, &code, started.elapsed());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    async fn answer(app: &Router, method: &str, uri: &str) -> u16 {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn requests_are_labelled_with_the_route_template_never_the_path() {
        let metrics = ApiMetrics::default();
        let app = Router::new().route("/api/v1/pools/{pool}", get(|| async { "ok" }));
        let app = timed(app, &metrics);
        assert_eq!(answer(&app, "GET", "/api/v1/pools/web").await, 200);
        assert_eq!(answer(&app, "GET", "/api/v1/pools/db").await, 200);
        assert_eq!(answer(&app, "GET", "/no/such/page").await, 404);
        assert_eq!(answer(&app, "BREW", "/api/v1/pools/web").await, 405);
        let mut out = String::new();
        metrics.render(&mut out);
        for line in [
            "poolpilot_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/pools/{pool}\",code=\"200\"} 2",
            "poolpilot_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",code=\"404\"} 1",
            "poolpilot_http_request_duration_seconds_count{method=\"other\",route=\"/api/v1/pools/{pool}\",code=\"405\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(!out.contains("/web") && !out.contains("/no/such"), "{out}");
    }

    #[test]
    fn an_e2b_call_without_an_answer_has_code_error() {
        use crate::e2b::RequestObserver as _;
        let metrics = ApiMetrics::default();
        metrics.observe("POST", "/v2/sandboxes", None, Duration::from_millis(20));
        metrics.observe(
            "GET",
            "/sandboxes/{id}",
            Some(404),
            Duration::from_millis(20),
        );
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("poolpilot_e2b_request_duration_seconds_count{method=\"POST\",route=\"/v2/sandboxes\",code=\"error\"} 1\n"), "{out}");
        assert!(out.contains("poolpilot_e2b_request_duration_seconds_bucket{method=\"GET\",route=\"/sandboxes/{id}\",code=\"404\",le=\"0.025\"} 1\n"), "{out}");
    }
}
