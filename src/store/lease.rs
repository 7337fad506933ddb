//! The leader's lease (issue 14): one row in `leases`, taken by one replica at a time, with a
//! generation that grows at every change of holder. The generation is the fencing token: the
//! leader's writes ([`super::shared`]) succeed only while the row still names it with that
//! generation, and its creates carry it in their Idempotency-Key and metadata.
//!
//! Time is the database's clock, so replicas' clocks may disagree. A holder renews well
//! before the lease ends; [`Lease::hold`] answers whether it holds it now. How long the
//! holder may act after a renewal is the caller's to bound with its own monotonic clock, from
//! *before* the renewal was sent ([`crate::agent::leader`]): a holder paused past its lease
//! (GC, a stalled VM, SIGSTOP) finds its time up when it wakes, whatever the database says.
//!
//! The holder also writes where it serves its API (`address`), so a standby can forward the
//! claims API to it.
//!
//! The seeded simulation gives a lease its virtual clock ([`Lease::with_clock`]) and fails its
//! calls with the store's [`super::Faults`]; production never does either.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Row as _};

/// The one lease the agents contend for.
pub const LEADER: &str = "leader";

/// Now in ms since the epoch, when a simulation's virtual clock stands in for the database's.
pub type ClockMs = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A replica's side of a lease.
#[derive(Clone)]
pub struct Lease {
    pool: AnyPool,
    postgres: bool,
    name: String,
    holder: String,
    ttl: Duration,
    /// None in production: the database's clock, one for every replica.
    clock: Option<ClockMs>,
    faults: super::Faults,
    /// Where this replica serves its API (`http://host:port`), written with every renewal.
    address: Option<String>,
}

/// Who holds the lease, as the database says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub holder: String,
    pub generation: u64,
    /// Whether it is still within its time, by the database's clock.
    pub live: bool,
    /// Where it serves its API, when it said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Lease {
    /// `holder` is this replica's name, unique to this process; `ttl` how long a renewal
    /// holds.
    pub async fn new(
        history: &super::History,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, sqlx::Error> {
        let lease = Lease {
            pool: history.control_pool().clone(),
            postgres: history.is_postgres(),
            name: name.to_string(),
            holder: holder.to_string(),
            ttl,
            clock: None,
            faults: history.faults().clone(),
            address: None,
        };
        sqlx::query(
            "INSERT INTO leases (name, holder, generation, expires_ms) VALUES ($1, '', 0, 0) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(lease.name.clone())
        .execute(&lease.pool)
        .await?;
        Ok(lease)
    }

    /// Reads `clock` instead of the database's clock (a simulation on virtual time).
    pub fn with_clock(mut self, clock: ClockMs) -> Lease {
        self.clock = Some(clock);
        self
    }

    /// This replica serves its API at `address`: written with each renewal while it holds
    /// the lease.
    pub fn with_address(mut self, address: &str) -> Lease {
        self.address = Some(address.to_string());
        self
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if it is free or ours, renewing it for `ttl`: the generation when this
    /// replica holds it now, None when another does.
    pub async fn hold(&self) -> Result<Option<u64>, sqlx::Error> {
        self.faults.check()?;
        let now = self.db_now_ms().await?;
        let row = sqlx::query(
            "UPDATE leases SET \
               generation = CASE WHEN holder = $2 THEN generation ELSE generation + 1 END, \
               holder = $2, expires_ms = $3, address = $5 \
             WHERE name = $1 AND (holder = $2 OR expires_ms < $4) RETURNING generation",
        )
        .bind(self.name.clone())
        .bind(self.holder.clone())
        .bind(now + self.ttl.as_millis() as i64)
        .bind(now)
        .bind(self.address.clone())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(r.try_get::<i64, _>("generation")?.max(0) as u64)),
            None => Ok(None),
        }
    }

    /// Gives the lease up (at shutdown), so a standby takes over at once.
    pub async fn release(&self) -> Result<(), sqlx::Error> {
        self.faults.check()?;
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2")
            .bind(self.name.clone())
            .bind(self.holder.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds the lease now.
    pub async fn current(&self) -> Result<Option<Holder>, sqlx::Error> {
        self.faults.check()?;
        let now = self.db_now_ms().await?;
        holder_of(&self.pool, &self.name, now).await
    }

    /// The database's now (or the simulation's), in ms since the epoch: one clock for every
    /// replica.
    async fn db_now_ms(&self) -> Result<i64, sqlx::Error> {
        match &self.clock {
            Some(clock) => Ok(clock()),
            None => db_now_ms(&self.pool, self.postgres).await,
        }
    }
}

/// Who holds the leader's lease now, read without contending (`poolpilot store check`).
pub(crate) async fn current_holder(
    pool: &AnyPool,
    postgres: bool,
) -> Result<Option<Holder>, sqlx::Error> {
    let now = db_now_ms(pool, postgres).await?;
    holder_of(pool, LEADER, now).await
}

/// Who holds the lease `name`, and whether it is live at `now_ms`.
async fn holder_of(pool: &AnyPool, name: &str, now: i64) -> Result<Option<Holder>, sqlx::Error> {
    let row =
        sqlx::query("SELECT holder, generation, expires_ms, address FROM leases WHERE name = $1")
            .bind(name.to_string())
            .fetch_optional(pool)
            .await?;
    let Some(r) = row else { return Ok(None) };
    let holder: String = r.try_get("holder")?;
    if holder.is_empty() {
        return Ok(None);
    }
    Ok(Some(Holder {
        holder,
        generation: r.try_get::<i64, _>("generation")?.max(0) as u64,
        live: r.try_get::<i64, _>("expires_ms")? >= now,
        address: r.try_get::<Option<String>, _>("address")?,
    }))
}

/// The database's now, in ms since the epoch: one clock for every replica.
async fn db_now_ms(pool: &AnyPool, postgres: bool) -> Result<i64, sqlx::Error> {
    let sql = if postgres {
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now_ms"
    } else {
        "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms"
    };
    sqlx::query(sql)
        .fetch_one(pool)
        .await?
        .try_get::<i64, _>("now_ms")
}
