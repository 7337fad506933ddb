//! The history store: what the agent saw and did, kept in a database so that an operator can
//! look back (issue 12): lifecycle events (deduplicated by E2B's id), decisions with their
//! causes and outcomes, alert episodes, claims, pool sizes and demand over time, and members'
//! metric samples.
//!
//! One schema (`migrations/`, versioned, run at open) on SQLite, the single agent's default
//! (`state_dir/history.db`, WAL), or PostgreSQL (`store: postgres://...`), through sqlx's Any
//! driver, so every query is written once.
//!
//! Writes never block the control loop: [`History::record`] puts a [`Record`] on a bounded
//! queue and returns; one writer task ([`write`]) takes what is queued, writes it in one
//! transaction and applies retention once an hour. A full queue drops the record and counts
//! it ([`Stats`]), with a warning at most once a minute: a slow disk costs history, never a
//! decision. Reads ([`read`]) go straight to the pool from the HTTP handlers and the CLI.
//!
//! This module never decides anything and never calls E2B; it keeps what it is given.
//!
//! [`Faults`] lets the seeded simulation (tests/simulation_ha.rs) make the lease's and the
//! shared state's calls fail, as a store that is down does; nothing in production sets it.

pub mod claims;
pub mod lease;
pub mod read;
pub mod shared;
mod write;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Connection as _, Executor as _};
use tokio::sync::{mpsc, oneshot};

use crate::e2b::LifecycleEvent;
use crate::engine::AlertNotice;

/// How many records may wait for the writer before new ones are dropped. A turn queues a few
/// dozen (members' samples are one record per turn), so this is hours of a stalled disk, in
/// bounded memory.
const QUEUE: usize = 16_384;

/// The versioned schema, the same for SQLite and PostgreSQL.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What time it is for retention: the agent's clock (sped up against a sped-up emulator).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How long history is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Events, decisions, alerts, claims and pool sizes (default 30 days; E2B keeps 7).
    pub history: Duration,
    /// Members' metric samples (default 24 hours): they are many.
    pub samples: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            history: Duration::from_secs(30 * 86_400),
            samples: Duration::from_secs(86_400),
        }
    }
}

/// Where a lifecycle event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Webhook,
    Poll,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Poll => "poll",
        }
    }
}

/// One decision as the store keeps it (built by the agent from its logged decision).
#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub rule: String,
    pub kind: String,
    pub result: String,
    pub summary: String,
    pub outcome: String,
    pub sandbox_ids: Vec<String>,
    /// The logged decision as `GET /api/v1/decisions` shows it.
    pub body: serde_json::Value,
}

/// One pool's sizes and demand at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSample {
    pub pool: String,
    pub at: DateTime<Utc>,
    pub desired: Option<u32>,
    pub actual: u32,
    pub pending: u32,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub claimed: u32,
    pub idle: u32,
    pub paused: u32,
    /// Claims waiting for a member.
    pub waiting: u32,
    /// Sum of `cpu_used_pct * cpu_count / 100` over the running members.
    pub busy_cores: f64,
}

/// One member's metric sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SandboxSample {
    pub sandbox_id: String,
    pub at: DateTime<Utc>,
    pub pool: Option<String>,
    pub cpu_pct: f64,
    pub cpu_count: u32,
    pub mem_used: u64,
    pub mem_total: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// How a claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimEnd {
    Released,
    Expired,
    Lost,
}

/// One thing to keep.
#[derive(Debug)]
pub enum Record {
    Event {
        event: Box<LifecycleEvent>,
        pool: Option<String>,
        source: Source,
    },
    /// A decision, or the same decision again with its final outcome (a create's).
    Decision(Box<DecisionRow>),
    /// An alert transition decided at `at`.
    Alert {
        notice: Box<AlertNotice>,
        at: DateTime<Utc>,
    },
    ClaimGranted {
        claim_id: String,
        pool: String,
        sandbox_id: String,
        holder: String,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    ClaimRenewed {
        claim_id: String,
        expires_at: DateTime<Utc>,
    },
    ClaimEnded {
        claim_id: String,
        at: DateTime<Utc>,
        how: ClaimEnd,
    },
    PoolSamples(Vec<PoolSample>),
    SandboxSamples(Vec<SandboxSample>),
    /// Answered once everything queued before it is written (tests, shutdown).
    Flush(oneshot::Sender<()>),
}

/// What the writer has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Lost in a batch the database refused.
    pub failed: AtomicU64,
    /// Rows removed by retention.
    pub expired: AtomicU64,
}

/// A switch that makes the replica's lease and shared-state calls fail while it is on, as a
/// store that is down or partitioned away makes them fail: for the seeded simulation only,
/// never turned on in production. Cheap to clone; clones share the switch.
#[derive(Clone, Default)]
pub struct Faults(Arc<std::sync::atomic::AtomicBool>);

impl Faults {
    /// Turns the store's failure on (every call errors) or off (calls go through again).
    pub fn fail(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether the store fails now.
    pub fn failing(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The error a call gets while the store fails; Ok otherwise.
    pub(crate) fn check(&self) -> Result<(), sqlx::Error> {
        if self.failing() {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "the store cannot be reached (a simulated fault)",
            )));
        }
        Ok(())
    }
}

/// The open store: the writer's queue and the pool readers use. Cheap to clone.
#[derive(Clone)]
pub struct History {
    tx: mpsc::Sender<Record>,
    pool: AnyPool,
    /// The connections of the lease and the shared state, apart from the history's writer
    /// and readers so that a busy status page or a big batch never delays a renewal.
    control: AnyPool,
    faults: Faults,
    run_id: Arc<str>,
    postgres: bool,
    stats: Arc<Stats>,
    last_drop_warning: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl History {
    /// Opens the store at `url` (`sqlite://path`, `sqlite::memory:` or `postgres://...`),
    /// runs the migrations, and starts the writer.
    pub async fn open(url: &str, retention: Retention, clock: Clock) -> anyhow::Result<History> {
        let pool = connect(url).await?;
        MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("migrate the history store at {}", redact(url)))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let run_id = uuid::Uuid::new_v4().to_string();
        let writer = write::Writer::new(
            pool.clone(),
            retention,
            clock,
            stats.clone(),
            run_id.clone(),
        );
        tokio::spawn(writer.run(rx));
        let control = if url.contains(":memory:") {
            pool.clone()
        } else {
            connect_sized(url, 2).await?
        };
        Ok(History {
            tx,
            pool,
            control,
            run_id: run_id.into(),
            postgres: is_postgres(url),
            stats,
            last_drop_warning: Arc::default(),
            faults: Faults::default(),
        })
    }

    /// Opens the SQLite store in `dir` (`history.db`), creating it when missing.
    pub async fn open_in(
        dir: &Path,
        retention: Retention,
        clock: Clock,
    ) -> anyhow::Result<History> {
        History::open(&sqlite_url(dir), retention, clock).await
    }

    /// Opens a store in memory (an agent with no state dir; tests).
    pub async fn in_memory(clock: Clock) -> anyhow::Result<History> {
        History::open("sqlite::memory:", Retention::default(), clock).await
    }

    /// Queues `record` for the writer; never waits. A full queue drops it, counted.
    pub fn record(&self, record: Record) {
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped(),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Record::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The pool readers query.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool of the lease and the shared state (see the field).
    pub fn control_pool(&self) -> &AnyPool {
        &self.control
    }

    /// This run of the agent, which numbers its decisions from 1.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The fault switch of this handle's lease and shared state (the seeded simulation's).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Whether the store is PostgreSQL (shared by replicas) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// Counts a dropped record and warns at most once a minute.
    fn dropped(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let mut last = crate::sync::lock(&self.last_drop_warning);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(
                "the history store's writer is behind; records are dropped (see poolpilot_history_records_total)"
            );
        }
    }
}

/// Opens the SQLite store in `dir` read-only, for a report beside a running agent; an error
/// names the file when there is none (the agent has not run there) or when it lacks a schema
/// version this build reads (an agent of another version wrote it).
pub async fn open_reader(dir: &Path) -> anyhow::Result<AnyPool> {
    let file = dir.join("history.db");
    if !file.is_file() {
        anyhow::bail!(
            "no history store at {}: has the agent run with this state dir?",
            file.display()
        );
    }
    install_default_drivers();
    let (pool, applied) = match open_read_only(&file, "mode=ro").await {
        // SQLite reads a WAL database through `history.db-shm`, which it cannot create in a
        // read-only directory. With no WAL left to read (the agent stopped cleanly), the file
        // alone is the whole store: read it as immutable.
        Err(e) if is_read_only_dir(&e) && !has_wal(&file) => {
            open_read_only(&file, "mode=ro&immutable=true").await
        }
        opened => opened,
    }
    .map_err(|e| read_only_hint(e, &file))?;
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| m.version.to_string())
        .collect();
    if !missing.is_empty() {
        pool.close().await;
        anyhow::bail!(
            "the history store at {} lacks schema versions {} of this poolpilot (an agent of \
             another version wrote it, or none has yet): run `poolpilot store migrate` on its \
             state dir, or the agent of this version, first",
            file.display(),
            missing.join(", ")
        );
    }
    Ok(pool)
}

/// The SQLite file opened with `params`, and its schema versions (none without sqlx's table).
async fn open_read_only(file: &Path, params: &str) -> anyhow::Result<(AnyPool, Vec<i64>)> {
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?{params}", file.display()))
        .await
        .with_context(|| format!("open the history store at {}", file.display()))?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .with_context(|| format!("read the history store at {}", file.display()))?;
    let applied = if tables == 0 {
        Vec::new()
    } else {
        applied(&pool)
            .await
            .with_context(|| format!("read the history store at {}", file.display()))?
    };
    Ok((pool, applied))
}

/// Whether SQLite refused because the file's directory is read-only.
fn is_read_only_dir(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("readonly")
}

/// Whether a non-empty `history.db-wal` sits beside `file`: writes not yet in the file.
fn has_wal(file: &Path) -> bool {
    let wal = file.with_extension("db-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

/// `e`, with what to do when SQLite could not open what it needs beside the file.
fn read_only_hint(e: anyhow::Error, file: &Path) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("readonly") || text.contains("unable to open database file") {
        e.context(format!(
            "cannot read {}: SQLite reads a store with writes in its WAL through \
             history.db-shm beside it, which this user cannot create or open there; run as \
             the agent's user, or copy the state dir somewhere writable",
            file.display()
        ))
    } else {
        e
    }
}

/// What `poolpilot store check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The schema versions applied, oldest first.
    pub applied: Vec<i64>,
    /// The versions this build has that the store has not applied yet.
    pub pending: Vec<i64>,
    /// Who holds the leader's lease, when a replica does.
    pub leader: Option<lease::Holder>,
    /// Rows per table.
    pub rows: Vec<(String, i64)>,
}

/// Runs the migrations this build has on the store at `url`; the versions it applied now.
pub async fn migrate(url: &str) -> anyhow::Result<Vec<i64>> {
    let pool = connect(url).await?;
    let before = applied(&pool).await.unwrap_or_default();
    MIGRATOR
        .run(&pool)
        .await
        .with_context(|| format!("migrate the store at {}", redact(url)))?;
    let after = applied(&pool).await?;
    pool.close().await;
    Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
}

/// Reads the store at `url` without changing it: its schema versions, the leader, row counts.
pub async fn check(url: &str) -> anyhow::Result<Health> {
    let pool = connect(url).await?;
    let applied = applied(&pool).await.unwrap_or_default();
    let pending = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    let mut rows = Vec::new();
    for table in [
        "events",
        "decisions",
        "alerts",
        "claims",
        "pool_samples",
        "sandbox_samples",
        "seen_events",
        "webhook_inbox",
        "live_claims",
        "dirty_members",
    ] {
        let n: Option<i64> = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .ok();
        if let Some(n) = n {
            rows.push((table.to_string(), n));
        }
    }
    let leader =
        match sqlx::query_scalar::<_, String>("SELECT holder FROM leases WHERE name = 'leader'")
            .fetch_optional(&pool)
            .await
        {
            Ok(Some(_)) => lease::current_holder(&pool, is_postgres(url))
                .await
                .ok()
                .flatten(),
            _ => None,
        };
    pool.close().await;
    Ok(Health {
        applied,
        pending,
        leader,
        rows,
    })
}

/// The schema versions applied to the store, from sqlx's own table.
async fn applied(pool: &AnyPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version")
        .fetch_all(pool)
        .await
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The SQLite URL of `dir/history.db`, created when missing.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("history.db").display())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A pool of connections to `url`; SQLite in WAL mode with `synchronous=NORMAL` (a crash
/// loses at most the last transactions, never the file), one connection for `:memory:`
/// (each connection would have its own database).
async fn connect(url: &str) -> anyhow::Result<AnyPool> {
    connect_sized(url, 4).await
}

/// Opens one connection to the SQLite file at `url` and sets it up as the pool would: a file
/// that is not a database fails here at once, naming the file, where the pool would retry
/// it until its acquire timeout and then say only that it timed out.
async fn probe_sqlite(url: &str) -> anyhow::Result<()> {
    let opened = async {
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.close().await
    };
    opened.await.with_context(|| {
        format!(
            "open the history store at {}: is it a poolpilot history store? \
             Move it aside and the agent starts a new one",
            redact(url)
        )
    })
}

/// [`connect`] with at most `size` connections (one for `:memory:`).
async fn connect_sized(url: &str, size: u32) -> anyhow::Result<AnyPool> {
    install_default_drivers();
    let memory = url.contains(":memory:");
    if !memory && !is_postgres(url) {
        probe_sqlite(url).await?;
    }
    let options = AnyPoolOptions::new()
        .max_connections(if memory { 1 } else { size })
        .min_connections(if memory { 1 } else { 0 })
        .idle_timeout((!memory).then_some(Duration::from_secs(600)))
        .max_lifetime((!memory).then_some(Duration::from_secs(1800)))
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                }
                Ok(())
            })
        });
    options
        .connect(url)
        .await
        .with_context(|| format!("open the history store at {}", redact(url)))
}

/// Milliseconds since the epoch, the store's time.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time of `ms` milliseconds since the epoch (the epoch itself if out of range).
pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests;
