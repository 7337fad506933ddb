//! The history store's one writer: takes what is queued, writes it in one transaction per
//! batch, and applies retention once an hour (and at start).
//!
//! Every insert is idempotent (`ON CONFLICT DO NOTHING`, or an update keyed by the row), so a
//! record written twice (an event from a webhook and again from the poll, a decision and then
//! its final outcome) leaves one row. A batch the database refuses is logged and counted,
//! never retried forever: history must not grow a backlog that holds the process's memory.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::mpsc;

use super::{Clock, Record, Retention, Stats, ms};
use crate::engine::AlertStatus;

/// At most this many records go in one transaction.
const BATCH: usize = 2_000;
/// Retention runs this often.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Pool samples older than this are thinned to one per [`THIN_BUCKET_MS`].
const THIN_AFTER: Duration = Duration::from_secs(6 * 3600);
const THIN_BUCKET_MS: i64 = 300_000;

pub(super) struct Writer {
    pool: AnyPool,
    retention: Retention,
    clock: Clock,
    stats: std::sync::Arc<Stats>,
    /// This run of the agent, which numbers its decisions from 1.
    run_id: String,
}

impl Writer {
    pub(super) fn new(
        pool: AnyPool,
        retention: Retention,
        clock: Clock,
        stats: std::sync::Arc<Stats>,
        run_id: String,
    ) -> Writer {
        Writer {
            pool,
            retention,
            clock,
            stats,
            run_id,
        }
    }

    /// Writes until every sender is gone.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Record>) {
        self.expire().await;
        let mut last_retention = std::time::Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let got = tokio::time::timeout(RETENTION_EVERY, rx.recv_many(&mut batch, BATCH)).await;
            match got {
                Ok(0) => return,
                Ok(_) => self.write(&mut batch).await,
                Err(_) => {}
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = std::time::Instant::now();
                self.expire().await;
            }
        }
    }

    /// Writes a batch in one transaction, then answers its flushes.
    async fn write(&mut self, batch: &mut Vec<Record>) {
        let mut flushes = Vec::new();
        let mut rows = Vec::with_capacity(batch.len());
        for r in batch.drain(..) {
            match r {
                Record::Flush(tx) => flushes.push(tx),
                other => rows.push(other),
            }
        }
        if !rows.is_empty() {
            let n = rows.len() as u64;
            match self.write_rows(rows).await {
                Ok(()) => self.stats.written.fetch_add(n, Ordering::Relaxed),
                Err(e) => {
                    tracing::error!(error = %e, records = n, "cannot write to the history store; these records are lost");
                    self.stats.failed.fetch_add(n, Ordering::Relaxed)
                }
            };
        }
        for f in flushes {
            let _ = f.send(());
        }
    }

    async fn write_rows(&mut self, rows: Vec<Record>) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            self.insert(&mut tx, r).await?;
        }
        tx.commit().await
    }

    /// Writes one record.
    async fn insert(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        r: Record,
    ) -> Result<(), sqlx::Error> {
        match r {
            Record::Event {
                event,
                pool,
                source,
            } => {
                let body = serde_json::to_string(&event).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO events (id, at_ms, sandbox_id, pool, template_id, type, source, body) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(event.id.clone())
                .bind(ms(event.timestamp))
                .bind(event.sandbox_id.clone())
                .bind(pool)
                .bind(event.sandbox_template_id.clone())
                .bind(event.event_type.as_str().to_string())
                .bind(source.as_str())
                .bind(body)
                .execute(&mut **tx)
                .await?;
            }
            Record::Decision(d) => self.decision(tx, *d).await?,
            Record::Alert { notice, at } => alert(tx, *notice, at).await?,
            Record::ClaimGranted {
                claim_id,
                pool,
                sandbox_id,
                holder,
                at,
                expires_at,
            } => {
                sqlx::query(
                    "INSERT INTO claims (claim_id, pool, sandbox_id, holder, claimed_ms, expires_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (claim_id) DO NOTHING",
                )
                .bind(claim_id)
                .bind(pool)
                .bind(sandbox_id)
                .bind(holder)
                .bind(ms(at))
                .bind(ms(expires_at))
                .execute(&mut **tx)
                .await?;
            }
            Record::ClaimRenewed {
                claim_id,
                expires_at,
            } => {
                sqlx::query("UPDATE claims SET expires_ms = $1 WHERE claim_id = $2")
                    .bind(ms(expires_at))
                    .bind(claim_id)
                    .execute(&mut **tx)
                    .await?;
            }
            Record::ClaimEnded { claim_id, at, how } => {
                let how = serde_json::to_value(how)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                sqlx::query(
                    "UPDATE claims SET ended_ms = $1, end_reason = $2 WHERE claim_id = $3 AND ended_ms IS NULL",
                )
                .bind(ms(at))
                .bind(how)
                .bind(claim_id)
                .execute(&mut **tx)
                .await?;
            }
            Record::PoolSamples(samples) => pool_samples(tx, samples).await?,
            Record::SandboxSamples(samples) => sandbox_samples(tx, samples).await?,
            Record::Flush(_) => {}
        }
        Ok(())
    }

    /// A decision, or its final outcome: the row is keyed by (run, seq), so the second write
    /// of a create's decision updates its result, outcome and sandboxes.
    async fn decision(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        d: super::DecisionRow,
    ) -> Result<(), sqlx::Error> {
        let run = self.run_id.clone();
        let seq = d.seq as i64;
        sqlx::query(
            "INSERT INTO decisions (run_id, seq, at_ms, rule, kind, result, summary, outcome, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (run_id, seq) DO UPDATE SET result = excluded.result, \
             outcome = excluded.outcome, body = excluded.body",
        )
        .bind(run.clone())
        .bind(seq)
        .bind(ms(d.at))
        .bind(d.rule)
        .bind(d.kind)
        .bind(d.result)
        .bind(d.summary)
        .bind(d.outcome)
        .bind(d.body.to_string())
        .execute(&mut **tx)
        .await?;
        for id in d.sandbox_ids {
            sqlx::query(
                "INSERT INTO decision_sandboxes (sandbox_id, run_id, seq, at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sandbox_id, run_id, seq) DO NOTHING",
            )
            .bind(id)
            .bind(run.clone())
            .bind(seq)
            .bind(ms(d.at))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Deletes what is past retention and thins old pool samples; counts what it removed.
    async fn expire(&mut self) {
        let now = (self.clock)();
        let history = ms(now) - self.retention.history.as_millis() as i64;
        let samples = ms(now) - self.retention.samples.as_millis() as i64;
        let thin = ms(now) - THIN_AFTER.as_millis() as i64;
        let statements: [(&str, i64); 8] = [
            ("DELETE FROM events WHERE at_ms < $1", history),
            ("DELETE FROM decisions WHERE at_ms < $1", history),
            ("DELETE FROM decision_sandboxes WHERE at_ms < $1", history),
            (
                "DELETE FROM alerts WHERE resolved_ms IS NOT NULL AND resolved_ms < $1",
                history,
            ),
            (
                "DELETE FROM claims WHERE ended_ms IS NOT NULL AND ended_ms < $1",
                history,
            ),
            ("DELETE FROM pool_samples WHERE at_ms < $1", history),
            ("DELETE FROM sandbox_samples WHERE at_ms < $1", samples),
            (
                "DELETE FROM pool_samples WHERE at_ms < $1 AND EXISTS (SELECT 1 FROM pool_samples p \
                 WHERE p.pool = pool_samples.pool AND p.at_ms < pool_samples.at_ms \
                 AND p.at_ms / 300000 = pool_samples.at_ms / 300000)",
                thin,
            ),
        ];
        debug_assert_eq!(THIN_BUCKET_MS, 300_000);
        for (sql, before) in statements {
            match sqlx::query(sql).bind(before).execute(&self.pool).await {
                Ok(r) => {
                    self.stats
                        .expired
                        .fetch_add(r.rows_affected(), Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "history retention failed; will retry"),
            }
        }
    }
}

/// An alert transition: a firing opens an episode (repeats change nothing), a resolve closes
/// the open one.
async fn alert(
    tx: &mut Transaction<'static, Any>,
    n: crate::engine::AlertNotice,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    match n.status {
        AlertStatus::Firing => {
            let labels = serde_json::to_string(&n.labels).unwrap_or_default();
            sqlx::query(
                "INSERT INTO alerts (alert, subject, started_ms, severity, message, labels) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (alert, subject, started_ms) DO NOTHING",
            )
            .bind(n.alert)
            .bind(n.subject)
            .bind(ms(n.started_at))
            .bind(n.severity)
            .bind(n.message)
            .bind(labels)
            .execute(&mut **tx)
            .await?;
        }
        AlertStatus::Resolved => {
            sqlx::query(
                "UPDATE alerts SET resolved_ms = $1 WHERE alert = $2 AND subject = $3 AND resolved_ms IS NULL",
            )
            .bind(ms(at))
            .bind(n.alert)
            .bind(n.subject)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

async fn pool_samples(
    tx: &mut Transaction<'static, Any>,
    samples: Vec<super::PoolSample>,
) -> Result<(), sqlx::Error> {
    for s in samples {
        sqlx::query(
            "INSERT INTO pool_samples (pool, at_ms, desired, actual, pending, min_size, max_size, \
             claimed, idle, paused, waiting, busy_cores) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (pool, at_ms) DO NOTHING",
        )
        .bind(s.pool)
        .bind(ms(s.at))
        .bind(s.desired.map(i64::from))
        .bind(i64::from(s.actual))
        .bind(i64::from(s.pending))
        .bind(s.min.map(i64::from))
        .bind(s.max.map(i64::from))
        .bind(i64::from(s.claimed))
        .bind(i64::from(s.idle))
        .bind(i64::from(s.paused))
        .bind(i64::from(s.waiting))
        .bind(finite(s.busy_cores))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn sandbox_samples(
    tx: &mut Transaction<'static, Any>,
    samples: Vec<super::SandboxSample>,
) -> Result<(), sqlx::Error> {
    for s in samples {
        sqlx::query(
            "INSERT INTO sandbox_samples (sandbox_id, at_ms, pool, cpu_pct, cpu_count, mem_used, \
             mem_total, disk_used, disk_total) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (sandbox_id, at_ms) DO NOTHING",
        )
        .bind(s.sandbox_id)
        .bind(ms(s.at))
        .bind(s.pool)
        .bind(finite(s.cpu_pct))
        .bind(i64::from(s.cpu_count))
        .bind(clamp_i64(s.mem_used))
        .bind(clamp_i64(s.mem_total))
        .bind(clamp_i64(s.disk_used))
        .bind(clamp_i64(s.disk_total))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// NaN and infinities are stored as 0: a sample a server sent garbled is shown, not fatal.
fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
