//! The claims ledger: which pool members exist, which are claimed and by whom, as plain data
//! under one lock. Every hand-out, release and kill reservation is one method call that takes
//! the lock, changes the maps and returns; nothing here awaits or calls E2B.
//!
//! The one promise it keeps: a member is in at most one active claim. A claim takes a member
//! only if it is known, running (or paused, to be resumed), not claimed and not leaving; a
//! kill or pause takes a member only through [`Ledger::reserve`], which refuses claimed ones
//! and marks the rest leaving, so neither can take what the other holds.
//!
//! Members come from two places: each observation ([`Ledger::observed`]), and each create that
//! returns between observations ([`Ledger::added`]): E2B answers a create once the sandbox
//! runs, so a returned create is ready to hand out. Epochs order the two: a member added
//! after an observation began is not dropped because that observation missed it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::e2b::SandboxState;
use crate::engine::{ObservedSandbox, PoolClaims};

/// One claim: a member handed to one holder until its lease ends or it is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub claim_id: String,
    pub pool: String,
    /// What the application passes to E2B's `Sandbox.connect(id)`.
    pub sandbox_id: String,
    pub holder: String,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The Idempotency-Key it was made with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Whether a member runs or is paused, as far as claims care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    Running,
    Paused,
}

/// One known member of a pool.
#[derive(Debug, Clone)]
struct Member {
    started_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    state: MemberState,
    /// The epoch it was added in; an observation that began after it must show it.
    epoch: u64,
    /// Chosen to be killed or paused: never handed out again.
    leaving: bool,
}

/// One pool's members and claims.
#[derive(Debug, Default)]
struct PoolLedger {
    members: HashMap<String, Member>,
    /// Claimed member -> claim id.
    claimed: HashMap<String, String>,
    /// When each recent claim was granted, for the claim rate.
    grants: VecDeque<DateTime<Utc>>,
    /// Claim requests waiting for a member now.
    waiting: u32,
}

/// What a claim request found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Take {
    /// A running member, now claimed.
    Running(Claim),
    /// A paused member, now claimed: resume it before answering; if that fails, undo with
    /// [`Ledger::undo`].
    Paused(Claim),
    /// Nothing free: wait for a member, or give up.
    Nothing,
}

/// Why a claim could not be made at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Before the first observation nothing is known of the pool's members.
    NotReady,
    /// Another request with this Idempotency-Key is still being served.
    KeyInProgress,
}

/// An ended claim and what its pool does with the member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ended {
    pub(crate) claim: Claim,
    pub(crate) why: EndReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Released,
    Expired,
    /// The member is gone (killed, crashed, timed out) while claimed.
    Lost,
}

impl EndReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::Released => "released",
            EndReason::Expired => "expired",
            EndReason::Lost => "lost",
        }
    }
}

/// The youngest free member of `p` in `state` (the most life left): known, not leaving, not
/// claimed.
fn youngest_free(p: &PoolLedger, state: MemberState) -> Option<String> {
    p.members
        .iter()
        .filter(|(id, m)| m.state == state && !m.leaving && !p.claimed.contains_key(*id))
        .max_by(|a, b| (a.1.started_at, a.0).cmp(&(b.1.started_at, b.0)))
        .map(|(id, _)| id.clone())
}

/// A pool's members as claims see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) claimed: usize,
    /// Running, unclaimed, not leaving.
    pub(crate) idle: usize,
    /// Paused, unclaimed, not leaving: a claim would resume one.
    pub(crate) paused: usize,
}

/// A window of the claim rate.
const RATE_WINDOW: TimeDelta = TimeDelta::seconds(60);

/// Idempotency-Keys of ended claims are remembered this long (Stripe's 24 h)...
const KEY_MEMORY: TimeDelta = TimeDelta::hours(24);
/// ...and at most this many, oldest forgotten first.
const MAX_ENDED_KEYS: usize = 100_000;

/// The ledger. See the module doc for its promise.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    pools: BTreeMap<String, PoolLedger>,
    claims: HashMap<String, Claim>,
    /// (pool, Idempotency-Key) -> claim id, for active claims.
    by_key: HashMap<(String, String), String>,
    /// Keys whose request is being served now (waiting or resuming).
    keys_in_progress: HashMap<(String, String), ()>,
    /// Keys of ended claims: (pool, key) -> (claim id, ended at), oldest first in `ended_order`.
    ended_keys: HashMap<(String, String), (String, DateTime<Utc>)>,
    ended_order: VecDeque<(String, String)>,
    epoch: u64,
    /// True once an observation has told the ledger the pools' members.
    ready: bool,
    /// Released members to be killed (sandbox -> pool): never handed out, whatever an
    /// observation says, until one shows them gone.
    dirty: HashMap<String, String>,
    /// Idempotency-Keys of creates sent and not returned, with their pool: a sandbox an
    /// observation shows with one of them is still booting, and is not handed out until its
    /// create returns.
    booting: HashMap<String, String>,
    /// Members resumed for a claim since the last observation (id -> pool, and the epoch the
    /// resume finished in): running, though the observation before showed them paused.
    resumed: HashMap<String, (String, u64)>,
}

impl Ledger {
    /// An active claim by id.
    pub(crate) fn get(&self, id: &str) -> Option<&Claim> {
        self.claims.get(id)
    }

    /// The active claims on `pool`, oldest first.
    pub(crate) fn of_pool(&self, pool: &str) -> Vec<Claim> {
        let mut v: Vec<Claim> = self
            .claims
            .values()
            .filter(|c| c.pool == pool)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.claimed_at, &a.claim_id).cmp(&(b.claimed_at, &b.claim_id)));
        v
    }

    /// Every active claim.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Claim> {
        self.claims.values()
    }

    /// The claim an Idempotency-Key already made: active, or ended (`Err` with its id).
    pub(crate) fn by_key(&self, pool: &str, key: &str) -> Option<Result<&Claim, String>> {
        let k = (pool.to_string(), key.to_string());
        if let Some(id) = self.by_key.get(&k) {
            return self.claims.get(id).map(Ok);
        }
        self.ended_keys.get(&k).map(|(id, _)| Err(id.clone()))
    }

    /// Marks `key` as being served, so a concurrent request with it gets a conflict rather
    /// than a second member. Refused when it already is.
    pub(crate) fn begin_key(&mut self, pool: &str, key: &str) -> Result<(), Refusal> {
        let k = (pool.to_string(), key.to_string());
        if self.keys_in_progress.contains_key(&k) {
            return Err(Refusal::KeyInProgress);
        }
        self.keys_in_progress.insert(k, ());
        Ok(())
    }

    /// The request serving `key` is done, whatever came of it.
    pub(crate) fn end_key(&mut self, pool: &str, key: &str) {
        self.keys_in_progress
            .remove(&(pool.to_string(), key.to_string()));
    }

    /// Claims a free member of `pool` for `claim` (whose sandbox id is filled in): a running
    /// one first (the youngest, which has the most life left), else a paused one, if resuming
    /// it keeps the pool within `max` members running or coming.
    pub(crate) fn take(&mut self, mut claim: Claim, max: u32) -> Result<Take, Refusal> {
        if !self.ready {
            return Err(Refusal::NotReady);
        }
        let Some(p) = self.pools.get(&claim.pool) else {
            return Ok(Take::Nothing);
        };
        let room = self.running_or_coming(&claim.pool) < max;
        let (id, paused) = match youngest_free(p, MemberState::Running) {
            Some(id) => (id, false),
            None => match youngest_free(p, MemberState::Paused).filter(|_| room) {
                Some(id) => (id, true),
                None => return Ok(Take::Nothing),
            },
        };
        claim.sandbox_id = id;
        self.insert(claim.clone());
        Ok(if paused {
            Take::Paused(claim)
        } else {
            Take::Running(claim)
        })
    }

    /// Puts a claim in (a grant, or one read back from the journal).
    pub(crate) fn insert(&mut self, claim: Claim) {
        let p = self.pools.entry(claim.pool.clone()).or_default();
        p.claimed
            .insert(claim.sandbox_id.clone(), claim.claim_id.clone());
        p.grants.push_back(claim.claimed_at);
        if let Some(k) = &claim.idempotency_key {
            self.by_key
                .insert((claim.pool.clone(), k.clone()), claim.claim_id.clone());
        }
        self.claims.insert(claim.claim_id.clone(), claim);
    }

    /// A resumed member runs now.
    pub(crate) fn resumed(&mut self, pool: &str, sandbox_id: &str, end_at: DateTime<Utc>) {
        if let Some(m) = self
            .pools
            .get_mut(pool)
            .and_then(|p| p.members.get_mut(sandbox_id))
        {
            m.state = MemberState::Running;
            m.end_at = m.end_at.max(end_at);
            self.resumed
                .insert(sandbox_id.to_string(), (pool.to_string(), self.epoch));
        }
    }

    /// Takes back a claim whose member was not resumed. A member that could not be resumed
    /// (`broken`) is left out of later hand-outs; one the team had no room to resume stays
    /// free for when it has.
    pub(crate) fn undo(&mut self, claim: &Claim, broken: bool) {
        self.remove(&claim.claim_id);
        if let Some(p) = self.pools.get_mut(&claim.pool) {
            p.grants.pop_back();
            if let Some(m) = p.members.get_mut(&claim.sandbox_id) {
                m.leaving = broken;
            }
        }
    }

    /// Ends a claim (released, expired, lost); the caller does what the pool says with the
    /// member. With `kill`, the member is leaving at once, so no claim takes it meanwhile.
    pub(crate) fn end(
        &mut self,
        id: &str,
        why: EndReason,
        kill: bool,
        now: DateTime<Utc>,
    ) -> Option<Ended> {
        let claim = self.remove(id)?;
        if kill {
            self.mark_dirty(&claim.pool, &claim.sandbox_id);
        }
        if let Some(k) = &claim.idempotency_key {
            self.remember_ended_key(&claim.pool, k, &claim.claim_id, now);
        }
        Some(Ended { claim, why })
    }

    /// A released member to be killed: out of hand-outs until an observation shows it gone.
    pub(crate) fn mark_dirty(&mut self, pool: &str, sandbox_id: &str) {
        self.dirty.insert(sandbox_id.to_string(), pool.to_string());
        if let Some(m) = self
            .pools
            .get_mut(pool)
            .and_then(|p| p.members.get_mut(sandbox_id))
        {
            m.leaving = true;
        }
    }

    /// The dirty members: (pool, sandbox id).
    pub(crate) fn dirty(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .dirty
            .iter()
            .map(|(id, pool)| (pool.clone(), id.clone()))
            .collect();
        v.sort();
        v
    }

    /// What the journal must hold: the active claims and the dirty members.
    pub(crate) fn saved(&self) -> super::journal::Saved {
        let mut claims: Vec<Claim> = self.claims.values().cloned().collect();
        claims.sort_by(|a, b| a.claim_id.cmp(&b.claim_id));
        super::journal::Saved {
            claims,
            dirty: self.dirty(),
        }
    }

    fn remove(&mut self, id: &str) -> Option<Claim> {
        let claim = self.claims.remove(id)?;
        if let Some(p) = self.pools.get_mut(&claim.pool) {
            p.claimed.remove(&claim.sandbox_id);
        }
        if let Some(k) = &claim.idempotency_key {
            self.by_key.remove(&(claim.pool.clone(), k.clone()));
        }
        Some(claim)
    }

    fn remember_ended_key(&mut self, pool: &str, key: &str, id: &str, now: DateTime<Utc>) {
        let k = (pool.to_string(), key.to_string());
        self.ended_keys.insert(k.clone(), (id.to_string(), now));
        self.ended_order.push_back(k);
        while self.ended_order.len() > MAX_ENDED_KEYS {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended_keys.remove(&old);
            }
        }
    }

    /// Moves a claim's lease end (a renewal).
    pub(crate) fn renew(&mut self, id: &str, expires_at: DateTime<Utc>) -> Option<Claim> {
        let c = self.claims.get_mut(id)?;
        c.expires_at = expires_at;
        Some(c.clone())
    }

    /// The ids of claims whose lease ended by `now`.
    pub(crate) fn expired(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut v: Vec<&Claim> = self
            .claims
            .values()
            .filter(|c| c.expires_at <= now)
            .collect();
        v.sort_by(|a, b| (a.expires_at, &a.sandbox_id).cmp(&(b.expires_at, &b.sandbox_id)));
        v.into_iter().map(|c| c.claim_id.clone()).collect()
    }

    /// A claim request on `pool` starts (`true`) or stops (`false`) waiting for a member.
    pub(crate) fn waiting(&mut self, pool: &str, starts: bool) {
        let p = self.pools.entry(pool.to_string()).or_default();
        p.waiting = if starts {
            p.waiting.saturating_add(1)
        } else {
            p.waiting.saturating_sub(1)
        };
    }

    /// Starts an observation: members added from now on are newer than it.
    pub(crate) fn observation_started(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// A create with Idempotency-Key `key` was sent (`true`) or has returned (`false`).
    pub(crate) fn booting(&mut self, key: &str, pool: Option<&str>) {
        match pool {
            Some(p) => {
                self.booting.insert(key.to_string(), p.to_string());
            }
            None => {
                self.booting.remove(key);
            }
        }
    }

    /// Members of `pool` that run or soon will: running, being resumed for a claim, or being
    /// created. A resume never takes a pool past its max by this count.
    fn running_or_coming(&self, pool: &str) -> u32 {
        let members = self.pools.get(pool).map_or(0, |p| {
            p.members
                .iter()
                .filter(|(id, m)| m.state == MemberState::Running || p.claimed.contains_key(*id))
                .count()
        });
        let booting = self.booting.values().filter(|p| *p == pool).count();
        u32::try_from(members + booting).unwrap_or(u32::MAX)
    }

    /// Per pool, members running that the last observation showed paused: resumed for a claim
    /// since, or being resumed. The engine counts them in the pool's size, as creates in
    /// flight.
    pub(crate) fn resuming(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for (pool, p) in &self.pools {
            let n = p
                .members
                .iter()
                .filter(|(id, m)| m.state == MemberState::Paused && p.claimed.contains_key(*id))
                .count();
            if n > 0 {
                *out.entry(pool.clone()).or_default() += u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        for (pool, _) in self.resumed.values() {
            *out.entry(pool.clone()).or_default() += 1;
        }
        out
    }

    /// A create of `pool` returned `sandbox_id` running: ready to hand out.
    pub(crate) fn added(
        &mut self,
        pool: &str,
        sandbox_id: &str,
        started_at: DateTime<Utc>,
        end_at: DateTime<Utc>,
    ) {
        let epoch = self.epoch;
        self.pools
            .entry(pool.to_string())
            .or_default()
            .members
            .entry(sandbox_id.to_string())
            .or_insert(Member {
                started_at,
                end_at,
                state: MemberState::Running,
                epoch,
                leaving: false,
            });
    }

    /// Takes an observation begun in `epoch` as the members of every pool: members it shows
    /// are known (running or paused); members it does not show and that were added before it
    /// began are gone, and so are their claims, returned as [`EndReason::Lost`]. Dirty
    /// members it does not show are gone for good: their ids are returned too.
    pub(crate) fn observed(
        &mut self,
        epoch: u64,
        observed: &[ObservedSandbox],
        now: DateTime<Utc>,
    ) -> (Vec<Ended>, Vec<String>) {
        self.ready = true;
        let listed: std::collections::HashSet<&str> =
            observed.iter().map(|s| s.id.as_str()).collect();
        let killed: Vec<String> = self
            .dirty
            .keys()
            .filter(|id| !listed.contains(id.as_str()))
            .cloned()
            .collect();
        for id in &killed {
            self.dirty.remove(id);
        }
        self.resumed.retain(|_, (_, at)| *at >= epoch);
        let mut seen: BTreeMap<&str, Vec<&ObservedSandbox>> = BTreeMap::new();
        let booting = |s: &ObservedSandbox| {
            s.metadata
                .get(crate::agent::creates::CREATE_KEY)
                .is_some_and(|k| self.booting.contains_key(k))
        };
        for s in observed {
            if let Some(pool) = s.pool()
                && !booting(s)
            {
                seen.entry(pool).or_default().push(s);
            }
        }
        for (pool, list) in &seen {
            let p = self.pools.entry(pool.to_string()).or_default();
            for s in list {
                let state = match s.state {
                    SandboxState::Running => MemberState::Running,
                    SandboxState::Paused => MemberState::Paused,
                };
                let dirty = self.dirty.contains_key(&s.id);
                let m = p.members.entry(s.id.clone()).or_insert(Member {
                    started_at: s.started_at,
                    end_at: s.end_at,
                    state,
                    epoch,
                    leaving: dirty,
                });
                // A member resumed by a claim since the observation began stays running.
                if !(m.state == MemberState::Running && p.claimed.contains_key(&s.id)) {
                    m.state = state;
                }
                m.end_at = s.end_at;
                m.epoch = m.epoch.min(epoch);
            }
        }
        (self.drop_unseen(epoch, &seen, now), killed)
    }

    /// Forgets members an observation of `epoch` should have shown and did not, ending their
    /// claims as lost.
    fn drop_unseen(
        &mut self,
        epoch: u64,
        seen: &BTreeMap<&str, Vec<&ObservedSandbox>>,
        now: DateTime<Utc>,
    ) -> Vec<Ended> {
        let mut gone: Vec<String> = Vec::new();
        for (pool, p) in self.pools.iter_mut() {
            let shown: std::collections::HashSet<&str> = seen
                .get(pool.as_str())
                .map(|l| l.iter().map(|s| s.id.as_str()).collect())
                .unwrap_or_default();
            p.members.retain(|id, m| {
                let keep = m.epoch >= epoch || shown.contains(id.as_str());
                if !keep && let Some(c) = p.claimed.get(id) {
                    gone.push(c.clone());
                }
                keep
            });
        }
        gone.iter()
            .filter_map(|id| self.end(id, EndReason::Lost, false, now))
            .collect()
    }

    /// Of `ids`, the members of `pool` that may be killed or paused: not claimed. Those are
    /// marked leaving, so no claim takes them from now on. Unknown ids are let through (the
    /// act path checks ownership against the observation itself).
    pub(crate) fn reserve(&mut self, pool: &str, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let Some(p) = self.pools.get_mut(pool) else {
            return (ids.to_vec(), Vec::new());
        };
        let (mut free, mut held) = (Vec::new(), Vec::new());
        for id in ids {
            if p.claimed.contains_key(id) {
                held.push(id.clone());
                continue;
            }
            if let Some(m) = p.members.get_mut(id) {
                m.leaving = true;
            }
            free.push(id.clone());
        }
        (free, held)
    }

    /// A reservation that did not happen (the kill or pause failed): the members may be
    /// handed out again.
    pub(crate) fn unreserve(&mut self, pool: &str, ids: &[String]) {
        if let Some(p) = self.pools.get_mut(pool) {
            for id in ids {
                if let Some(m) = p.members.get_mut(id) {
                    // A dirty member stays out whatever happened to this kill: its own is
                    // still to come.
                    m.leaving = self.dirty.contains_key(id);
                }
            }
        }
    }

    /// A reserved member was paused: it may be claimed again (and resumed).
    pub(crate) fn paused(&mut self, pool: &str, id: &str) {
        let dirty = self.dirty.contains_key(id);
        if let Some(m) = self.pools.get_mut(pool).and_then(|p| p.members.get_mut(id)) {
            m.state = MemberState::Paused;
            m.leaving = dirty;
        }
    }

    /// A sandbox an event says is gone (killed, whatever the reason): forgotten at once, and
    /// its claim, if any, ended as lost.
    pub(crate) fn gone(&mut self, id: &str, now: DateTime<Utc>) -> Option<Ended> {
        let pool = self
            .pools
            .iter()
            .find(|(_, p)| p.members.contains_key(id))
            .map(|(name, _)| name.clone())?;
        let claim = self.pools.get(&pool)?.claimed.get(id).cloned();
        self.forget(&pool, id);
        self.dirty.remove(id);
        self.end(&claim?, EndReason::Lost, false, now)
    }

    /// A member that is gone (killed): forgotten at once.
    pub(crate) fn forget(&mut self, pool: &str, id: &str) {
        if let Some(p) = self.pools.get_mut(pool) {
            p.members.remove(id);
        }
    }

    /// What the engine reads per pool: leases and the claim rate over the last minute.
    /// Drops grants older than the window as it goes.
    pub(crate) fn for_engine(&mut self, now: DateTime<Utc>) -> BTreeMap<String, PoolClaims> {
        let mut out = BTreeMap::new();
        for (name, p) in &mut self.pools {
            while p.grants.front().is_some_and(|t| *t <= now - RATE_WINDOW) {
                p.grants.pop_front();
            }
            let leases = p
                .claimed
                .values()
                .filter_map(|id| self.claims.get(id))
                .map(|c| (c.sandbox_id.clone(), c.expires_at))
                .collect();
            out.insert(
                name.clone(),
                PoolClaims {
                    leases,
                    claim_rate: p.grants.len() as f64 / RATE_WINDOW.as_seconds_f64(),
                    waiting: p.waiting,
                },
            );
        }
        self.forget_old_keys(now);
        out
    }

    fn forget_old_keys(&mut self, now: DateTime<Utc>) {
        while let Some(k) = self.ended_order.front() {
            match self.ended_keys.get(k) {
                Some((_, at)) if *at > now - KEY_MEMORY => break,
                _ => {
                    if let Some(k) = self.ended_order.pop_front() {
                        self.ended_keys.remove(&k);
                    }
                }
            }
        }
    }

    /// Per pool: claimed, idle running and idle paused members.
    pub(crate) fn counts(&self) -> BTreeMap<String, Counts> {
        self.pools
            .iter()
            .map(|(name, p)| {
                let free = |s: MemberState| {
                    p.members
                        .iter()
                        .filter(|(id, m)| {
                            m.state == s && !m.leaving && !p.claimed.contains_key(*id)
                        })
                        .count()
                };
                let counts = Counts {
                    claimed: p.claimed.len(),
                    idle: free(MemberState::Running),
                    paused: free(MemberState::Paused),
                };
                (name.clone(), counts)
            })
            .collect()
    }

    /// The member's end of life as last known.
    pub(crate) fn end_at(&self, pool: &str, id: &str) -> Option<DateTime<Utc>> {
        self.pools.get(pool)?.members.get(id).map(|m| m.end_at)
    }

    /// The running, unclaimed member of `pool` with the lowest `cpu` (shared pick); members
    /// `cpu` knows nothing of come last.
    pub(crate) fn pick(&self, pool: &str, cpu: &HashMap<String, f64>) -> Option<String> {
        let p = self.pools.get(pool)?;
        p.members
            .iter()
            .filter(|(id, m)| {
                m.state == MemberState::Running && !m.leaving && !p.claimed.contains_key(*id)
            })
            .min_by(|a, b| {
                let ca = cpu.get(a.0).copied().unwrap_or(f64::INFINITY);
                let cb = cpu.get(b.0).copied().unwrap_or(f64::INFINITY);
                ca.total_cmp(&cb).then(a.0.cmp(b.0))
            })
            .map(|(id, _)| id.clone())
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::e2b::Metadata;

    pub(super) fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    pub(super) fn member(id: &str) -> ObservedSandbox {
        let mut metadata = Metadata::new();
        metadata.insert(crate::rules::POOL_KEY.into(), "p".into());
        ObservedSandbox {
            id: id.into(),
            template: "base".into(),
            started_at: t(0),
            end_at: t(600),
            state: SandboxState::Running,
            metadata,
            metric: None,
        }
    }

    pub(super) fn ask(id: &str) -> Claim {
        Claim {
            claim_id: id.into(),
            pool: "p".into(),
            sandbox_id: String::new(),
            holder: String::new(),
            claimed_at: t(1),
            expires_at: t(601),
            metadata: Default::default(),
            idempotency_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_released_dirty_member_stays_out_of_hand_outs_across_a_restart_until_it_is_gone() {
        let mut l = Ledger::default();
        let e = l.observation_started();
        l.observed(e, &[member("a")], t(0));
        let Ok(Take::Running(c)) = l.take(ask("c1"), 10) else {
            panic!("a member is free")
        };
        l.end(&c.claim_id, EndReason::Released, true, t(2));
        assert_eq!(l.take(ask("c2"), 10), Ok(Take::Nothing), "dirty at once");

        // A new agent reads the journal back: the member is dirty before anything is observed.
        let saved = l.saved();
        let mut back = Ledger::default();
        for (pool, id) in &saved.dirty {
            back.mark_dirty(pool, id);
        }
        let e = back.observation_started();
        let (_, killed) = back.observed(e, &[member("a")], t(3));
        assert!(killed.is_empty());
        assert_eq!(
            back.take(ask("c3"), 10),
            Ok(Take::Nothing),
            "still dirty after a restart"
        );
        // Once an observation no longer lists it, it is gone for good.
        let e = back.observation_started();
        let (_, killed) = back.observed(e, &[], t(4));
        assert_eq!(killed, vec!["a".to_string()]);
        assert!(back.saved().dirty.is_empty());
    }

    #[test]
    fn a_kill_reservation_never_takes_a_claimed_member_and_a_claim_never_takes_a_reserved_one() {
        let mut l = Ledger::default();
        let e = l.observation_started();
        l.observed(e, &[member("a"), member("b")], t(0));
        let Ok(Take::Running(c)) = l.take(ask("c1"), 10) else {
            panic!("a member is free")
        };
        let other = if c.sandbox_id == "a" { "b" } else { "a" };
        let (free, held) = l.reserve("p", &["a".to_string(), "b".to_string()]);
        assert_eq!(
            (free, held),
            (vec![other.to_string()], vec![c.sandbox_id.clone()])
        );
        assert_eq!(l.take(ask("c2"), 10), Ok(Take::Nothing));
        l.unreserve("p", &[other.to_string()]);
        assert!(matches!(l.take(ask("c3"), 10), Ok(Take::Running(x)) if x.sandbox_id == other));
    }

    #[test]
    fn a_failed_scale_in_kill_or_a_pause_never_makes_a_dirty_member_claimable() {
        let mut l = Ledger::default();
        let e = l.observation_started();
        l.observed(e, &[member("a")], t(0));
        let Ok(Take::Running(c)) = l.take(ask("c1"), 10) else {
            panic!("a member is free")
        };
        l.end(&c.claim_id, EndReason::Released, true, t(2));
        // The engine picks it as a victim too; that kill fails and is taken back.
        let (free, _) = l.reserve("p", &["a".to_string()]);
        l.unreserve("p", &free);
        assert_eq!(l.take(ask("c2"), 10), Ok(Take::Nothing));
        l.paused("p", "a");
        assert_eq!(l.take(ask("c3"), 10), Ok(Take::Nothing));
    }
}

#[cfg(test)]
mod resume_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn a_paused_member_is_resumed_only_within_the_pool_s_max_and_counts_as_coming() {
        let mut l = Ledger::default();
        let e = l.observation_started();
        let mut paused = member("b");
        paused.state = SandboxState::Paused;
        l.observed(e, &[member("a"), paused], t(0));
        // One running, one paused, max 1: the running one only.
        assert!(matches!(l.take(ask("c1"), 1), Ok(Take::Running(c)) if c.sandbox_id == "a"));
        assert_eq!(
            l.take(ask("c2"), 1),
            Ok(Take::Nothing),
            "a resume would make 2 of max 1"
        );
        // With room, the paused one is taken, and the engine counts it as coming until an
        // observation that began after its resume shows it running.
        let Ok(Take::Paused(c)) = l.take(ask("c3"), 2) else {
            panic!("room for one more")
        };
        assert_eq!(l.resuming().get("p"), Some(&1));
        l.resumed("p", &c.sandbox_id, t(600));
        assert_eq!(l.resuming().get("p"), Some(&1));
        let e = l.observation_started();
        l.observed(e, &[member("a"), member("b")], t(1));
        assert_eq!(l.resuming().get("p"), None);
    }
}
