//! Claims: a pool becomes a service. An application takes a member for itself (a claim with a
//! lease), uses it through E2B's `Sandbox.connect(id)`, renews and releases it; what then
//! happens to the member is the pool's `claims.on_release`.
//!
//! - [`ledger`]: who holds what, under one lock; the promise that no member is handed to two
//!   holders lives there;
//! - [`journal`]: what survives a restart;
//! - [`durable`]: what survives a failover, with a store shared by replicas: only the leader
//!   serves claims ([`Claims::local`]), and a holder hears of a claim, renewal or release only
//!   once it is written there;
//! - this file: the [`Claims`] service the HTTP handlers and the control loop share. It waits
//!   for a member when none is free, resumes a paused one, sets a claimed member's timeout to
//!   its lease's end (never shorter than it was), kills or returns released members, and ends
//!   expired leases. Its E2B calls are reactions to a holder's request, so they happen here,
//!   not through the engine's decisions; scale-in kills and pauses come the other way, through
//!   [`Claims::reserve`], which never yields a claimed member.
//!
//! Time comes from the agent's clock (injected), so leases follow `--speed` and tests.

mod durable;
pub mod journal;
pub mod ledger;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::Notify;

use super::budget::Budget;
use crate::e2b::{E2bApi, Error};
use crate::engine::{ObservedSandbox, PoolClaims};
use crate::rules::{OnRelease, RuleSet};
use crate::store::claims::{ClaimOp, ClaimStore};
use crate::store::{ClaimEnd, History, Record};
use crate::sync::lock;
use durable::{Saved, Writer, live, written};
use journal::Journal;
pub use ledger::Claim;
use ledger::{EndReason, Ended, Ledger, Refusal, Take};

/// The agent's time, as a function.
pub(crate) type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How a claim was served: the `result` label of `poolpilot_claims_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimResult {
    /// A running idle member, at once.
    Ok,
    /// After waiting for a member (a create, a return).
    Waited,
    /// A paused member, resumed.
    Resumed,
    /// No member within the wait.
    TimedOut,
    /// Not served: unknown pool, bad request, not ready, a conflicting Idempotency-Key.
    Refused,
}

impl ClaimResult {
    pub(crate) const ALL: [ClaimResult; 5] = [
        ClaimResult::Ok,
        ClaimResult::Waited,
        ClaimResult::Resumed,
        ClaimResult::TimedOut,
        ClaimResult::Refused,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClaimResult::Ok => "ok",
            ClaimResult::Waited => "waited",
            ClaimResult::Resumed => "resumed",
            ClaimResult::TimedOut => "timed_out",
            ClaimResult::Refused => "refused",
        }
    }
}

/// What a claim asks for.
#[derive(Debug, Clone, Default)]
pub struct ClaimRequest {
    pub holder: Option<String>,
    pub lease: Option<Duration>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    /// How long to wait for a member when none is free.
    pub wait: Duration,
}

/// A claim granted.
#[derive(Debug, Clone)]
pub struct Granted {
    pub claim: Claim,
    pub result: ClaimResult,
    /// The same Idempotency-Key made this claim before: it is given again.
    pub replayed: bool,
}

/// Why a claim, renewal or release was not done; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimError {
    UnknownPool(String),
    NotFound(String),
    Invalid(String),
    /// Before the first observation: retry shortly.
    NotReady,
    /// Another request with this Idempotency-Key is being served.
    KeyInProgress,
    /// The claim this Idempotency-Key made has ended.
    KeyEnded(String),
    /// Nothing free within the wait: retry after this long.
    Exhausted {
        retry_after: Duration,
    },
    /// The change could not be written to the shared store, so it was not made.
    Unsaved,
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::UnknownPool(p) => write!(f, "no pool named {p:?}"),
            ClaimError::NotFound(id) => write!(
                f,
                "no active claim {id:?} (released, expired, or its sandbox is gone)"
            ),
            ClaimError::Invalid(m) => f.write_str(m),
            ClaimError::NotReady => {
                f.write_str("the agent has not observed the pools yet; retry in a second")
            }
            ClaimError::KeyInProgress => f.write_str(
                "a claim with this Idempotency-Key is being served; retry once it answers",
            ),
            ClaimError::KeyEnded(id) => write!(
                f,
                "the claim this Idempotency-Key made ({id}) has ended; use a new key for a new claim"
            ),
            ClaimError::Exhausted { .. } => {
                f.write_str("no member free within the wait; the pool is growing, retry shortly")
            }
            ClaimError::Unsaved => f.write_str(
                "the change could not be saved to the shared store (this replica may no longer lead, or the store is unreachable); nothing changed, retry in a second",
            ),
        }
    }
}

/// Counters and a latency histogram for `/metrics`.
#[derive(Default)]
pub(crate) struct ClaimMetrics {
    pub(crate) results: Mutex<BTreeMap<(String, ClaimResult), u64>>,
    pub(crate) latency: Mutex<BTreeMap<String, LatencyHistogram>>,
    pub(crate) expired: Mutex<BTreeMap<String, u64>>,
    pub(crate) lost: Mutex<BTreeMap<String, u64>>,
}

/// Latency buckets of `poolpilot_claim_duration_seconds`: from a ready member (sub-millisecond) to a
/// resume or a wait for a create (seconds).
pub(crate) const CLAIM_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
pub(crate) struct LatencyHistogram {
    pub(crate) counts: [u64; CLAIM_BUCKETS.len()],
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl ClaimMetrics {
    fn count(&self, pool: &str, r: ClaimResult, took: Option<Duration>) {
        *lock(&self.results)
            .entry((pool.to_string(), r))
            .or_default() += 1;
        let Some(took) = took else { return };
        let secs = took.as_secs_f64();
        let mut l = lock(&self.latency);
        let h = l.entry(pool.to_string()).or_default();
        for (i, b) in CLAIM_BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }
}

/// The ledger and its journal, changed together under one lock so the journal's order is the
/// ledger's; the history store, and a shared store, are told of the same changes.
struct Book {
    ledger: Ledger,
    journal: Option<Journal>,
    history: Option<History>,
    /// With a store shared by replicas: its writer.
    writer: Option<Writer>,
    /// With a shared store, the generation this replica leads with; claims are served here
    /// only then.
    generation: Option<u64>,
    /// Grants whose holders wait for them to be written, by claim id.
    pending: HashMap<String, Saved>,
}

impl Book {
    /// Queues `ops` for the shared store while this replica leads (after the whole ledger
    /// when a write was refused); with `wait`, the answer to wait for.
    fn share(&mut self, ops: Vec<ClaimOp>, wait: bool) -> Option<Saved> {
        let (Some(w), Some(generation)) = (&self.writer, self.generation) else {
            return None;
        };
        if w.take_resync() {
            let saved = self.ledger.saved();
            let claims = saved.claims.iter().map(live).collect();
            let all = ClaimOp::Replace {
                claims,
                dirty: saved.dirty,
            };
            w.push(generation, vec![all], false);
        }
        w.push(generation, ops, wait)
    }

    /// Writes a granted claim down; with a shared store, its holder waits for it there.
    fn granted(&mut self, c: &Claim) {
        if let Some(j) = &mut self.journal {
            j.granted(c);
        }
        if let Some(saved) = self.share(vec![ClaimOp::Granted(live(c))], true) {
            self.pending.insert(c.claim_id.clone(), saved);
        }
        if let Some(h) = &self.history {
            h.record(Record::ClaimGranted {
                claim_id: c.claim_id.clone(),
                pool: c.pool.clone(),
                sandbox_id: c.sandbox_id.clone(),
                holder: c.holder.clone(),
                at: c.claimed_at,
                expires_at: c.expires_at,
            });
        }
    }

    fn renewed(&mut self, c: &Claim) {
        if let Some(j) = &mut self.journal {
            j.renewed(&c.claim_id, c.expires_at);
        }
        if let Some(h) = &self.history {
            h.record(Record::ClaimRenewed {
                claim_id: c.claim_id.clone(),
                expires_at: c.expires_at,
            });
        }
        self.share(vec![ClaimOp::Renewed(live(c))], false);
    }

    /// Writes down a released member to be killed.
    fn dirty(&mut self, pool: &str, sandbox_id: &str) {
        if let Some(j) = &mut self.journal {
            j.dirty(pool, sandbox_id);
        }
        self.share(
            vec![ClaimOp::Dirty {
                pool: pool.to_string(),
                sandbox_id: sandbox_id.to_string(),
            }],
            false,
        );
    }

    /// Writes down dirty members seen gone.
    fn killed(&mut self, ids: &[String]) {
        if let Some(j) = &mut self.journal {
            for id in ids {
                j.killed(id);
            }
        }
        if !ids.is_empty() {
            let ops = ids
                .iter()
                .map(|id| ClaimOp::Killed {
                    sandbox_id: id.clone(),
                })
                .collect();
            self.share(ops, false);
        }
    }

    /// Writes an ended claim down (its dirty member, if any, is the caller's).
    fn ended(&mut self, id: &str, why: EndReason, at: DateTime<Utc>) {
        if let Some(j) = &mut self.journal {
            j.ended(id);
        }
        if let Some(h) = &self.history {
            let how = match why {
                EndReason::Released => ClaimEnd::Released,
                EndReason::Expired => ClaimEnd::Expired,
                EndReason::Lost => ClaimEnd::Lost,
            };
            h.record(Record::ClaimEnded {
                claim_id: id.to_string(),
                at,
                how,
            });
        }
        let ended = ClaimOp::Ended {
            claim_id: id.to_string(),
        };
        self.share(vec![ended], false);
    }
}

/// The claims service. See the module doc.
pub struct Claims {
    book: Mutex<Book>,
    /// Notified when a member may have become free (a create returned, a member came back).
    freed: Notify,
    /// Notified when a claim found nothing free: the control loop evaluates the pool early.
    starved: Arc<Notify>,
    starved_pools: Mutex<Vec<String>>,
    api: Arc<dyn E2bApi>,
    /// The team's concurrency cap, which resumes share with creates.
    budget: Arc<Budget>,
    rules: Mutex<Arc<RuleSet>>,
    clock: Clock,
    pub(crate) metrics: ClaimMetrics,
    /// Latest CPU per member, for the shared pick.
    cpu: Mutex<HashMap<String, f64>>,
    /// Background E2B calls (kills of released members, timeouts set to leases).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A claim request counted as waiting on its pool while this lives (dropped when the request
/// ends, is answered, or its task is cancelled).
struct Waiting<'a> {
    claims: &'a Claims,
    pool: String,
}

impl<'a> Waiting<'a> {
    fn start(claims: &'a Claims, pool: &str) -> Waiting<'a> {
        lock(&claims.book).ledger.waiting(pool, true);
        Waiting {
            claims,
            pool: pool.to_string(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.claims.book).ledger.waiting(&self.pool, false);
    }
}

/// What came of resuming a paused member for a claim.
enum Resume {
    Done(Granted),
    /// The team is at its concurrency cap.
    NoRoom,
    /// E2B could not resume it.
    Failed,
}

/// Kills of released members are tried this many times.
const KILL_TRIES: u32 = 3;

impl Claims {
    /// The service over `api`; with a state dir, claims are journaled there and read back.
    pub(crate) fn open(
        api: Arc<dyn E2bApi>,
        budget: Arc<Budget>,
        rules: Arc<RuleSet>,
        clock: Clock,
        state_dir: Option<&std::path::Path>,
    ) -> std::io::Result<Claims> {
        let mut ledger = Ledger::default();
        let journal = match state_dir {
            Some(d) => {
                let (j, back) = Journal::open(d)?;
                if !back.claims.is_empty() || !back.dirty.is_empty() {
                    tracing::info!(
                        claims = back.claims.len(),
                        dirty = back.dirty.len(),
                        "claims resumed from the journal"
                    );
                }
                for c in back.claims {
                    ledger.insert(c);
                }
                for (pool, id) in back.dirty {
                    ledger.mark_dirty(&pool, &id);
                }
                Some(j)
            }
            None => None,
        };
        let dirty = ledger.dirty();
        let claims = Claims {
            book: Mutex::new(Book {
                ledger,
                journal,
                history: None,
                writer: None,
                generation: None,
                pending: HashMap::new(),
            }),
            freed: Notify::new(),
            starved: Arc::new(Notify::new()),
            starved_pools: Mutex::new(Vec::new()),
            api,
            budget,
            rules: Mutex::new(rules),
            clock,
            metrics: ClaimMetrics::default(),
            cpu: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        };
        // Released members whose kill was not seen to succeed before a restart: again.
        for (pool, id) in dirty {
            claims.kill_released(&pool, &id);
        }
        Ok(claims)
    }

    /// Rules after a reload: new claims follow the new pools.
    pub(crate) fn set_rules(&self, rules: Arc<RuleSet>) {
        *lock(&self.rules) = rules;
    }

    /// What a starved claim notifies: the control loop waits on it.
    pub(crate) fn starved(&self) -> Arc<Notify> {
        self.starved.clone()
    }

    /// The pools whose claims found nothing free since the last look.
    pub(crate) fn take_starved(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.starved_pools))
    }

    fn pool_settings(&self, pool: &str) -> Result<crate::rules::ClaimSettings, ClaimError> {
        lock(&self.rules)
            .pool(pool)
            .map(|p| p.claims)
            .ok_or_else(|| ClaimError::UnknownPool(pool.to_string()))
    }

    /// Claims a member of `pool`: a running idle one, else a paused one resumed, else one
    /// that frees up within `req.wait`.
    pub async fn claim(&self, pool: &str, req: ClaimRequest) -> Result<Granted, ClaimError> {
        let started = std::time::Instant::now();
        let out = self.claim_inner(pool, &req).await;
        let result = match &out {
            Ok(g) => g.result,
            Err(ClaimError::Exhausted { .. }) => ClaimResult::TimedOut,
            Err(_) => ClaimResult::Refused,
        };
        let took = matches!(
            result,
            ClaimResult::Ok | ClaimResult::Waited | ClaimResult::Resumed
        )
        .then(|| started.elapsed());
        self.metrics.count(pool, result, took);
        out
    }

    async fn claim_inner(&self, pool: &str, req: &ClaimRequest) -> Result<Granted, ClaimError> {
        let settings = self.pool_settings(pool)?;
        let lease = req.lease.unwrap_or(settings.lease);
        check_lease(lease, settings.max_lease)?;
        if let Some(key) = &req.idempotency_key {
            // One lock for the look and the mark: a request with this key that grants
            // between them would otherwise leave this one free to take a second member.
            let mut book = lock(&self.book);
            if let Some(g) = replay(&book.ledger, key, pool)? {
                return Ok(g);
            }
            book.ledger.begin_key(pool, key).map_err(refusal)?;
        }
        let out = match self.take_or_wait(pool, req, lease).await {
            Ok(g) => self.saved_grant(g).await,
            Err(e) => Err(e),
        };
        if let Some(key) = &req.idempotency_key {
            lock(&self.book).ledger.end_key(pool, key);
        }
        out
    }

    /// Takes a member now, or waits for one until the request's wait runs out.
    async fn take_or_wait(
        &self,
        pool: &str,
        req: &ClaimRequest,
        lease: Duration,
    ) -> Result<Granted, ClaimError> {
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut waited = false;
        // Counted as waiting (demand the idle band serves) from the first miss until this
        // request ends, however it ends.
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            // Registered before looking, so a member freed between the look and the wait
            // still wakes this request.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_take(pool, req, lease).await? {
                Some(mut g) => {
                    if waited && g.result == ClaimResult::Ok {
                        g.result = ClaimResult::Waited;
                    }
                    return Ok(g);
                }
                None => {
                    if !waited && !req.wait.is_zero() {
                        waiting = Some(Waiting::start(self, pool));
                    }
                    if !waited {
                        lock(&self.starved_pools).push(pool.to_string());
                        self.starved.notify_one();
                    }
                    waited = true;
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                drop(waiting);
                return Err(ClaimError::Exhausted {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
    }

    /// One look for a free member: granted (resumed if it was paused), or none.
    async fn try_take(
        &self,
        pool: &str,
        req: &ClaimRequest,
        lease: Duration,
    ) -> Result<Option<Granted>, ClaimError> {
        loop {
            let now = (self.clock)();
            let claim = Claim {
                claim_id: format!("clm-{}", uuid::Uuid::new_v4().simple()),
                pool: pool.to_string(),
                sandbox_id: String::new(),
                holder: req.holder.clone().unwrap_or_default(),
                claimed_at: now,
                expires_at: now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX),
                metadata: req.metadata.clone(),
                idempotency_key: req.idempotency_key.clone(),
            };
            // A resume never takes the pool past its max (a pool gone after a reload has none).
            let max = lock(&self.rules).pool(pool).map_or(0, |p| p.max);
            let taken = {
                let mut book = lock(&self.book);
                let t = book.ledger.take(claim, max).map_err(refusal)?;
                if let Take::Running(c) = &t {
                    book.granted(c);
                }
                t
            };
            match taken {
                Take::Nothing => return Ok(None),
                Take::Running(c) => {
                    self.lengthen_to_lease(&c);
                    return Ok(Some(Granted {
                        claim: c,
                        result: ClaimResult::Ok,
                        replayed: false,
                    }));
                }
                Take::Paused(c) => match self.resume(c, lease).await {
                    Resume::Done(g) => return Ok(Some(g)),
                    // The team is at its cap: no resume now; wait for room or a member.
                    Resume::NoRoom => return Ok(None),
                    // That member could not be resumed: look again.
                    Resume::Failed => {}
                },
            }
        }
    }

    /// Resumes a paused member claimed by `c` (E2B's connect) within the team's concurrency
    /// cap, journaling the claim once it runs; on failure the claim is undone and the member
    /// left out, and without room it is undone and the member stays paused.
    async fn resume(&self, c: Claim, lease: Duration) -> Resume {
        let _room = match self.budget.try_take_concurrency(1) {
            Ok(permit) => permit,
            Err(why) => {
                tracing::info!(pool = %c.pool, sandbox = %c.sandbox_id, "not resuming a paused member for a claim: {why}");
                lock(&self.book).ledger.undo(&c, false);
                return Resume::NoRoom;
            }
        };
        match self
            .api
            .connect_sandbox(&c.sandbox_id, lease.as_secs().max(1))
            .await
        {
            Ok(_) => {
                let mut book = lock(&self.book);
                book.ledger.resumed(&c.pool, &c.sandbox_id, c.expires_at);
                book.granted(&c);
                drop(book);
                tracing::info!(pool = %c.pool, sandbox = %c.sandbox_id, claim = %c.claim_id, "claim resumed a paused member");
                Resume::Done(Granted {
                    claim: c,
                    result: ClaimResult::Resumed,
                    replayed: false,
                })
            }
            Err(e) => {
                tracing::warn!(pool = %c.pool, sandbox = %c.sandbox_id, error = %e, "cannot resume a paused member for a claim; trying another");
                lock(&self.book).ledger.undo(&c, true);
                Resume::Failed
            }
        }
    }

    /// Sets a claimed member's timeout to its lease's end, in the background, when that is
    /// later than its end now: a claim never shortens a member's life.
    fn lengthen_to_lease(&self, c: &Claim) {
        let end = lock(&self.book).ledger.end_at(&c.pool, &c.sandbox_id);
        if end.is_some_and(|e| e >= c.expires_at) {
            return;
        }
        let now = (self.clock)();
        let secs = (c.expires_at - now).num_seconds().max(1) as u64;
        let (api, id, pool) = (self.api.clone(), c.sandbox_id.clone(), c.pool.clone());
        // The ledger learns the longer life from the next observation.
        self.spawn(async move {
            match api.set_timeout(&id, secs).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(pool = %pool, sandbox = %id, error = %e, "cannot set a claimed member's timeout to its lease; keep-alive will retry"),
            }
        });
    }

    /// Renews a claim: its lease ends `lease` from now (the pool's default lease when none).
    pub fn renew(&self, id: &str, lease: Option<Duration>) -> Result<Claim, ClaimError> {
        let until = self.renewal_end(id, lease)?;
        self.renew_until(id, until)
    }

    /// [`Claims::renew`], answered once the renewal is written to the shared store, if there
    /// is one (written first: a renewal that cannot be saved is not made).
    pub async fn renew_durably(
        &self,
        id: &str,
        lease: Option<Duration>,
    ) -> Result<Claim, ClaimError> {
        let until = self.renewal_end(id, lease)?;
        let ahead = {
            let mut book = lock(&self.book);
            let mut c = book
                .ledger
                .get(id)
                .cloned()
                .ok_or_else(|| ClaimError::NotFound(id.to_string()))?;
            c.expires_at = until;
            book.share(vec![ClaimOp::Renewed(live(&c))], true)
        };
        if let Some(saved) = ahead
            && !written(saved).await
        {
            return Err(ClaimError::Unsaved);
        }
        self.renew_until(id, until)
    }

    /// When a renewal of claim `id` for `lease` would end its lease.
    fn renewal_end(&self, id: &str, lease: Option<Duration>) -> Result<DateTime<Utc>, ClaimError> {
        let pool = lock(&self.book)
            .ledger
            .get(id)
            .map(|c| c.pool.clone())
            .ok_or_else(|| ClaimError::NotFound(id.to_string()))?;
        let settings = self.pool_settings(&pool)?;
        let lease = lease.unwrap_or(settings.lease);
        check_lease(lease, settings.max_lease)?;
        Ok((self.clock)() + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX))
    }

    fn renew_until(&self, id: &str, until: DateTime<Utc>) -> Result<Claim, ClaimError> {
        let c = {
            let mut book = lock(&self.book);
            let c = book
                .ledger
                .renew(id, until)
                .ok_or_else(|| ClaimError::NotFound(id.to_string()))?;
            book.renewed(&c);
            c
        };
        self.lengthen_to_lease(&c);
        Ok(c)
    }

    /// Releases a claim; the member is killed or returned as its pool says.
    pub fn release(&self, id: &str) -> Result<Claim, ClaimError> {
        let now = (self.clock)();
        self.end(id, EndReason::Released, now)
            .map(|e| e.claim)
            .ok_or_else(|| ClaimError::NotFound(id.to_string()))
    }

    /// [`Claims::release`], answered once the release is written to the shared store, if
    /// there is one (written first: a release that cannot be saved is not made, and its
    /// member is neither killed nor handed out).
    pub async fn release_durably(&self, id: &str) -> Result<Claim, ClaimError> {
        let pool = lock(&self.book)
            .ledger
            .get(id)
            .map(|c| c.pool.clone())
            .ok_or_else(|| ClaimError::NotFound(id.to_string()))?;
        let kill = self.on_release(&pool) == OnRelease::Kill;
        let ahead = {
            let mut book = lock(&self.book);
            let c = book
                .ledger
                .get(id)
                .cloned()
                .ok_or_else(|| ClaimError::NotFound(id.to_string()))?;
            let mut ops = vec![ClaimOp::Ended {
                claim_id: c.claim_id,
            }];
            if kill {
                ops.push(ClaimOp::Dirty {
                    pool: c.pool,
                    sandbox_id: c.sandbox_id,
                });
            }
            book.share(ops, true)
        };
        if let Some(saved) = ahead
            && !written(saved).await
        {
            return Err(ClaimError::Unsaved);
        }
        self.release(id)
    }

    /// What `pool` does with a released member (a pool gone from the rules after a reload:
    /// its members are killed all the same).
    fn on_release(&self, pool: &str) -> OnRelease {
        lock(&self.rules)
            .pool(pool)
            .map_or(OnRelease::Kill, |p| p.claims.on_release)
    }

    /// Ends one claim and carries out its pool's `on_release`.
    fn end(&self, id: &str, why: EndReason, now: DateTime<Utc>) -> Option<Ended> {
        let pool = lock(&self.book).ledger.get(id)?.pool.clone();
        let on_release = self.on_release(&pool);
        let kill = on_release == OnRelease::Kill || why == EndReason::Lost;
        let ended = {
            let mut book = lock(&self.book);
            let e = book.ledger.end(id, why, kill, now)?;
            book.ended(id, why, now);
            if kill && why != EndReason::Lost {
                book.dirty(&e.claim.pool, &e.claim.sandbox_id);
            }
            e
        };
        let c = &ended.claim;
        tracing::info!(pool = %c.pool, sandbox = %c.sandbox_id, claim = %c.claim_id, holder = %c.holder, why = why.as_str(), on_release = ?on_release, "claim ended");
        match (why, on_release) {
            (EndReason::Lost, _) => {}
            (_, OnRelease::Kill) => self.kill_released(&c.pool, &c.sandbox_id),
            (_, OnRelease::Return) => self.freed.notify_waiters(),
        }
        Some(ended)
    }

    /// Kills a released member in the background, a few times if E2B fails. It stays dirty
    /// (out of hand-outs, and killed again after a restart) until an observation shows it
    /// gone.
    fn kill_released(&self, pool: &str, sandbox_id: &str) {
        let (api, id, pool) = (self.api.clone(), sandbox_id.to_string(), pool.to_string());
        self.spawn(async move {
            for attempt in 1..=KILL_TRIES {
                match api.kill_sandbox(&id).await {
                    Ok(()) | Err(Error::NotFound { .. }) => return,
                    Err(e) if attempt == KILL_TRIES => {
                        tracing::error!(pool = %pool, sandbox = %id, error = %e, "cannot kill a released member; it stays out of hand-outs");
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
                }
            }
        });
    }

    /// Runs an E2B call in the background, kept so that [`Claims::settle`] can wait for it.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.spawn(work));
    }

    /// Waits for the background calls sent so far (at shutdown, and in tests).
    pub async fn settle(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Ends every lease that has run out by `now`, as a release would; returns how many.
    pub(crate) fn expire(&self, now: DateTime<Utc>) -> usize {
        let ids = lock(&self.book).ledger.expired(now);
        let mut n = 0;
        for id in ids {
            if let Some(e) = self.end(&id, EndReason::Expired, now) {
                tracing::warn!(pool = %e.claim.pool, claim = %id, holder = %e.claim.holder, "a claim's lease expired; released");
                *lock(&self.metrics.expired).entry(e.claim.pool).or_default() += 1;
                n += 1;
            }
        }
        n
    }

    /// Sandboxes lifecycle events say were killed: out of hand-outs at once, between
    /// observations, and their claims ended as lost.
    pub(crate) fn killed_events<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let now = (self.clock)();
        let lost: Vec<Ended> = {
            let mut book = lock(&self.book);
            let lost: Vec<Ended> = ids.filter_map(|id| book.ledger.gone(id, now)).collect();
            for e in &lost {
                book.ended(&e.claim.claim_id, EndReason::Lost, now);
            }
            lost
        };
        self.count_lost(lost);
    }

    fn count_lost(&self, lost: Vec<Ended>) {
        for e in lost {
            tracing::warn!(pool = %e.claim.pool, sandbox = %e.claim.sandbox_id, claim = %e.claim.claim_id, holder = %e.claim.holder, "a claimed member is gone (killed, crashed or timed out); its claim ended");
            *lock(&self.metrics.lost).entry(e.claim.pool).or_default() += 1;
        }
    }

    /// Whether a claim holds `sandbox_id` now.
    pub fn holds(&self, sandbox_id: &str) -> bool {
        lock(&self.book)
            .ledger
            .all()
            .any(|c| c.sandbox_id == sandbox_id)
    }

    /// Every active claim, by sandbox id.
    pub fn active(&self) -> Vec<Claim> {
        let mut v: Vec<Claim> = lock(&self.book).ledger.all().cloned().collect();
        v.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        v
    }

    /// Starts an observation: see [`ledger::Ledger::observation_started`].
    pub(crate) fn observation_started(&self) -> u64 {
        lock(&self.book).ledger.observation_started()
    }

    /// Takes an observation begun in `epoch`: the pools' members, their CPU for the pick,
    /// and the claims whose members are gone.
    pub(crate) fn observed(&self, epoch: u64, observed: &[ObservedSandbox]) {
        let now = (self.clock)();
        let lost = {
            let mut book = lock(&self.book);
            let (lost, killed) = book.ledger.observed(epoch, observed, now);
            for e in &lost {
                book.ended(&e.claim.claim_id, EndReason::Lost, now);
            }
            book.killed(&killed);
            let Book {
                ledger, journal, ..
            } = &mut *book;
            if let Some(j) = journal {
                j.sync_if_due();
                j.maybe_compact(|| ledger.saved());
            }
            lost
        };
        self.count_lost(lost);
        let mut cpu = lock(&self.cpu);
        cpu.clear();
        for s in observed {
            if let Some(m) = &s.metric
                && m.cpu_used_pct.is_finite()
            {
                cpu.insert(s.id.clone(), m.cpu_used_pct);
            }
        }
        drop(cpu);
        self.freed.notify_waiters();
    }

    /// A create with Idempotency-Key `key` is being sent: until it returns, an observation
    /// that shows its sandbox (booting) does not make it claimable.
    pub(crate) fn create_sent(&self, pool: &str, key: &str) {
        lock(&self.book).ledger.booting(key, Some(pool));
    }

    /// A create failed: nothing of it boots.
    pub(crate) fn create_failed(&self, key: &str) {
        lock(&self.book).ledger.booting(key, None);
    }

    /// A create for `pool` returned a running sandbox: it may be claimed at once.
    /// `life` is its timeout: it ends that long from now unless kept alive.
    pub(crate) fn added(&self, pool: &str, sandbox_id: &str, life: Duration, key: &str) {
        let now = (self.clock)();
        let end_at = now + TimeDelta::from_std(life).unwrap_or(TimeDelta::MAX);
        let mut book = lock(&self.book);
        book.ledger.booting(key, None);
        book.ledger.added(pool, sandbox_id, now, end_at);
        drop(book);
        self.freed.notify_waiters();
    }

    /// Of `ids`, those a kill or pause may take (not claimed), now out of hand-outs; and
    /// those refused because they are claimed.
    pub(crate) fn reserve(&self, pool: &str, ids: &[String]) -> (Vec<String>, Vec<String>) {
        lock(&self.book).ledger.reserve(pool, ids)
    }

    /// The kill or pause of reserved members failed: they may be handed out again.
    pub(crate) fn unreserve(&self, pool: &str, ids: &[String]) {
        lock(&self.book).ledger.unreserve(pool, ids);
        self.freed.notify_waiters();
    }

    /// A reserved member was killed.
    pub(crate) fn killed(&self, pool: &str, id: &str) {
        lock(&self.book).ledger.forget(pool, id);
    }

    /// A reserved member was paused: it may be claimed again, to be resumed.
    pub(crate) fn paused(&self, pool: &str, id: &str) {
        lock(&self.book).ledger.paused(pool, id);
        self.freed.notify_waiters();
    }

    /// Per pool, members resumed for claims that the last observation showed paused: the
    /// engine counts them as coming, like creates in flight.
    pub(crate) fn resuming(&self) -> BTreeMap<String, u32> {
        lock(&self.book).ledger.resuming()
    }

    /// Tells the history store of every claim granted, renewed and ended from now on.
    pub(crate) fn keep_history(&self, history: History) {
        lock(&self.book).history = Some(history);
    }

    /// Shares claims with other replicas through `store`: from now on they are served only
    /// while this replica leads ([`Claims::lead`]), and written there. The local journal is
    /// left behind (a standby's claims are the leader's).
    pub(crate) fn share(&self, store: ClaimStore) {
        let mut book = lock(&self.book);
        book.writer = Some(Writer::start(store));
        book.journal = None;
        book.ledger = Ledger::default();
        book.generation = None;
    }

    /// Whether claims are served here: always for a single agent, and only while leading
    /// with a shared store (a standby forwards them to the leader).
    pub(crate) fn local(&self) -> bool {
        let book = lock(&self.book);
        book.writer.is_none() || book.generation.is_some()
    }

    /// Takes over the claims of the shared store as the leader of `generation`: the ledger
    /// becomes exactly the claims and dirty members there (members are known again from the
    /// next observation); dirty members are killed again.
    pub(crate) async fn lead(&self, generation: u64) -> Result<(), sqlx::Error> {
        let Some(writer) = lock(&self.book).writer.clone() else {
            return Ok(());
        };
        let saved = writer.store().load().await?;
        let mut ledger = Ledger::default();
        for body in &saved.claims {
            match serde_json::from_str::<Claim>(body) {
                Ok(c) => ledger.insert(c),
                Err(e) => {
                    tracing::error!(error = %e, "a claim in the shared store is not a claim; skipped")
                }
            }
        }
        for (pool, id) in &saved.dirty {
            ledger.mark_dirty(pool, id);
        }
        {
            let mut book = lock(&self.book);
            book.ledger = ledger;
            book.generation = Some(generation);
            book.pending.clear();
        }
        tracing::info!(
            generation,
            claims = saved.claims.len(),
            dirty = saved.dirty.len(),
            "took over the claims of the shared store"
        );
        for (pool, id) in &saved.dirty {
            self.kill_released(pool, id);
        }
        self.freed.notify_waiters();
        Ok(())
    }

    /// Stops serving claims (another replica leads, or this one lost the lease): the ledger
    /// is emptied, since the leader owns the claims now.
    pub(crate) fn stand_by(&self) {
        let mut book = lock(&self.book);
        if book.generation.take().is_some() {
            book.ledger = Ledger::default();
            book.pending.clear();
            drop(book);
            self.freed.notify_waiters();
        }
    }

    /// A grant, once written to the shared store when there is one; a grant that could not
    /// be written is undone (its member free again) and refused.
    async fn saved_grant(&self, g: Granted) -> Result<Granted, ClaimError> {
        let pending = lock(&self.book).pending.remove(&g.claim.claim_id);
        let Some(saved) = pending else {
            return Ok(g);
        };
        if written(saved).await {
            return Ok(g);
        }
        let c = &g.claim;
        let mut book = lock(&self.book);
        if book.ledger.get(&c.claim_id).is_some() {
            book.ledger.undo(c, false);
            book.ended(&c.claim_id, EndReason::Lost, (self.clock)());
        }
        drop(book);
        tracing::warn!(pool = %c.pool, sandbox = %c.sandbox_id, claim = %c.claim_id, "a claim could not be saved to the shared store; undone");
        self.freed.notify_waiters();
        Err(ClaimError::Unsaved)
    }

    /// What the engine reads at each step.
    pub(crate) fn for_engine(&self, now: DateTime<Utc>) -> BTreeMap<String, PoolClaims> {
        lock(&self.book).ledger.for_engine(now)
    }

    /// Per pool: claimed, idle and idle paused members, for `/metrics` and the API.
    pub(crate) fn counts(&self) -> BTreeMap<String, ledger::Counts> {
        lock(&self.book).ledger.counts()
    }

    pub fn get(&self, id: &str) -> Result<Claim, ClaimError> {
        lock(&self.book)
            .ledger
            .get(id)
            .cloned()
            .ok_or_else(|| ClaimError::NotFound(id.to_string()))
    }

    pub fn of_pool(&self, pool: &str) -> Result<Vec<Claim>, ClaimError> {
        self.pool_settings(pool)?;
        Ok(lock(&self.book).ledger.of_pool(pool))
    }

    /// The shared pick: the running, unclaimed member of `pool` with the lowest recent CPU.
    pub fn pick(&self, pool: &str) -> Result<Option<String>, ClaimError> {
        self.pool_settings(pool)?;
        let cpu = lock(&self.cpu).clone();
        Ok(lock(&self.book).ledger.pick(pool, &cpu))
    }

    /// Syncs the journal to disk when a second has passed since the last sync.
    pub(crate) fn sync_if_due(&self) {
        if let Some(j) = &mut lock(&self.book).journal {
            j.sync_if_due();
        }
    }

    /// Syncs the journal to disk (at shutdown).
    pub(crate) fn sync(&self) {
        if let Some(j) = &mut lock(&self.book).journal {
            j.sync();
        }
    }
}

/// The claim an Idempotency-Key already made, if it is still active.
fn replay(ledger: &Ledger, key: &str, pool: &str) -> Result<Option<Granted>, ClaimError> {
    match ledger.by_key(pool, key) {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(Granted {
            claim: c.clone(),
            result: ClaimResult::Ok,
            replayed: true,
        })),
        Some(Err(id)) => Err(ClaimError::KeyEnded(id)),
    }
}

/// A lease must be at least a second and at most the pool's `claims.max_lease`.
fn check_lease(lease: Duration, max: Duration) -> Result<(), ClaimError> {
    if lease < Duration::from_secs(1) || lease > max {
        return Err(ClaimError::Invalid(format!(
            "lease {} is outside 1s to {} (the pool's claims.max_lease)",
            humantime::format_duration(lease),
            humantime::format_duration(max)
        )));
    }
    Ok(())
}

fn refusal(r: Refusal) -> ClaimError {
    match r {
        Refusal::NotReady => ClaimError::NotReady,
        Refusal::KeyInProgress => ClaimError::KeyInProgress,
    }
}
