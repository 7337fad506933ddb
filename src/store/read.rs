//! Queries over the history store, for the read API, the status page and `events report`:
//! events by sandbox, pool, type and time (newest first, in pages with an opaque cursor), one
//! sandbox's timeline (Pattern 1), alert episodes, a pool's sizes over time, and the events a
//! report needs.
//!
//! Every query is one SQL text for SQLite and PostgreSQL; filters are bound parameters, never
//! spliced in. A stored body that no longer parses (written by a newer version) is skipped,
//! not fatal.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use super::{PoolSample, SandboxSample, at, ms};
use crate::e2b::LifecycleEvent;

/// The most rows one query answers.
pub const MAX_LIMIT: u32 = 1000;

/// What `GET /api/v1/events` asks for.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub sandbox: Option<String>,
    pub pool: Option<String>,
    /// Any of these types; empty is every type.
    pub types: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

/// A position in the newest-first order of events: strictly older than (time, id).
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    at_ms: i64,
    id: String,
}

impl Cursor {
    /// Reads a cursor as [`EventPage::next_cursor`] wrote it.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        Some(Cursor {
            at_ms: at.parse().ok()?,
            id: id.to_string(),
        })
    }

    fn render(&self) -> String {
        format!("{}.{}", self.at_ms, self.id)
    }
}

/// One stored event: the event as E2B sent it, the pool it was in, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub event: LifecycleEvent,
    pub pool: Option<String>,
    pub source: String,
}

/// A page of events, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A WHERE clause built from optional filters, with its parameters in order.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    /// Adds `clause`, where each `?` is the next parameter, taken from `args` in order.
    fn and(&mut self, clause: &str, args: Vec<Arg>) {
        let mut out = String::new();
        let mut rest = clause;
        for a in args {
            let Some(i) = rest.find('?') else { break };
            self.args.push(a);
            out.push_str(&rest[..i]);
            out.push_str(&format!("${}", self.args.len()));
            rest = &rest[i + 1..];
        }
        out.push_str(rest);
        self.clauses.push(out);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    async fn fetch(self, pool: &AnyPool, sql: &str) -> Result<Vec<AnyRow>, sqlx::Error> {
        let mut q = sqlx::query(sql);
        for a in self.args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        q.fetch_all(pool).await
    }
}

/// Events matching `f`, newest first, at most `f.limit`.
pub async fn events(pool: &AnyPool, f: &EventFilter) -> Result<EventPage, sqlx::Error> {
    let limit = f.limit.clamp(1, MAX_LIMIT);
    let mut w = Where::default();
    if let Some(s) = &f.sandbox {
        w.and("sandbox_id = ?", vec![Arg::Text(s.clone())]);
    }
    if let Some(p) = &f.pool {
        w.and("pool = ?", vec![Arg::Text(p.clone())]);
    }
    if !f.types.is_empty() {
        let marks = vec!["?"; f.types.len()].join(", ");
        let args = f.types.iter().map(|t| Arg::Text(t.clone())).collect();
        w.and(&format!("type IN ({marks})"), args);
    }
    if let Some(t) = f.since {
        w.and("at_ms >= ?", vec![Arg::Int(ms(t))]);
    }
    if let Some(t) = f.until {
        w.and("at_ms < ?", vec![Arg::Int(ms(t))]);
    }
    if let Some(c) = &f.cursor {
        w.and(
            "(at_ms < ? OR (at_ms = ? AND id < ?))",
            vec![
                Arg::Int(c.at_ms),
                Arg::Int(c.at_ms),
                Arg::Text(c.id.clone()),
            ],
        );
    }
    let sql = format!(
        "SELECT id, at_ms, pool, source, body FROM events{} ORDER BY at_ms DESC, id DESC LIMIT {}",
        w.sql(),
        limit + 1
    );
    let rows = w.fetch(pool, &sql).await?;
    let more = rows.len() > limit as usize;
    let mut events = Vec::new();
    let mut last = None;
    for row in rows.into_iter().take(limit as usize) {
        last = Some(Cursor {
            at_ms: row.try_get("at_ms")?,
            id: row.try_get("id")?,
        });
        if let Some(e) = stored_event(&row)? {
            events.push(e);
        }
    }
    Ok(EventPage {
        events,
        next_cursor: if more { last.map(|c| c.render()) } else { None },
    })
}

fn stored_event(row: &AnyRow) -> Result<Option<StoredEvent>, sqlx::Error> {
    let body: String = row.try_get("body")?;
    let Ok(event) = serde_json::from_str::<LifecycleEvent>(&body) else {
        return Ok(None);
    };
    Ok(Some(StoredEvent {
        event,
        pool: row.try_get("pool")?,
        source: row.try_get("source")?,
    }))
}

/// Every event at or after `since` (of `pool`, when given), oldest first: what a report
/// reads.
pub async fn events_since(
    pool: &AnyPool,
    since: DateTime<Utc>,
    of_pool: Option<&str>,
) -> Result<Vec<LifecycleEvent>, sqlx::Error> {
    let mut w = Where::default();
    w.and("at_ms >= ?", vec![Arg::Int(ms(since))]);
    if let Some(p) = of_pool {
        w.and("pool = ?", vec![Arg::Text(p.to_string())]);
    }
    let sql = format!(
        "SELECT id, at_ms, pool, source, body FROM events{} ORDER BY at_ms, id",
        w.sql()
    );
    let rows = w.fetch(pool, &sql).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(e) = stored_event(row)? {
            out.push(e.event);
        }
    }
    Ok(out)
}

/// One thing that happened to a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// `event`, `decision` or `claim`.
    pub kind: &'static str,
    /// One line: the event type, the decision's cause, the claim's holder.
    pub what: String,
    /// The event, the logged decision, or the claim, as the API shows them.
    pub detail: serde_json::Value,
}

/// Pattern 1: everything known about one sandbox, oldest first, with its metric samples.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub sandbox_id: String,
    pub pool: Option<String>,
    pub entries: Vec<Entry>,
    pub samples: Vec<SandboxSample>,
}

/// The timeline of `sandbox_id`; `None` when the store knows nothing of it.
pub async fn timeline(pool: &AnyPool, sandbox_id: &str) -> Result<Option<Timeline>, sqlx::Error> {
    let mut entries = timeline_events(pool, sandbox_id).await?;
    entries.extend(timeline_decisions(pool, sandbox_id).await?);
    entries.extend(timeline_claims(pool, sandbox_id).await?);
    let samples = samples_of(pool, sandbox_id).await?;
    if entries.is_empty() && samples.is_empty() {
        return Ok(None);
    }
    entries.sort_by_key(|e| e.at);
    let pool_name = samples
        .iter()
        .find_map(|s| s.pool.clone())
        .or_else(|| entries.iter().find_map(|e| pool_of(&e.detail)));
    Ok(Some(Timeline {
        sandbox_id: sandbox_id.to_string(),
        pool: pool_name,
        entries,
        samples,
    }))
}

fn pool_of(detail: &serde_json::Value) -> Option<String> {
    detail.get("pool")?.as_str().map(str::to_string)
}

async fn timeline_events(pool: &AnyPool, id: &str) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at_ms, pool, source, body FROM events WHERE sandbox_id = $1 \
         ORDER BY at_ms, id LIMIT 1000",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let Some(e) = stored_event(row)? else {
            continue;
        };
        let what = match e.event.kill_reason() {
            Some(r) => format!("{} ({r})", e.event.event_type.as_str()),
            None => e.event.event_type.as_str().to_string(),
        };
        out.push(Entry {
            at: e.event.timestamp,
            kind: "event",
            what,
            detail: serde_json::to_value(&e).unwrap_or_default(),
        });
    }
    Ok(out)
}

async fn timeline_decisions(pool: &AnyPool, id: &str) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.at_ms, d.summary, d.outcome, d.body FROM decision_sandboxes s \
         JOIN decisions d ON d.run_id = s.run_id AND d.seq = s.seq \
         WHERE s.sandbox_id = $1 ORDER BY d.at_ms LIMIT 1000",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let body: String = row.try_get("body")?;
        let summary: String = row.try_get("summary")?;
        let outcome: String = row.try_get("outcome")?;
        out.push(Entry {
            at: at(row.try_get("at_ms")?),
            kind: "decision",
            what: format!("{summary} -> {outcome}"),
            detail: serde_json::from_str(&body).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A claim as the store keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimRow {
    pub claim_id: String,
    pub pool: String,
    pub sandbox_id: String,
    pub holder: String,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `released`, `expired` or `lost`; absent while held.
    pub end_reason: Option<String>,
}

async fn timeline_claims(pool: &AnyPool, id: &str) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT claim_id, pool, sandbox_id, holder, claimed_ms, expires_ms, ended_ms, end_reason \
         FROM claims WHERE sandbox_id = $1 ORDER BY claimed_ms LIMIT 1000",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let c = ClaimRow {
            claim_id: row.try_get("claim_id")?,
            pool: row.try_get("pool")?,
            sandbox_id: row.try_get("sandbox_id")?,
            holder: row.try_get("holder")?,
            claimed_at: at(row.try_get("claimed_ms")?),
            expires_at: at(row.try_get("expires_ms")?),
            ended_at: row.try_get::<Option<i64>, _>("ended_ms")?.map(at),
            end_reason: row.try_get("end_reason")?,
        };
        let detail = serde_json::to_value(&c).unwrap_or_default();
        out.push(Entry {
            at: c.claimed_at,
            kind: "claim",
            what: format!("claimed by {}", c.holder),
            detail: detail.clone(),
        });
        if let (Some(ended), Some(how)) = (c.ended_at, &c.end_reason) {
            out.push(Entry {
                at: ended,
                kind: "claim",
                what: format!("claim by {} ended: {how}", c.holder),
                detail,
            });
        }
    }
    Ok(out)
}

/// The newest 1000 metric samples of one sandbox, oldest first.
pub async fn samples_of(pool: &AnyPool, id: &str) -> Result<Vec<SandboxSample>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sandbox_id, at_ms, pool, cpu_pct, cpu_count, mem_used, mem_total, disk_used, \
         disk_total FROM sandbox_samples WHERE sandbox_id = $1 ORDER BY at_ms DESC LIMIT 1000",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .iter()
        .map(sandbox_sample)
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

/// The metric samples of a pool's members at or after `since`, oldest first (sparklines).
pub async fn pool_member_samples(
    pool: &AnyPool,
    of_pool: &str,
    since: DateTime<Utc>,
) -> Result<Vec<SandboxSample>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sandbox_id, at_ms, pool, cpu_pct, cpu_count, mem_used, mem_total, disk_used, \
         disk_total FROM sandbox_samples WHERE pool = $1 AND at_ms >= $2 ORDER BY at_ms LIMIT 20000",
    )
    .bind(of_pool.to_string())
    .bind(ms(since))
    .fetch_all(pool)
    .await?;
    rows.iter().map(sandbox_sample).collect()
}

fn sandbox_sample(row: &AnyRow) -> Result<SandboxSample, sqlx::Error> {
    Ok(SandboxSample {
        sandbox_id: row.try_get("sandbox_id")?,
        at: at(row.try_get("at_ms")?),
        pool: row.try_get("pool")?,
        cpu_pct: row.try_get("cpu_pct")?,
        cpu_count: u32_of(row.try_get("cpu_count")?),
        mem_used: u64_of(row.try_get("mem_used")?),
        mem_total: u64_of(row.try_get("mem_total")?),
        disk_used: u64_of(row.try_get("disk_used")?),
        disk_total: u64_of(row.try_get("disk_total")?),
    })
}

/// Which alert episodes to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFilter {
    /// Still firing, whenever they started.
    Firing,
    /// Resolved at or after `since`.
    Resolved,
    /// Firing, or resolved at or after `since`.
    All,
}

/// One alert from firing to resolved.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEpisode {
    pub alert: String,
    pub subject: String,
    pub state: &'static str,
    pub severity: String,
    pub message: String,
    pub labels: serde_json::Value,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Alert episodes by `filter`, newest first, at most [`MAX_LIMIT`].
pub async fn alerts(
    pool: &AnyPool,
    filter: AlertFilter,
    since: DateTime<Utc>,
) -> Result<Vec<AlertEpisode>, sqlx::Error> {
    let mut w = Where::default();
    match filter {
        AlertFilter::Firing => w.and("resolved_ms IS NULL", vec![]),
        AlertFilter::Resolved => w.and("resolved_ms >= ?", vec![Arg::Int(ms(since))]),
        AlertFilter::All => w.and(
            "(resolved_ms IS NULL OR resolved_ms >= ?)",
            vec![Arg::Int(ms(since))],
        ),
    }
    let sql = format!(
        "SELECT alert, subject, started_ms, resolved_ms, severity, message, labels FROM alerts{} \
         ORDER BY started_ms DESC LIMIT {MAX_LIMIT}",
        w.sql()
    );
    let rows = w.fetch(pool, &sql).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let resolved: Option<i64> = row.try_get("resolved_ms")?;
        let labels: String = row.try_get("labels")?;
        out.push(AlertEpisode {
            alert: row.try_get("alert")?,
            subject: row.try_get("subject")?,
            state: if resolved.is_some() {
                "resolved"
            } else {
                "firing"
            },
            severity: row.try_get("severity")?,
            message: row.try_get("message")?,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            started_at: at(row.try_get("started_ms")?),
            resolved_at: resolved.map(at),
        });
    }
    Ok(out)
}

/// A pool's sizes and demand at or after `since`, oldest first, at most 5000 rows.
pub async fn pool_history(
    pool: &AnyPool,
    of_pool: &str,
    since: DateTime<Utc>,
) -> Result<Vec<PoolSample>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pool, at_ms, desired, actual, pending, min_size, max_size, claimed, idle, paused, \
         waiting, busy_cores FROM pool_samples WHERE pool = $1 AND at_ms >= $2 \
         ORDER BY at_ms LIMIT 5000",
    )
    .bind(of_pool.to_string())
    .bind(ms(since))
    .fetch_all(pool)
    .await?;
    rows.iter().map(pool_sample).collect()
}

fn pool_sample(row: &AnyRow) -> Result<PoolSample, sqlx::Error> {
    Ok(PoolSample {
        pool: row.try_get("pool")?,
        at: at(row.try_get("at_ms")?),
        desired: row.try_get::<Option<i64>, _>("desired")?.map(u32_of),
        actual: u32_of(row.try_get("actual")?),
        pending: u32_of(row.try_get("pending")?),
        min: row.try_get::<Option<i64>, _>("min_size")?.map(u32_of),
        max: row.try_get::<Option<i64>, _>("max_size")?.map(u32_of),
        claimed: u32_of(row.try_get("claimed")?),
        idle: u32_of(row.try_get("idle")?),
        paused: u32_of(row.try_get("paused")?),
        waiting: u32_of(row.try_get("waiting")?),
        busy_cores: row.try_get("busy_cores")?,
    })
}

/// The newest decisions (of `rule`, when given) at or after `since`, newest first, as the
/// decision log shows them.
pub async fn decisions(
    pool: &AnyPool,
    rule: Option<&str>,
    since: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let mut w = Where::default();
    w.and("at_ms >= ?", vec![Arg::Int(ms(since))]);
    if let Some(r) = rule {
        w.and("rule = ?", vec![Arg::Text(r.to_string())]);
    }
    let sql = format!(
        "SELECT body FROM decisions{} ORDER BY at_ms DESC, seq DESC LIMIT {}",
        w.sql(),
        limit.clamp(1, MAX_LIMIT)
    );
    let rows = w.fetch(pool, &sql).await?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get("body")?;
            Ok(serde_json::from_str(&body).unwrap_or_default())
        })
        .collect()
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// What `poolpilot record` reads (src/simulate/record.rs turns it into a scenario): pools'
// sizes and demand, their members' shapes, templates, boot delays, kills and claims, each
// over a span of time. Plain SQL with bound parameters, the same on SQLite and PostgreSQL.
// ---------------------------------------------------------------------------------------------

/// The most rows one of `record`'s queries reads: a day of 10 s samples of a few dozen pools.
pub const RECORD_LIMIT: u32 = 500_000;

/// The rows of `sql`, whose `$1` and `$2` are the span's start and end.
async fn rows_in_span(
    pool: &AnyPool,
    sql: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(ms(since))
        .bind(ms(until))
        .fetch_all(pool)
        .await
}

/// Every pool's samples in `[since, until]`, oldest first.
pub async fn record_pool_samples(
    pool: &AnyPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<PoolSample>, sqlx::Error> {
    let rows = rows_in_span(pool, &format!(
        "SELECT pool, at_ms, desired, actual, pending, min_size, max_size, claimed, idle, paused, \
         waiting, busy_cores FROM pool_samples WHERE at_ms >= $1 AND at_ms <= $2 \
         ORDER BY at_ms, pool LIMIT {RECORD_LIMIT}"
    ), since, until).await?;
    rows.iter().map(pool_sample).collect()
}

/// The time of the newest pool sample, if any: where a recording ends by default.
pub async fn newest_pool_sample(pool: &AnyPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row = sqlx::query("SELECT MAX(at_ms) AS newest FROM pool_samples")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<Option<i64>, _>("newest")?.map(at))
}

/// How often each (pool, template) pair was seen created, from the created events.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub pool: String,
    pub value: String,
    pub count: u64,
}

/// The templates each pool's members were created from, with how many were, over all time
/// (a pool's members may all predate the span recorded).
pub async fn record_pool_templates(pool: &AnyPool) -> Result<Vec<Seen>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pool, template_id, COUNT(*) AS n FROM events \
         WHERE type = 'sandbox.lifecycle.created' AND pool IS NOT NULL \
         AND template_id IS NOT NULL GROUP BY pool, template_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Seen {
                pool: r.try_get("pool")?,
                value: r.try_get("template_id")?,
                count: u64_of(r.try_get("n")?),
            })
        })
        .collect()
}

/// A member shape of a pool: its vCPUs, memory and disk, and how many samples showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub pool: String,
    pub cpu_count: u32,
    pub mem_total: u64,
    pub disk_total: u64,
    pub count: u64,
}

/// The shapes of each pool's members in `[since, until]`, from their metric samples.
pub async fn record_member_shapes(
    pool: &AnyPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Shape>, sqlx::Error> {
    let rows = rows_in_span(
        pool,
        "SELECT pool, cpu_count, mem_total, disk_total, COUNT(*) AS n FROM sandbox_samples \
         WHERE pool IS NOT NULL AND at_ms >= $1 AND at_ms <= $2 \
         GROUP BY pool, cpu_count, mem_total, disk_total",
        since,
        until,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Shape {
                pool: r.try_get("pool")?,
                cpu_count: u32_of(r.try_get("cpu_count")?),
                mem_total: u64_of(r.try_get("mem_total")?),
                disk_total: u64_of(r.try_get("disk_total")?),
                count: u64_of(r.try_get("n")?),
            })
        })
        .collect()
}

/// How long one create decision waited for its first member's created event.
#[derive(Debug, Clone, PartialEq)]
pub struct BootDelay {
    pub pool: String,
    pub millis: i64,
}

/// For each create decision in `[since, until]` with a created event of one of its
/// sandboxes, the delay from the decision to the first such event: E2B answers a create
/// with a booted sandbox, so the shortest of these delays is the boot time.
pub async fn record_boot_delays(
    pool: &AnyPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<BootDelay>, sqlx::Error> {
    let rows = rows_in_span(
        pool,
        &format!(
            "SELECT e.pool AS pool, MIN(e.at_ms - d.at_ms) AS delay FROM decisions d \
         JOIN decision_sandboxes s ON s.run_id = d.run_id AND s.seq = d.seq \
         JOIN events e ON e.sandbox_id = s.sandbox_id \
         WHERE d.kind = 'create' AND e.type = 'sandbox.lifecycle.created' \
         AND e.pool IS NOT NULL AND e.at_ms >= d.at_ms AND d.at_ms >= $1 AND d.at_ms <= $2 \
         GROUP BY d.run_id, d.seq, e.pool LIMIT {RECORD_LIMIT}"
        ),
        since,
        until,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(BootDelay {
                pool: r.try_get("pool")?,
                millis: r.try_get("delay")?,
            })
        })
        .collect()
}

/// The killed events of pool members in `[since, until]`, oldest first.
pub async fn record_kills(
    pool: &AnyPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = rows_in_span(
        pool,
        &format!(
            "SELECT id, at_ms, pool, source, body FROM events \
         WHERE type = 'sandbox.lifecycle.killed' AND pool IS NOT NULL \
         AND at_ms >= $1 AND at_ms <= $2 ORDER BY at_ms, id LIMIT {RECORD_LIMIT}"
        ),
        since,
        until,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(e) = stored_event(row)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// One claim as a job: its pool, when it was granted and when it ended (if it has).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimSpan {
    pub pool: String,
    pub claimed_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The claims granted in `[since, until]`, oldest first.
pub async fn record_claims(
    pool: &AnyPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ClaimSpan>, sqlx::Error> {
    let rows = rows_in_span(
        pool,
        &format!(
            "SELECT pool, claimed_ms, ended_ms FROM claims WHERE claimed_ms >= $1 \
         AND claimed_ms <= $2 ORDER BY claimed_ms LIMIT {RECORD_LIMIT}"
        ),
        since,
        until,
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ClaimSpan {
                pool: r.try_get("pool")?,
                claimed_at: at(r.try_get("claimed_ms")?),
                ended_at: r.try_get::<Option<i64>, _>("ended_ms")?.map(at),
            })
        })
        .collect()
}

/// Each pool's newest sample (what a standby shows as the pool now).
pub async fn latest_pool_samples(pool: &AnyPool) -> Result<Vec<PoolSample>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT pool, at_ms, desired, actual, pending, min_size, max_size, claimed, idle, paused, \
         waiting, busy_cores FROM pool_samples p \
         WHERE at_ms = (SELECT MAX(at_ms) FROM pool_samples q WHERE q.pool = p.pool) \
         ORDER BY pool",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(pool_sample).collect()
}
