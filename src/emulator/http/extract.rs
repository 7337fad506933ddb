//! What handlers take from a request and how they answer: bounded bodies parsed strictly,
//! `{id}` path parameters, query parameters with their ranges, and [`Rejection`] as E2B's
//! JSON error body with `Retry-After` and rate-limit headers.
//!
//! Every failure here is a JSON 4xx naming the field at fault; nothing a client sends may
//! panic or reach a handler unchecked.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::emulator::core::{MAX_TIMEOUT_SECS, Rejection};
use crate::emulator::limits;

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

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

pub(super) type Res = Result<Response, Rejection>;

pub(super) fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}

/// A request body of at most [`MAX_BODY`] bytes; read failures become JSON errors.
pub(super) struct Body(pub(super) Bytes);

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
pub(super) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Rejection> {
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
        "timeout" => format!("a whole number of seconds from 0 to {}", MAX_TIMEOUT_SECS),
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
pub(super) struct Id(pub(super) String);

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

pub(super) fn parse_optional_json<T: DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, Rejection> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// Decoded query pairs, repeated keys kept.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn new(raw: Option<String>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(super) fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn parsed<T: std::str::FromStr>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, Rejection> {
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
    pub(super) fn integer<T>(&self, name: &str, min: T, max: T) -> Result<Option<T>, Rejection>
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
