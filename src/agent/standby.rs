//! What a standby shows (issue 14): with a store shared by replicas, a standby does not turn,
//! so what its read API, `/metrics`, `poolpilot status` and the status page show of the pools
//! now comes from the store instead: the engine state the leader saved after its last turn
//! (pool statuses, cooldowns, alerts), each pool's newest sizes from the history, and the
//! newest decisions. Members are listed by the leader only (they are not in the store).
//!
//! It only reads the store and writes the standby's own [`Status`]; it never acts.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::control::LoggedDecision;
use super::state::PersistedState;
use super::status::Publisher;
use crate::store::shared::Shared;
use crate::store::{History, read};

/// How many of the newest decisions a standby shows (as the leader keeps in memory).
const RECENT: u32 = 1000;

/// Refreshes a standby's status from the store; a store that cannot answer leaves it as it was
/// (logged at debug: the role already says the store is unreachable).
pub(crate) async fn refresh(
    shared: &Shared,
    history: &History,
    publisher: &Publisher,
    now: DateTime<Utc>,
) {
    let engine = match shared.load().await {
        Ok(Some((body, _))) => serde_json::from_str::<PersistedState>(&body)
            .ok()
            .map(|s| s.engine),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "a standby cannot read the leader's state");
            return;
        }
    };
    let sizes = read::latest_pool_samples(history.pool())
        .await
        .unwrap_or_default();
    let (actual, pending): (BTreeMap<_, _>, BTreeMap<_, _>) = sizes
        .iter()
        .map(|s| ((s.pool.clone(), s.actual), (s.pool.clone(), s.pending)))
        .unzip();
    let recent = newest_decisions(history, now).await;
    publisher.standby(engine, actual, pending, recent);
}

/// The newest decisions in the store, oldest first.
async fn newest_decisions(history: &History, now: DateTime<Utc>) -> Option<Vec<LoggedDecision>> {
    let since = now - TimeDelta::days(1);
    let bodies = read::decisions(history.pool(), None, since, RECENT)
        .await
        .ok()?;
    let mut list: Vec<LoggedDecision> = bodies
        .into_iter()
        .filter_map(|b| serde_json::from_value(b).ok())
        .collect();
    list.reverse();
    Some(list)
}
