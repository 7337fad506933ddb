//! The agent's control loop, one tick at a time: observe, take events, decide, act, notify,
//! log, persist. [`Agent::tick`] takes `now`, so tests drive it step by step against the
//! emulator's manual clock; `poolpilot run` calls it on a timer.
//!
//! Safety rules held here, whatever the engine decides:
//! - a create carries an Idempotency-Key (the client retries it safely) and counts as pending
//!   until it returns, so a slow create is never doubled;
//! - kill, pause and set_timeout only touch sandboxes whose metadata names the deciding pool;
//! - a failed observation makes no decision at all: missing data never reads as 0;
//! - in dry run nothing is changed, every decision is logged as "would".

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dedup::Dedup;
use super::webhooks::Delivered;
use crate::e2b::{E2bApi, EventQuery, LifecycleEvent};
use crate::engine::{Action, Decision, Engine, EngineState, Observations};
use crate::notify::Dispatcher;
use crate::rules::RuleSet;
use crate::simulate::observe;

/// Everything that survives a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedState {
    pub engine: EngineState,
    /// Newest event time taken from the events API.
    pub event_cursor: Option<DateTime<Utc>>,
    pub dedup: Dedup,
}

/// One logged decision and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedDecision {
    #[serde(flatten)]
    pub decision: Decision,
    /// `done`, `failed: ...`, `dry run`, `refused: ...`, `queued`.
    pub outcome: String,
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    pub observed: usize,
    pub events: usize,
    pub decisions: usize,
    pub error: Option<String>,
    /// Running members per pool, as observed.
    pub actual: BTreeMap<String, u32>,
    /// (action kind, outcome) of each decision carried out or refused.
    pub actions: Vec<(String, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    pending: Arc<Mutex<BTreeMap<String, u32>>>,
    in_flight: Vec<JoinHandle<()>>,
    dry_run: bool,
    state_path: Option<PathBuf>,
    log_path: Option<PathBuf>,
    /// The newest decisions, for `GET /api/v1/decisions`.
    pub recent: Arc<Mutex<VecDeque<LoggedDecision>>>,
    seq: u64,
    /// True after the first successful observation.
    pub ready: bool,
    /// The last observation, for reacting to webhooks between ticks.
    last_observed: Vec<crate::engine::ObservedSandbox>,
}

/// How an [`Agent`] is built.
pub struct AgentOptions {
    pub dispatcher: Option<Dispatcher>,
    pub webhooks: Option<mpsc::Receiver<Delivered>>,
    pub dedup: Arc<Mutex<Dedup>>,
    pub events_every: std::time::Duration,
    pub dry_run: bool,
    /// Where state.json and decisions.jsonl go; None keeps everything in memory.
    pub state_dir: Option<PathBuf>,
}

const RECENT: usize = 1000;

impl Agent {
    /// Builds the agent, resuming from `state_dir/state.json` when it exists.
    pub fn new(
        api: Arc<dyn E2bApi>,
        rules: Arc<RuleSet>,
        opts: AgentOptions,
    ) -> std::io::Result<Agent> {
        let state_path = opts.state_dir.as_ref().map(|d| d.join("state.json"));
        let log_path = opts.state_dir.as_ref().map(|d| d.join("decisions.jsonl"));
        if let Some(d) = &opts.state_dir {
            std::fs::create_dir_all(d)?;
        }
        let mut engine = Engine::new(rules.clone());
        let mut cursor = None;
        if let Some(p) = &state_path
            && p.exists()
        {
            // Bytes, not text: a file that is not UTF-8 is unreadable state, set aside below.
            let bytes = std::fs::read(p)?;
            match serde_json::from_slice::<PersistedState>(&bytes) {
                Ok(s) => {
                    *lock(&opts.dedup) = s.dedup;
                    engine = Engine::with_state(rules, s.engine);
                    cursor = s.event_cursor;
                    tracing::info!(path = %p.display(), "resumed from saved state");
                }
                Err(e) => {
                    // Kept aside, not overwritten, so that it can be inspected or restored.
                    let aside = p.with_extension("json.unreadable");
                    let _ = std::fs::rename(p, &aside);
                    tracing::error!(path = %p.display(), kept_as = %aside.display(), error = %e, "saved state unreadable; starting fresh")
                }
            }
        }
        Ok(Agent {
            api,
            engine,
            dispatcher: opts.dispatcher,
            dedup: opts.dedup,
            webhooks: opts.webhooks,
            event_cursor: cursor,
            events_every: TimeDelta::from_std(opts.events_every).unwrap_or(TimeDelta::seconds(10)),
            last_events_poll: None,
            pending: Arc::new(Mutex::new(BTreeMap::new())),
            in_flight: Vec::new(),
            dry_run: opts.dry_run,
            state_path,
            log_path,
            recent: Arc::new(Mutex::new(VecDeque::new())),
            seq: 0,
            ready: false,
            last_observed: Vec::new(),
        })
    }

    pub fn engine(&self) -> &Engine {
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
        self.engine.set_rules(rules);
    }

    /// Creates in flight per pool.
    pub fn pending(&self) -> BTreeMap<String, u32> {
        lock(&self.pending).clone()
    }

    /// Waits for every create in flight to finish.
    pub async fn settle(&mut self) {
        for h in self.in_flight.drain(..) {
            let _ = h.await;
        }
    }

    async fn poll_events(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<Vec<LifecycleEvent>, crate::e2b::Error> {
        // Newest first, page by page, back to a minute before the cursor (events arrive late).
        let since =
            self.event_cursor.unwrap_or(now - TimeDelta::minutes(1)) - TimeDelta::minutes(1);
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
        let mut new: Vec<LifecycleEvent> = fresh.into_iter().filter(|e| d.insert(&e.id)).collect();
        drop(d);
        new.sort_by(|a, b| (a.timestamp, &a.id).cmp(&(b.timestamp, &b.id)));
        if let Some(last) = new.last() {
            self.event_cursor = Some(
                self.event_cursor
                    .map_or(last.timestamp, |c| c.max(last.timestamp)),
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
        let report = TickReport::default();
        if !self.ready {
            return report;
        }
        let mut events = Vec::new();
        if let Some(rx) = &mut self.webhooks {
            while let Ok(d) = rx.try_recv() {
                events.push(d.event);
            }
        }
        if events.is_empty() {
            return report;
        }
        // The sandboxes the events say are gone are gone from the observation too.
        let gone: std::collections::HashSet<&str> = events
            .iter()
            .filter(|e| e.event_type == crate::e2b::EventType::Killed)
            .map(|e| e.sandbox_id.as_str())
            .collect();
        let observed: Vec<crate::engine::ObservedSandbox> = self
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
        let observed = match observe(self.api.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "cannot observe sandboxes; no decision this tick");
                report.error = Some(e.to_string());
                return report;
            }
        };
        self.ready = true;
        report.observed = observed.len();
        for s in &observed {
            if s.state == crate::e2b::SandboxState::Running
                && let Some(p) = s.pool()
            {
                *report.actual.entry(p.to_string()).or_default() += 1;
            }
        }
        // Events: webhook deliveries first (already verified and deduplicated), then the API.
        let mut events = Vec::new();
        if let Some(rx) = &mut self.webhooks {
            while let Ok(d) = rx.try_recv() {
                events.push(d.event);
            }
        }
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
        self.decide_and_act(now, observed, events, report).await
    }

    /// Steps the engine on an observation and events, carries the decisions out, and saves
    /// state: the shared end of [`Agent::tick`] and [`Agent::react`].
    async fn decide_and_act(
        &mut self,
        now: DateTime<Utc>,
        observed: Vec<crate::engine::ObservedSandbox>,
        events: Vec<LifecycleEvent>,
        mut report: TickReport,
    ) -> TickReport {
        report.events = events.len();
        let pending = self.pending();
        let decisions = self.engine.step(
            now,
            &Observations {
                sandboxes: &observed,
                events: &events,
                pending_creates: &pending,
            },
        );
        report.decisions = decisions.len();
        self.carry_out(decisions, &observed, now, &mut report).await;
        self.last_observed = observed;
        self.persist();
        report
    }

    /// Carries out decisions, logging each with its outcome and counting it in the report.
    async fn carry_out(
        &mut self,
        decisions: Vec<Decision>,
        observed: &[crate::engine::ObservedSandbox],
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) {
        for d in decisions {
            let outcome = self.act(&d, observed, now).await;
            let kind = match &d.action {
                Action::Create { .. } => "create",
                Action::Kill { .. } => "kill",
                Action::SetTimeout { .. } => "set_timeout",
                Action::Pause { .. } => "pause",
                Action::Alert(_) => "notify",
            };
            let result = if outcome.contains("failed") {
                "failed"
            } else if outcome.contains("refused") {
                "refused"
            } else if outcome == "dry run" {
                "dry_run"
            } else {
                "ok"
            };
            report.actions.push((kind.to_string(), result.to_string()));
            self.log(d, outcome);
        }
    }

    async fn act(
        &mut self,
        d: &Decision,
        observed: &[crate::engine::ObservedSandbox],
        now: DateTime<Utc>,
    ) -> String {
        if let Action::Alert(n) = &d.action {
            return match &self.dispatcher {
                Some(disp) => {
                    let errs = disp.send_all(n, now);
                    if errs.is_empty() {
                        "queued".into()
                    } else {
                        format!(
                            "refused: {}",
                            errs.iter()
                                .map(|e| e.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                }
                None => "no notifiers".into(),
            };
        }
        if self.dry_run || d.dry_run {
            tracing::info!(rule = %d.rule, "would: {}", d.cause.summary);
            return "dry run".into();
        }
        let owned = |pool: &str, id: &str| {
            observed
                .iter()
                .any(|s| s.id == id && s.pool() == Some(pool))
        };
        match &d.action {
            Action::Create { pool, count } => {
                let Some(def) = self.engine.rules().pool(pool).cloned() else {
                    return "refused: unknown pool".into();
                };
                for _ in 0..*count {
                    self.seq += 1;
                    let req = def.create_request();
                    let key = uuid::Uuid::new_v4().to_string();
                    *lock(&self.pending).entry(pool.clone()).or_default() += 1;
                    let (api, pending, pool) =
                        (self.api.clone(), self.pending.clone(), pool.clone());
                    self.in_flight.retain(|h| !h.is_finished());
                    self.in_flight.push(tokio::spawn(async move {
                        match api.create_sandbox(&req, &key).await {
                            Ok(s) => {
                                tracing::info!(pool = %pool, sandbox = %s.sandbox_id, "created")
                            }
                            Err(e) => tracing::error!(pool = %pool, error = %e, "create failed"),
                        }
                        if let Some(n) = lock(&pending).get_mut(&pool) {
                            *n = n.saturating_sub(1);
                        }
                    }));
                }
                "queued".into()
            }
            Action::Kill { pool, sandbox_ids } => {
                let mut results = Vec::new();
                for id in sandbox_ids {
                    if !owned(pool, id) {
                        results.push(format!("{id} refused: not owned by pool {pool}"));
                        continue;
                    }
                    match self.api.kill_sandbox(id).await {
                        Ok(()) | Err(crate::e2b::Error::NotFound { .. }) => {
                            results.push(format!("{id} killed"))
                        }
                        Err(e) => results.push(format!("{id} failed: {e}")),
                    }
                }
                results.join("; ")
            }
            Action::SetTimeout {
                pool,
                sandbox_id,
                timeout_s,
            } => {
                if !owned(pool, sandbox_id) {
                    return format!("refused: {sandbox_id} not owned by pool {pool}");
                }
                self.api
                    .set_timeout(sandbox_id, *timeout_s)
                    .await
                    .map_or_else(|e| format!("failed: {e}"), |_| "done".into())
            }
            Action::Pause { pool, sandbox_id } => {
                if !owned(pool, sandbox_id) {
                    return format!("refused: {sandbox_id} not owned by pool {pool}");
                }
                self.api
                    .pause_sandbox(sandbox_id)
                    .await
                    .map_or_else(|e| format!("failed: {e}"), |_| "done".into())
            }
            Action::Alert(_) => unreachable!("handled above"),
        }
    }

    fn log(&mut self, decision: Decision, outcome: String) {
        tracing::info!(rule = %decision.rule, outcome = %outcome, "{}", decision.cause.summary);
        let entry = LoggedDecision { decision, outcome };
        if let Some(p) = &self.log_path
            && let Ok(line) = serde_json::to_string(&entry)
        {
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
        let mut r = lock(&self.recent);
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back(entry);
    }

    /// Writes state atomically: a temporary file, then a rename over the old one.
    pub fn persist(&self) {
        let Some(path) = &self.state_path else { return };
        let state = PersistedState {
            engine: self.engine.state().clone(),
            event_cursor: self.event_cursor,
            dedup: lock(&self.dedup).clone(),
        };
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = res {
            tracing::error!(path = %path.display(), error = %e, "cannot save state");
        }
    }
}
