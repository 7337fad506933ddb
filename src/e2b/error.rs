//! Typed errors of E2B API calls.
//!
//! Every error keeps E2B's own message. None ever carries the API key: requests put the key
//! in a header, and neither headers nor request bodies are copied into an error.

use std::time::Duration;

/// Result of an E2B API call.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong with an E2B API call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// 400: the request was invalid.
    #[error("bad request: {message}")]
    BadRequest { message: String },
    /// 401 or 403: the key is missing, invalid or lacks access.
    #[error("unauthorized ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// 404: the sandbox, template or webhook does not exist.
    #[error("not found: {message}")]
    NotFound { message: String },
    /// 409: the call conflicts with the current state (e.g. pause a paused sandbox).
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// 429: a rate limit or the concurrency cap; `retry_after` from the Retry-After header.
    #[error("rate limited: {message}{}", fmt_retry(.retry_after))]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 5xx from E2B.
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    /// Another 4xx status.
    #[error("unexpected status {status}: {message}")]
    Status { status: u16, message: String },
    /// The request did not complete: connection refused, reset, or timed out.
    #[error("transport error: {0}")]
    Transport(String),
    /// The call was never sent: the caller stopped it (a replica that no longer leads).
    #[error("not sent: {0}")]
    NotSent(String),
    /// E2B answered, but the body is not what the API documents.
    #[error("cannot decode response: {0}")]
    Decode(String),
}

fn fmt_retry(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {})", humantime::format_duration(*d)),
        None => String::new(),
    }
}

impl Error {
    /// Maps an HTTP status and E2B's message to the typed error. Both the HTTP client and the
    /// in-process emulator API use this, so they fail the same way.
    pub fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Error {
        match status {
            400 => Error::BadRequest { message },
            401 | 403 => Error::Unauthorized { status, message },
            404 => Error::NotFound { message },
            409 => Error::Conflict { message },
            429 => Error::RateLimited {
                message,
                retry_after,
            },
            500..=599 => Error::Server { status, message },
            _ => Error::Status { status, message },
        }
    }

    /// The HTTP status E2B answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::BadRequest { .. } => Some(400),
            Error::Unauthorized { status, .. } => Some(*status),
            Error::NotFound { .. } => Some(404),
            Error::Conflict { .. } => Some(409),
            Error::RateLimited { .. } => Some(429),
            Error::Server { status, .. } | Error::Status { status, .. } => Some(*status),
            Error::Transport(_) | Error::Decode(_) | Error::NotSent(_) => None,
        }
    }

    /// True for the failures worth retrying: 429, 502, 503, 504 and transport errors.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server {
                    status: 502..=504,
                    ..
                }
                | Error::Transport(_)
        )
    }

    /// True when the request certainly reached no handler: a 429 is answered before any
    /// work is done, so even a non-idempotent call may be repeated after it; a call not sent
    /// never left.
    pub fn is_not_processed(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::NotSent(_))
    }

    /// The server's requested wait, for 429s that carried Retry-After.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds_and_keep_the_message() {
        let e = Error::from_status(404, "Sandbox \"x\" doesn't exist".into(), None);
        assert_eq!(
            e,
            Error::NotFound {
                message: "Sandbox \"x\" doesn't exist".into()
            }
        );
        assert_eq!(e.status(), Some(404));
        assert!(matches!(
            Error::from_status(409, "m".into(), None),
            Error::Conflict { .. }
        ));
        assert!(Error::from_status(503, "m".into(), None).is_transient());
        assert!(!Error::from_status(500, "m".into(), None).is_transient());
        let rl = Error::from_status(
            429,
            "Rate limit exceeded".into(),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(rl.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(
            rl.to_string(),
            "rate limited: Rate limit exceeded (retry after 2s)"
        );
    }
}
