//! The lifecycle events API: `GET /events/sandboxes` and `GET /events/sandboxes/{id}`,
//! with offset, limit, order and type filters.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;

use super::Emulator;
use super::extract::{Id, Query, Res, reply};
use crate::e2b::{EventQuery, EventType};
use crate::emulator::core::Rejection;

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

pub(super) async fn team_events(State(emu): State<Emulator>, RawQuery(raw): RawQuery) -> Res {
    let q = event_query(&Query::new(raw))?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.events(None, &q))?,
    ))
}

pub(super) async fn sandbox_events(
    State(emu): State<Emulator>,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Res {
    let q = event_query(&Query::new(raw))?;
    Ok(reply(
        StatusCode::OK,
        &emu.with_core(|c| c.events(Some(&id), &q))?,
    ))
}
