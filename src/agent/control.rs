//! The agent's control loop, one tick at a time: observe, take events, decide, have the
//! decisions carried out ([`super::act`]), log, persist. [`Agent::tick`] takes `now`, so tests
//! drive it step by step against the emulator's manual clock; `poolpilot run` calls it on a
//! timer, and [`Agent::react`] between ticks when a webhook arrives. What the agent shows the
//! world is published from each turn's [`TickReport`] by [`super::status`].
//!
//! Safety rules held here, whatever the engine decides:
//! - a pool's size is its observed members plus every create not yet seen in an observation
//!   (the [`creates`](super::creates) ledger), so neither a tick nor a reaction to a webhook
//!   between two ticks counts from a stale list;
//! - a create carries an Idempotency-Key (the client retries it safely), also written into
//!   the sandbox's metadata so that an observation can match it;
//! - kill, pause and set_timeout only touch sandboxes whose metadata names the deciding pool
//!   ([`super::act`]);
//! - a failed observation makes no decision at all: missing data never reads as 0;
//! - in dry run nothing is changed, and every decision is logged once, as "would".

use crate::sync::lock;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::act::{self, ActionResult, CreateReturned};
use super::budget::Budget;
use super::claims::{Claims, Clock};
use super::creates::Creates;
use super::dedup::Dedup;
use super::http::webhooks::Delivered;
use super::leader::Fence;
use super::recorder::{PoolsNow, Recorder};
use super::state::PersistedState;
use super::state::StateStore;
use crate::e2b::{E2bApi, EventQuery, LifecycleEvent};
use crate::engine::time::before;
use crate::engine::{Action, Decision, Engine, Observations, ObservedSandbox};
use crate::notify::Dispatcher;
use crate::observe::observe;
use crate::rules::RuleSet;
use crate::store::shared::{Shared, SharedError};
use crate::store::{History, Source};

/// How far before the events cursor a new leader takes the ids of events acted on.
const SEEN_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(600);

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

/// One logged decision and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// The decision's number in this run of the agent; each create's result line carries the
    /// number of the decision that sent it.
    #[serde(default)]
    pub seq: u64,
    #[serde(flatten)]
    pub decision: Decision,
    /// What came of it, in one word; `sent` for creates until they all return.
    pub result: ActionResult,
    /// The same as a sentence: `created <id>`, `killed <ids>`, `failed: ...`, `refused: ...`.
    pub outcome: String,
    /// The sandboxes it created or touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_ids: Vec<String>,
}

/// A create decision whose creates have not all returned: its log line waits for them.
#[derive(Debug)]
struct OpenCreate {
    remaining: u32,
    failures: u32,
    entry: LoggedDecision,
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    pub observed: usize,
    pub events: usize,
    /// The ids of the events handed to the engine, each new to the agent.
    pub handled: Vec<String>,
    pub decisions: usize,
    pub error: Option<String>,
    /// Running members per pool, as observed.
    pub(crate) actual: BTreeMap<String, u32>,
    /// (action kind, result) of each action whose outcome became known in this turn.
    pub actions: Vec<(&'static str, ActionResult)>,
}

/// The control loop's state.
pub struct Agent {
    api: Arc<dyn E2bApi>,
    engine: Engine,
    dispatcher: Option<Dispatcher>,
    dedup: Arc<Mutex<Dedup>>,
    webhooks: Option<mpsc::Receiver<Delivered>>,
    event_cursor: Option<DateTime<Utc>>,
    events_every: TimeDelta,
    last_events_poll: Option<DateTime<Utc>>,
    /// Creates sent and not yet seen in an observation.
    creates: Arc<Creates>,
    /// The team's concurrency cap and the pools' create breakers.
    budget: Arc<Budget>,
    /// Each create's result, sent by its task when it returns.
    returned_tx: mpsc::UnboundedSender<CreateReturned>,
    returned_rx: mpsc::UnboundedReceiver<CreateReturned>,
    /// Create decisions whose creates have not all returned, by decision number.
    open_creates: BTreeMap<u64, OpenCreate>,
    /// Sandboxes killed since the last observation, which still lists them.
    killed: HashSet<String>,
    in_flight: Vec<JoinHandle<()>>,
    dry_run: bool,
    /// state.json and the journal of ids acted on; None keeps everything in memory.
    store: Option<StateStore>,
    log_path: Option<PathBuf>,
    /// The newest decisions, for `GET /api/v1/decisions`.
    pub recent: Arc<Mutex<VecDeque<LoggedDecision>>>,
    seq: u64,
    /// True after the first successful observation.
    pub(crate) ready: bool,
    /// The last observation, for reacting to webhooks between ticks.
    last_observed: Vec<ObservedSandbox>,
    /// Claims on pool members: what the engine must not take, and what it scales on.
    claims: Arc<Claims>,
    /// The history store, when kept ([`Agent::keep_history`]).
    recorder: Option<Recorder>,
    /// Whether this replica may act (always, for a single agent).
    fence: Fence,
    /// With a shared store: where the state is saved and read back at a failover, and the
    /// generation this agent leads with (None while it stands by).
    shared: Option<SharedState>,
}

/// An agent's side of a shared (PostgreSQL) store.
struct SharedState {
    shared: Shared,
    generation: Option<u64>,
    /// The JSON last saved, to skip saving an unchanged state.
    last_saved: Option<String>,
    /// When ids older than the dedup horizon were last forgotten.
    last_forget: Option<DateTime<Utc>>,
}

/// How an [`Agent`] is built.
pub struct AgentOptions {
    pub dispatcher: Option<Dispatcher>,
    pub webhooks: Option<mpsc::Receiver<Delivered>>,
    pub dedup: Arc<Mutex<Dedup>>,
    pub events_every: std::time::Duration,
    pub dry_run: bool,
    /// Where state.json, decisions.jsonl and claims.jsonl go; None keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// The agent's time for claims' leases; None is the wall clock.
    pub clock: Option<Clock>,
}

const RECENT: usize = 1000;

impl Agent {
    /// Builds the agent, resuming from `state_dir/state.json` when it exists.
    pub fn new(
        api: Arc<dyn E2bApi>,
        rules: Arc<RuleSet>,
        opts: AgentOptions,
    ) -> std::io::Result<Agent> {
        let log_path = opts.state_dir.as_ref().map(|d| d.join("decisions.jsonl"));
        let mut engine = Engine::new(rules.clone());
        let mut cursor = None;
        let creates = Arc::new(Creates::default());
        let mut store = None;
        if let Some(d) = &opts.state_dir {
            let limits = lock(&opts.dedup).limits();
            let (s, saved) =
                StateStore::open(d, Utc::now(), limits).map_err(std::io::Error::other)?;
            *lock(&opts.dedup) = saved.dedup;
            creates.restore(saved.creates);
            if let Some(e) = saved.engine {
                engine = Engine::with_state(rules.clone(), e);
                tracing::info!(dir = %d.display(), "resumed from saved state");
            }
            cursor = saved.cursor;
            store = Some(s);
        }
        let clock = opts.clock.unwrap_or_else(|| Arc::new(Utc::now));
        let budget = Arc::new(Budget::new(creates.clone()));
        let claims = Arc::new(Claims::open(
            api.clone(),
            budget.clone(),
            rules.clone(),
            clock,
            opts.state_dir.as_deref(),
        )?);
        let (returned_tx, returned_rx) = mpsc::unbounded_channel();
        Ok(Agent {
            budget,
            api,
            engine,
            dispatcher: opts.dispatcher,
            dedup: opts.dedup,
            webhooks: opts.webhooks,
            event_cursor: cursor,
            events_every: TimeDelta::from_std(opts.events_every).unwrap_or(TimeDelta::seconds(10)),
            last_events_poll: None,
            creates,
            returned_tx,
            returned_rx,
            open_creates: BTreeMap::new(),
            killed: HashSet::new(),
            in_flight: Vec::new(),
            dry_run: opts.dry_run,
            store,
            log_path,
            recent: Arc::new(Mutex::new(VecDeque::new())),
            seq: 0,
            ready: false,
            last_observed: Vec::new(),
            claims,
            recorder: None,
            fence: Fence::single(),
            shared: None,
        })
    }

    /// Shares state through `shared` (a PostgreSQL store) and acts only while `fence`
    /// allows; stands by until [`Agent::lead`].
    pub fn share(&mut self, shared: Shared, fence: Fence) {
        self.fence = fence;
        self.shared = Some(SharedState {
            shared,
            generation: None,
            last_saved: None,
            last_forget: None,
        });
    }

    /// The shared store, when this agent shares one with other replicas.
    pub(crate) fn shared_store(&self) -> Option<&Shared> {
        self.shared.as_ref().map(|s| &s.shared)
    }

    /// The generation this agent leads with, if it leads (a single agent: always, 0).
    pub fn leading(&self) -> Option<u64> {
        match &self.shared {
            Some(s) => s.generation,
            None => Some(0),
        }
    }

    /// Takes over as the leader of `generation`: resumes from the state the last leader saved
    /// (engine state, events cursor, creates in flight) and the ids it acted on.
    pub async fn lead(&mut self, generation: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
        let Some(s) = &self.shared else {
            return Ok(());
        };
        let shared = s.shared.clone();
        let saved = shared.load().await?;
        let mut cursor = None;
        if let Some((body, from)) = saved {
            let state: PersistedState = serde_json::from_str(&body)?;
            self.engine = Engine::with_state(self.engine.rules().clone(), state.engine);
            self.creates.restore(state.creates);
            cursor = state.event_cursor.map(|c| c.min(now));
            tracing::info!(generation, from, "resumed the state the last leader saved");
        }
        self.event_cursor = cursor;
        let since = before(cursor.unwrap_or(now), SEEN_LOOKBACK);
        let limits = lock(&self.dedup).limits();
        let seen = shared
            .seen_since(since.timestamp_millis(), limits.ids)
            .await?;
        let mut dedup = Dedup::with_limits(limits);
        dedup.advance_horizon(since);
        for (id, at) in &seen {
            dedup.remember(id, crate::store::at(*at));
        }
        *lock(&self.dedup) = dedup;
        // Deliveries queued after the caller's hand-over passed the old window: they too go
        // through the inbox, and so through the new one.
        self.queue_to_inbox().await;
        self.claims.lead(generation).await?;
        self.ready = false;
        self.last_observed.clear();
        self.last_events_poll = None;
        if let Some(s) = &mut self.shared {
            s.generation = Some(generation);
            s.last_saved = None;
        }
        Ok(())
    }

    /// Stands by (another replica leads, or the lease was lost): nothing is acted on until
    /// [`Agent::lead`]; the webhook deliveries this replica received are left in the store's
    /// inbox for the leader.
    pub async fn stand_by(&mut self) {
        self.stop_leading();
        self.claims.stand_by();
        self.queue_to_inbox().await;
    }

    /// Moves the webhook deliveries waiting in the receiver's queue to the store's inbox, from
    /// where the leader takes them through its dedup window.
    async fn queue_to_inbox(&mut self) {
        let mut events = Vec::new();
        if let Some(rx) = &mut self.webhooks {
            while let Ok(d) = rx.try_recv() {
                events.push(d.event);
            }
        }
        if let Some(s) = &self.shared
            && let Err(e) = s.shared.push_inbox(&events).await
        {
            tracing::warn!(error = %e, events = events.len(), "cannot leave webhook deliveries for the leader; its events poll will find them");
        }
    }

    /// Stops leading until [`Agent::lead`] again: what it took since its last save is
    /// taken again from the store then.
    fn stop_leading(&mut self) {
        if let Some(s) = &mut self.shared {
            s.generation = None;
        }
    }

    /// The leader's share of the deliveries standbys received, new to it (deduplicated as
    /// polled events are).
    async fn take_inbox(&mut self, now: DateTime<Utc>) -> Vec<LifecycleEvent> {
        let Some(s) = &self.shared else {
            return Vec::new();
        };
        let Some(generation) = s.generation else {
            return Vec::new();
        };
        let taken = match s.shared.take_inbox(generation, 1000).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the standbys' webhook deliveries; will retry");
                return Vec::new();
            }
        };
        let mut d = lock(&self.dedup);
        let new: Vec<LifecycleEvent> = taken
            .into_iter()
            .filter(|e| d.record_polled(&e.id, e.timestamp, now))
            .collect();
        drop(d);
        self.record_events(&new, Source::Webhook);
        new
    }

    /// Keeps history from now on: events, decisions, alerts, claims, pool sizes, samples.
    pub fn keep_history(&mut self, history: History) {
        self.claims.keep_history(history.clone());
        self.recorder = Some(Recorder::new(history));
    }

    /// Stops appending decisions to `decisions.jsonl` (`decision_log: false`).
    pub fn without_decision_log(&mut self) {
        self.log_path = None;
    }

    /// The history store, when kept.
    pub fn history(&self) -> Option<&History> {
        self.recorder.as_ref().map(Recorder::history)
    }

    /// The claims service, shared with the HTTP handlers.
    pub fn claims(&self) -> Arc<Claims> {
        self.claims.clone()
    }

    /// Makes the pools whose claims found no member free since the last look due at the next
    /// turn, whatever their interval; true when there were any.
    pub(crate) fn expedite_starved(&mut self) -> bool {
        let pools = self.claims.take_starved();
        for p in &pools {
            self.engine.expedite(p);
        }
        !pools.is_empty()
    }

    /// The sandboxes the last observation saw (what the status page lists as members).
    pub(crate) fn last_observed(&self) -> &[ObservedSandbox] {
        &self.last_observed
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Swaps in a new rule set whole (hot reload), keeping state. Notifiers follow the new
    /// set: added, changed and removed ones take effect at once, and notices already queued
    /// are still delivered.
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        if let Some(d) = &self.dispatcher {
            let r = d.reconfigure(&rules.notifiers);
            if r != Default::default() {
                tracing::info!(added = ?r.added, changed = ?r.changed, removed = ?r.removed, "notifiers reconfigured");
            }
        }
        self.claims.set_rules(rules.clone());
        self.engine.set_rules(rules);
    }

    /// The budget every create passes (no cap until [`Budget::set_cap`]); the claims code
    /// takes its resume permits from it.
    pub fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    /// Members coming per pool: creates sent and not yet seen in an observation, and paused
    /// members resumed for claims since the last observation.
    pub fn pending(&self) -> BTreeMap<String, u32> {
        let mut coming = self.creates.per_pool();
        for (pool, n) in self.claims.resuming() {
            *coming.entry(pool).or_default() += n;
        }
        coming
    }

    /// Waits for every create in flight to return, and the claims' background calls, then
    /// logs and counts the creates' results.
    pub async fn settle(&mut self) -> TickReport {
        for h in self.in_flight.drain(..) {
            let _ = h.await;
        }
        self.claims.settle().await;
        let mut report = TickReport::default();
        self.take_returned_creates(&mut report);
        report
    }

    async fn poll_events(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<LifecycleEvent>, crate::e2b::Error> {
        // Newest first, page by page, back to a minute before the cursor (events arrive late).
        let since = before(self.event_cursor.unwrap_or(before(now, MINUTE)), MINUTE);
        let mut q = EventQuery {
            offset: 0,
            limit: 100,
            order_asc: false,
            types: Vec::new(),
        };
        let mut fresh = Vec::new();
        loop {
            let page = self.api.events_page(None, &q).await?;
            let done = page.is_empty()
                || page.iter().any(|e| e.timestamp < since)
                || page.len() < q.limit as usize;
            q.offset += page.len() as u64;
            for e in page {
                if e.timestamp >= since {
                    fresh.push(e);
                }
            }
            if done {
                break;
            }
        }
        let mut d = lock(&self.dedup);
        d.advance_horizon(since);
        let mut new: Vec<LifecycleEvent> = fresh
            .into_iter()
            .filter(|e| d.record_polled(&e.id, e.timestamp, now))
            .collect();
        drop(d);
        new.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        self.record_events(&new, Source::Poll);
        if let Some(last) = new.last() {
            self.event_cursor = Some(
                self.event_cursor
                    .map_or(last.timestamp, |c| c.max(last.timestamp))
                    .min(now),
            );
        } else if self.event_cursor.is_none() {
            self.event_cursor = Some(now);
        }
        Ok(new)
    }

    /// Reacts to webhook deliveries now, between ticks, against the last observation: a
    /// crashed sandbox is replaced in milliseconds, not at the next poll. Does nothing before
    /// the first successful observation or when no delivery is waiting.
    pub async fn react(&mut self, now: DateTime<Utc>) -> TickReport {
        let mut report = TickReport::default();
        self.take_returned_creates(&mut report);
        if !self.ready || self.leading().is_none() {
            return report;
        }
        let events = self.take_deliveries();
        if events.is_empty() {
            return report;
        }
        // The sandboxes the events say are gone, and those killed since, are gone from the
        // observation too; creates since then are in the ledger.
        let gone: HashSet<&str> = events
            .iter()
            .filter(|e| e.event_type == crate::e2b::EventType::Killed)
            .map(|e| e.sandbox_id.as_str())
            .chain(self.killed.iter().map(String::as_str))
            .collect();
        let observed: Vec<ObservedSandbox> = self
            .last_observed
            .iter()
            .filter(|s| !gone.contains(s.id.as_str()))
            .cloned()
            .collect();
        self.decide_and_act(now, observed, events, report).await
    }

    /// One turn of the loop at `now`.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> TickReport {
        let mut report = TickReport::default();
        self.take_returned_creates(&mut report);
        if self.leading().is_none() {
            report.error = Some("standing by: another replica leads".into());
            return report;
        }
        let epoch = self.creates.observation_started();
        let claims_epoch = self.claims.observation_started();
        let observed = match observe(self.api.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot observe sandboxes; no decision this tick");
                report.error = Some(e.to_string());
                return report;
            }
        };
        self.settle_ledger(epoch, &observed);
        self.claims.observed(claims_epoch, &observed);
        self.claims.expire(now);
        self.ready = true;
        report.observed = observed.len();
        for s in &observed {
            if s.state == crate::e2b::SandboxState::Running
                && let Some(p) = s.pool()
            {
                *report.actual.entry(p.to_string()).or_default() += 1;
            }
        }
        // Events: webhook deliveries first (already verified and deduplicated), those the
        // standbys received, then the API.
        let mut events = self.take_deliveries();
        events.append(&mut self.take_inbox(now).await);
        if self
            .last_events_poll
            .is_none_or(|t| now - t >= self.events_every)
        {
            self.last_events_poll = Some(now);
            match self.poll_events(now).await {
                Ok(mut polled) => events.append(&mut polled),
                Err(e) => tracing::warn!(error = %e, "event poll failed; will retry"),
            }
        }
        let report = self.decide_and_act(now, observed, events, report).await;
        self.record_samples(now);
        report
    }

    /// Settles the creates ledger and the kills against a fresh observation.
    fn settle_ledger(&mut self, epoch: u64, observed: &[ObservedSandbox]) {
        for c in self.creates.observed(epoch, observed) {
            tracing::warn!(pool = %c.pool, key = %c.key, "a create was never seen in an observation (it died first, or its answer was lost); no longer counted");
        }
        self.killed.clear();
    }

    /// Steps the engine on an observation and events, carries the decisions out, and saves
    /// state: the shared end of [`Agent::tick`] and [`Agent::react`].
    async fn decide_and_act(
        &mut self,
        now: DateTime<Utc>,
        observed: Vec<ObservedSandbox>,
        events: Vec<LifecycleEvent>,
        mut report: TickReport,
    ) -> TickReport {
        report.events = events.len();
        self.claims.killed_events(
            events
                .iter()
                .filter(|e| e.event_type == crate::e2b::EventType::Killed)
                .map(|e| e.sandbox_id.as_str()),
        );
        if let Some(s) = &mut self.store {
            s.record(events.iter().map(|e| (e.id.as_str(), e.timestamp)))
                .await;
        }
        if let Err(e) = self.record_shared(&events).await {
            tracing::error!(error = %e, "cannot record the events to act on in the store; no decision this turn");
            // Taken but not acted on: leading again resumes the store's window and saved
            // cursor, so the events poll brings them back (tests/simulation_ha.rs).
            self.stop_leading();
            report.error = Some(e.to_string());
            return report;
        }
        report.handled = events.iter().map(|e| e.id.clone()).collect();
        let pending = self.pending();
        let claims = self.claims.for_engine(now);
        let decisions = self.engine.step(
            now,
            &Observations {
                sandboxes: &observed,
                events: &events,
                pending_creates: &pending,
                claims: &claims,
            },
        );
        report.decisions = decisions.len();
        self.budget.observed(&observed);
        act::announce_breakers(
            &self.budget,
            self.engine.rules(),
            self.dispatcher.as_ref(),
            now,
        );
        // With a shared store, the creates wait until the state naming them is saved.
        let (gate_tx, gate_rx) = watch::channel(None);
        let gate = self.shared.is_some().then_some(&gate_rx);
        self.carry_out(decisions, &observed, now, &mut report, gate)
            .await;
        self.last_observed = observed;
        // With the creates this turn sent: counted after a restart until seen.
        let saved = self.persist().await;
        let _ = gate_tx.send(Some(saved));
        report
    }

    /// With a shared store, records the ids of the events about to be acted on, fenced by
    /// this agent's generation: a deposed leader acts on nothing.
    async fn record_shared(&mut self, events: &[LifecycleEvent]) -> Result<(), SharedError> {
        let Some(s) = &self.shared else {
            return Ok(());
        };
        let Some(generation) = s.generation else {
            return Err(SharedError::Fenced(0));
        };
        let ids: Vec<(String, i64)> = events
            .iter()
            .map(|e| (e.id.clone(), e.timestamp.timestamp_millis()))
            .collect();
        s.shared.record_seen(generation, &ids).await
    }

    /// The webhook deliveries waiting in the receiver's queue. Until the engine has them they
    /// are not in the journal, so after a crash the event poll brings them back.
    fn take_deliveries(&mut self) -> Vec<LifecycleEvent> {
        let mut events = Vec::new();
        if let Some(rx) = &mut self.webhooks {
            while let Ok(d) = rx.try_recv() {
                events.push(d.event);
            }
        }
        self.record_events(&events, Source::Webhook);
        events
    }

    /// Tells the history store of events the engine takes, with their pools.
    fn record_events(&self, events: &[LifecycleEvent], source: Source) {
        if let Some(r) = &self.recorder {
            let members = &self.engine.state().members;
            r.events(events, source, |id| {
                members.get(id).map(|m| m.pool.as_str())
            });
        }
    }

    /// Tells the history store of the pools' sizes and the members' samples, when due.
    fn record_samples(&mut self, now: DateTime<Utc>) {
        let pending = self.pending();
        let Some(r) = &mut self.recorder else { return };
        r.sample(
            now,
            &PoolsNow {
                engine: self.engine.state(),
                observed: &self.last_observed,
                pending: &pending,
                claims: &self.claims.for_engine(now),
                counts: &self.claims.counts(),
            },
        );
    }

    /// Carries out decisions, logging each with its outcome and counting it in the report
    /// when its outcome is known (a create: when it returns).
    async fn carry_out(
        &mut self,
        decisions: Vec<Decision>,
        observed: &[ObservedSandbox],
        now: DateTime<Utc>,
        report: &mut TickReport,
        gate: Option<&watch::Receiver<Option<bool>>>,
    ) {
        for mut d in decisions {
            self.seq += 1;
            let seq = self.seq;
            if self.dry_run && !matches!(d.action, Action::Alert(_)) {
                d.dry_run = true;
            }
            let outcome = act::Actor {
                api: &self.api,
                creates: &self.creates,
                budget: &self.budget,
                returned: &self.returned_tx,
                in_flight: &mut self.in_flight,
                observed,
                claims: &self.claims,
                rules: self.engine.rules(),
                dispatcher: self.dispatcher.as_ref(),
                now,
                fence: &self.fence,
                gate,
            }
            .act(seq, &d)
            .await;
            if let Action::Kill { .. } = &d.action {
                self.killed.extend(outcome.sandbox_ids.iter().cloned());
            }
            let (kind, sent) = (act::kind(&d.action), outcome.sent);
            report
                .actions
                .extend(outcome.counted.iter().map(|r| (kind, *r)));
            let entry = LoggedDecision {
                seq,
                result: outcome.result,
                outcome: outcome.detail,
                sandbox_ids: outcome.sandbox_ids,
                decision: d,
            };
            match &entry.decision.action {
                Action::Create { .. } if entry.result == ActionResult::Sent => {
                    self.open_creates.insert(
                        seq,
                        OpenCreate {
                            remaining: sent,
                            failures: 0,
                            entry: entry.clone(),
                        },
                    );
                }
                _ => self.append_to_file(&entry),
            }
            self.log(entry);
        }
    }

    /// Logs and counts the creates that returned since the last look.
    fn take_returned_creates(&mut self, report: &mut TickReport) {
        while let Ok(r) = self.returned_rx.try_recv() {
            let pool = match &r.decision.action {
                Action::Create { pool, .. } => pool.as_str(),
                _ => "",
            };
            let (result, ids) = match &r.result {
                Ok(id) => {
                    tracing::info!(pool, sandbox = %id, seq = r.seq, "created");
                    (ActionResult::Ok, vec![id.clone()])
                }
                Err(e) => {
                    tracing::error!(pool, seq = r.seq, error = %e, "create failed");
                    (ActionResult::Failed, Vec::new())
                }
            };
            report.actions.push(("create", result));
            self.settle_open_create(r.seq, result, ids);
        }
    }

    /// Folds one create's result into its decision: once all its creates returned, the
    /// decision's line goes to the decision log with the ids created (`ok`) or the failures
    /// (`failed`), and its entry in `recent` says the same.
    fn settle_open_create(&mut self, seq: u64, result: ActionResult, ids: Vec<String>) {
        let Some(open) = self.open_creates.get_mut(&seq) else {
            return;
        };
        open.remaining = open.remaining.saturating_sub(1);
        open.entry.sandbox_ids.extend(ids);
        if result == ActionResult::Failed {
            open.failures += 1;
        }
        if open.remaining > 0 {
            return;
        }
        let Some(OpenCreate {
            mut entry,
            failures,
            ..
        }) = self.open_creates.remove(&seq)
        else {
            return;
        };
        entry.result = if failures > 0 {
            ActionResult::Failed
        } else {
            ActionResult::Ok
        };
        let created = entry.sandbox_ids.join(", ");
        entry.outcome = match (created.is_empty(), failures) {
            (_, 0) => format!("created {created}"),
            (true, f) => format!("{f} create(s) failed"),
            (false, f) => format!("created {created}; {f} create(s) failed"),
        };
        self.append_to_file(&entry);
        if let Some(r) = &self.recorder {
            r.decision(&entry, false);
        }
        let mut recent = lock(&self.recent);
        if let Some(e) = recent.iter_mut().rev().find(|e| e.seq == seq) {
            *e = entry;
        }
    }

    fn log(&mut self, entry: LoggedDecision) {
        let d = &entry.decision;
        if d.dry_run {
            tracing::info!(rule = %d.rule, seq = entry.seq, "would: {}", d.cause.summary);
        } else {
            tracing::info!(rule = %d.rule, seq = entry.seq, result = entry.result.as_str(), outcome = %entry.outcome, "{}", d.cause.summary);
        }
        if let Some(r) = &self.recorder {
            r.decision(&entry, true);
        }
        let mut r = lock(&self.recent);
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back(entry);
    }

    /// Appends one JSON line to the decision log, if there is one.
    fn append_to_file(&self, record: &impl Serialize) {
        let Some(p) = &self.log_path else { return };
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        use std::io::Write;
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            tracing::error!(path = %p.display(), error = %e, "cannot append to the decision log");
        }
    }

    /// Saves state durably when it changed (see [`super::state`]), with the creates in flight;
    /// claims are journaled as they change, and synced here. With a shared store, saves it
    /// there, fenced: false when it could not be saved (the turn's creates are then not sent).
    pub async fn persist(&mut self) -> bool {
        self.claims.sync_if_due();
        let horizon = lock(&self.dedup).horizon();
        if let Some(s) = &mut self.store {
            s.save(
                self.engine.state(),
                self.event_cursor,
                self.creates.snapshot(),
                horizon,
            );
        }
        self.save_shared(horizon).await
    }

    /// Saves the state to the shared store when it changed, and forgets ids acted on that
    /// are behind the dedup horizon once a minute.
    async fn save_shared(&mut self, horizon: Option<DateTime<Utc>>) -> bool {
        let state = PersistedState::new(
            self.engine.state().clone(),
            self.event_cursor,
            self.creates.snapshot(),
        );
        let Some(s) = &mut self.shared else {
            return true;
        };
        let Some(generation) = s.generation else {
            return false;
        };
        let body = match serde_json::to_string(&state) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize state");
                return false;
            }
        };
        if s.last_saved.as_deref() != Some(body.as_str()) {
            let now = Utc::now().timestamp_millis();
            match s.shared.save(generation, &body, now).await {
                Ok(()) => s.last_saved = Some(body),
                Err(e) => {
                    tracing::error!(error = %e, "cannot save state to the store");
                    return false;
                }
            }
        }
        if let Some(h) = horizon
            && s.last_forget.is_none_or(|t| h - t >= TimeDelta::minutes(1))
        {
            s.last_forget = Some(h);
            if let Err(e) = s.shared.forget_seen(h.timestamp_millis()).await {
                tracing::warn!(error = %e, "cannot forget old event ids in the store; will retry");
            }
        }
        true
    }
}
