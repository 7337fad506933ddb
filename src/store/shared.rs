//! What replicas sharing a store hand over at a failover (issue 14): the leader's saved state
//! (`agent_state`: engine state, events cursor, creates in flight, as the JSON `state.json`
//! holds), the ids of the events it acted on (`seen_events`), and the webhook deliveries
//! standbys received for it (`webhook_inbox`).
//!
//! Every write is fenced: it runs in a transaction that first reads the lease row (locking it
//! against a takeover on PostgreSQL, `FOR SHARE`) and writes only when the row still names
//! this replica with its generation. A deposed leader's write changes nothing and is told so
//! ([`Fenced`]), whatever its own clock believes.
//!
//! While the store's [`super::Faults`] switch is on (the seeded simulation only), every call
//! fails before it reaches the database.

use sqlx::{Any, AnyPool, Row as _, Transaction};

use super::lease::LEADER;
use crate::e2b::LifecycleEvent;

/// The one saved state the leader writes.
const STATE: &str = "main";

/// The write was refused: this replica no longer holds the lease with that generation.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("not written: this replica no longer leads (generation {0} was superseded)")]
    Fenced(u64),
    #[error("the store: {0}")]
    Store(#[from] sqlx::Error),
}

pub use SharedError::Fenced;

/// A replica's handle on the shared state.
#[derive(Clone)]
pub struct Shared {
    pool: AnyPool,
    postgres: bool,
    holder: String,
    faults: super::Faults,
}

impl Shared {
    pub fn new(history: &super::History, holder: &str) -> Shared {
        Shared {
            pool: history.control_pool().clone(),
            postgres: history.is_postgres(),
            holder: holder.to_string(),
            faults: history.faults().clone(),
        }
    }

    /// The saved state's JSON and the generation that wrote it; None before any leader saved.
    pub async fn load(&self) -> Result<Option<(String, u64)>, sqlx::Error> {
        self.faults.check()?;
        let row = sqlx::query("SELECT body, generation FROM agent_state WHERE name = $1")
            .bind(STATE)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some((
                r.try_get("body")?,
                r.try_get::<i64, _>("generation")?.max(0) as u64,
            ))),
            None => Ok(None),
        }
    }

    /// The ids of events acted on at or after `since_ms`, newest first, at most `limit`.
    pub async fn seen_since(
        &self,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        self.faults.check()?;
        let rows = sqlx::query(&format!(
            "SELECT id, at_ms FROM seen_events WHERE at_ms >= $1 ORDER BY at_ms DESC LIMIT {}",
            limit.max(1)
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("at_ms")?)))
            .collect()
    }

    /// Saves the state's JSON as generation `generation`'s, if this replica still leads with it.
    pub async fn save(&self, generation: u64, body: &str, now_ms: i64) -> Result<(), SharedError> {
        let mut tx = self.fenced(generation).await?;
        sqlx::query(
            "INSERT INTO agent_state (name, generation, body, saved_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET generation = excluded.generation, \
             body = excluded.body, saved_ms = excluded.saved_ms",
        )
        .bind(STATE)
        .bind(generation as i64)
        .bind(body.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the ids of events about to be acted on, if this replica still leads; ids
    /// already there are left as they are.
    pub async fn record_seen(
        &self,
        generation: u64,
        ids: &[(String, i64)],
    ) -> Result<(), SharedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.fenced(generation).await?;
        for (id, at) in ids {
            sqlx::query(
                "INSERT INTO seen_events (id, at_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id.clone())
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Leaves verified webhook deliveries for the leader (any replica may): each event once.
    pub async fn push_inbox(&self, events: &[LifecycleEvent]) -> Result<(), sqlx::Error> {
        self.faults.check()?;
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO webhook_inbox (id, at_ms, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.id.clone())
            .bind(e.timestamp.timestamp_millis())
            .bind(serde_json::to_string(e).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Takes up to `limit` deliveries from the inbox, oldest first, if this replica still
    /// leads with `generation`; a deposed leader takes nothing.
    pub async fn take_inbox(
        &self,
        generation: u64,
        limit: usize,
    ) -> Result<Vec<LifecycleEvent>, SharedError> {
        let mut tx = self.fenced(generation).await?;
        let rows = sqlx::query(&format!(
            "SELECT id, body FROM webhook_inbox ORDER BY at_ms, id LIMIT {}",
            limit.max(1)
        ))
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            sqlx::query("DELETE FROM webhook_inbox WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let body: String = r.try_get("body")?;
            if let Ok(e) = serde_json::from_str(&body) {
                events.push(e);
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    /// Forgets the ids of events older than `before_ms` (no poll can return them again).
    pub async fn forget_seen(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        self.faults.check()?;
        let r = sqlx::query("DELETE FROM seen_events WHERE at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// A transaction in which this replica holds the lease with `generation`: the lease row
    /// is locked against a takeover until it commits (PostgreSQL; SQLite has one writer).
    pub(super) async fn fenced(
        &self,
        generation: u64,
    ) -> Result<Transaction<'static, Any>, SharedError> {
        self.faults.check()?;
        let mut tx = self.pool.begin().await?;
        let lock = if self.postgres { " FOR SHARE" } else { "" };
        let row = sqlx::query(&format!(
            "SELECT holder, generation FROM leases WHERE name = $1{lock}"
        ))
        .bind(LEADER)
        .fetch_optional(&mut *tx)
        .await?;
        let holds = row.is_some_and(|r| {
            r.try_get::<String, _>("holder")
                .is_ok_and(|h| h == self.holder)
                && r.try_get::<i64, _>("generation")
                    .is_ok_and(|g| g == generation as i64)
        });
        if !holds {
            let _ = tx.rollback().await;
            return Err(Fenced(generation));
        }
        Ok(tx)
    }
}
