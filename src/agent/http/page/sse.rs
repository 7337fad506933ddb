//! `GET /api/v1/stream`: Server-Sent Events for live views. A `turn` event (data:
//! `{"turn": n}`) follows every turn the loop publishes, at most one a second; a comment
//! keeps the connection alive every 15 s. At most [`MAX_STREAMS`] streams are open at once;
//! one more is a 503 saying so. Every stream ends when the agent shuts down.
//!
//! The stream carries no data of its own: it says *when* to look again (the status page
//! re-fetches itself). It never writes, and holds no lock while it waits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::http::{ServerState, error};
use crate::agent::status::{Status, Turns};

/// How many streams may be open at once.
pub(crate) const MAX_STREAMS: usize = 64;
/// A keep-alive comment this often.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// At most one event this often, however fast the loop turns.
const AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// `GET /api/v1/stream`.
pub(crate) async fn stream(State(s): State<ServerState>) -> Response {
    let Some(slot) = Slot::take(&s.status) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_STREAMS} streams are open already; close one or poll /api/v1/pools"),
        );
    };
    let turns = s.status.turns.subscribe();
    let events = futures_util::stream::unfold(
        Follow {
            turns,
            last: None,
            _slot: slot,
        },
        next_turn,
    );
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// One open stream's place among [`MAX_STREAMS`], given back when the stream is dropped.
struct Slot(Arc<Status>);

impl Slot {
    fn take(status: &Arc<Status>) -> Option<Slot> {
        let taken = status
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            });
        taken.ok().map(|_| Slot(status.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream between events: the signal it follows and when it last sent.
struct Follow {
    turns: watch::Receiver<Turns>,
    last: Option<Instant>,
    _slot: Slot,
}

/// The next `turn` event: after the next published turn, no sooner than [`AT_MOST_EVERY`]
/// after the last event; none (the stream ends) once the agent is closing.
async fn next_turn(mut f: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    if f.turns.borrow().closing {
        return None;
    }
    f.turns.changed().await.ok()?;
    if let Some(last) = f.last {
        tokio::time::sleep_until(last + AT_MOST_EVERY).await;
    }
    let turns = *f.turns.borrow_and_update();
    if turns.closing {
        return None;
    }
    f.last = Some(Instant::now());
    let event = Event::default()
        .event("turn")
        .id(turns.count.to_string())
        .data(format!("{{\"turn\":{}}}", turns.count));
    Some((Ok(event), f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::health::Health;

    fn status() -> Arc<Status> {
        let health = Health::new(Duration::from_secs(5), Duration::from_secs(5));
        Arc::new(Status::new(health, false, Arc::default()))
    }

    #[test]
    fn streams_are_bounded_and_give_their_place_back() {
        let status = status();
        let slots: Vec<Slot> = (0..MAX_STREAMS)
            .map(|_| Slot::take(&status).expect("a place"))
            .collect();
        assert!(Slot::take(&status).is_none(), "one more is refused");
        drop(slots);
        assert_eq!(status.streams.load(Ordering::Acquire), 0);
        assert!(Slot::take(&status).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_is_an_event_and_closing_ends_the_stream() {
        let status = status();
        let follow = Follow {
            turns: status.turns.subscribe(),
            last: None,
            _slot: Slot::take(&status).expect("a place"),
        };
        status.turns.send_modify(|t| t.count += 1);
        let (event, follow) = next_turn(follow).await.expect("an event");
        assert!(event.is_ok());
        status.turns.send_modify(|t| t.count += 1);
        status.turns.send_modify(|t| t.closing = true);
        assert!(next_turn(follow).await.is_none(), "closing ends it");
        assert_eq!(status.streams.load(Ordering::Acquire), 0);
    }
}
