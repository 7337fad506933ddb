//! Carrying decisions out, with typed outcomes.
//!
//! Each decision ends in an [`Outcome`]: its [`ActionResult`] (one word, also the metric's
//! `result` label), a sentence for people, and the sandboxes it touched. Creates run in the
//! background, so their decision's outcome is [`ActionResult::Sent`] and each create's own
//! result arrives later as a [`CreateReturned`], which the agent logs and counts when it
//! takes it (see `Agent::take_returned_creates` in [`super::control`]). An action is counted
//! once, when its outcome is known. Alerts are queued to the notifiers here too; a decision in
//! dry run ends here as [`ActionResult::DryRun`], with nothing called.
//!
//! Safety rules held here, whatever the engine decided:
//! - kill, pause and set_timeout touch only sandboxes the last observation showed with the
//!   deciding pool's mark;
//! - every create carries a fresh Idempotency-Key, written into the sandbox's metadata too,
//!   and is in the creates ledger before it is sent (so it counts toward the pool's size at
//!   once) until an observation settles it.
//!
//! This is the only place a [`Decision`] becomes a call to E2B. It never decides: it carries
//! out what the engine said, or refuses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::budget::{BREAKER_ALERT, Budget, Change};
use super::claims::Claims;
use super::creates::{CREATE_KEY, Creates, Returned};
use super::leader::Fence;
use crate::e2b::{E2bApi, Error, NewSandbox};
use crate::engine::{Action, AlertNotice, AlertStatus, Decision, ObservedSandbox};
use crate::notify::Dispatcher;
use tokio::sync::watch;

/// What came of an action, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Carried out (a notice: queued to every notifier).
    Ok,
    /// Creates sent; each one's result is logged when it returns.
    Sent,
    /// Not carried out: dry run.
    DryRun,
    /// Not carried out: a safety rule said no (for example a sandbox this pool does not own).
    Refused,
    /// Tried, and E2B or a notifier failed.
    Failed,
}

impl ActionResult {
    /// The `result` label of `poolpilot_actions_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActionResult::Ok => "ok",
            ActionResult::Sent => "sent",
            ActionResult::DryRun => "dry_run",
            ActionResult::Refused => "refused",
            ActionResult::Failed => "failed",
        }
    }
}

/// What came of one decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) result: ActionResult,
    /// A sentence: `killed a, b`, `failed: ...`, `refused: ...`.
    pub(crate) detail: String,
    /// The sandboxes it touched.
    pub(crate) sandbox_ids: Vec<String>,
    /// One result per thing acted on (each sandbox of a kill), for counting. Creates sent
    /// are not in it: they are counted when they return.
    pub(crate) counted: Vec<ActionResult>,
    /// Creates sent, whose results are still to come.
    pub(crate) sent: u32,
}

impl Outcome {
    fn one(result: ActionResult, detail: impl Into<String>) -> Outcome {
        Outcome {
            result,
            detail: detail.into(),
            sandbox_ids: Vec::new(),
            counted: vec![result],
            sent: 0,
        }
    }
}

/// A create that returned: sent by decision `seq`, logged and counted (at the time the agent
/// takes it) by the agent.
#[derive(Debug, Clone)]
pub(crate) struct CreateReturned {
    pub(crate) seq: u64,
    pub(crate) decision: Decision,
    pub(crate) result: Result<String, Error>,
}

/// The action's kind, the `kind` label of `poolpilot_actions_total`.
pub(crate) fn kind(action: &Action) -> &'static str {
    match action {
        Action::Create { .. } => "create",
        Action::Kill { .. } => "kill",
        Action::SetTimeout { .. } => "set_timeout",
        Action::Pause { .. } => "pause",
        Action::KeepAlive { .. } => "keepalive",
        Action::Note { .. } => "note",
        Action::Alert(_) => "notify",
    }
}

/// The worst of several results: failed over refused over the rest; ok when there are none.
fn worst(counted: &[ActionResult]) -> ActionResult {
    counted
        .iter()
        .copied()
        .max_by_key(|r| match r {
            ActionResult::Failed => 2,
            ActionResult::Refused => 1,
            _ => 0,
        })
        .unwrap_or(ActionResult::Ok)
}

/// Everything carrying out needs, borrowed from the agent for one decision.
pub(crate) struct Actor<'a> {
    pub(crate) api: &'a Arc<dyn E2bApi>,
    pub(crate) creates: &'a Arc<Creates>,
    /// The team's budget and the pools' breakers, which every create passes.
    pub(crate) budget: &'a Arc<Budget>,
    pub(crate) returned: &'a mpsc::UnboundedSender<CreateReturned>,
    pub(crate) in_flight: &'a mut Vec<tokio::task::JoinHandle<()>>,
    pub(crate) observed: &'a [ObservedSandbox],
    /// Claims: a claimed member is never killed or paused, and a created one is claimable.
    pub(crate) claims: &'a Arc<Claims>,
    pub(crate) rules: &'a crate::rules::RuleSet,
    /// Where alerts go; None refuses them.
    pub(crate) dispatcher: Option<&'a Dispatcher>,
    pub(crate) now: chrono::DateTime<chrono::Utc>,
    /// Whether this replica may act, and its generation (always, 0, for a single agent).
    pub(crate) fence: &'a Fence,
    /// With a shared store: creates wait until the turn's state, naming them, is saved
    /// (write-ahead), and are not sent if it could not be.
    pub(crate) gate: Option<&'a watch::Receiver<Option<bool>>>,
}

/// The metadata key naming the leader's generation that created a sandbox (shared store).
pub(crate) const GENERATION_KEY: &str = "poolpilot_generation";

impl Actor<'_> {
    fn owned(&self, pool: &str, id: &str) -> bool {
        self.observed
            .iter()
            .any(|s| s.id == id && s.pool() == Some(pool))
    }

    /// Carries out decision number `seq`: queues an alert, or (unless in dry run) calls E2B.
    pub(crate) async fn act(&mut self, seq: u64, d: &Decision) -> Outcome {
        if self.fence.acting().is_none() {
            return Outcome::one(
                ActionResult::Refused,
                "refused: this replica no longer leads",
            );
        }
        match &d.action {
            Action::Alert(n) => self.notify(n),
            Action::Note { .. } => Outcome::one(ActionResult::Ok, "noted"),
            _ if d.dry_run => Outcome::one(ActionResult::DryRun, "dry run: not carried out"),
            Action::Create { pool, count } => self.create(seq, d, pool, *count),
            Action::Kill { pool, sandbox_ids } => self.kill(pool, sandbox_ids).await,
            Action::SetTimeout {
                pool,
                sandbox_id,
                timeout_s,
            } => {
                let call = self.api.set_timeout(sandbox_id, *timeout_s);
                self.on_owned(pool, sandbox_id, "timeout set", call).await
            }
            Action::Pause { pool, sandbox_id } => self.pause(pool, sandbox_id).await,
            Action::KeepAlive {
                pool,
                sandbox_ids,
                timeout_s,
            } => self.keep_alive(pool, sandbox_ids, *timeout_s).await,
        }
    }

    /// Pauses a member the pool owns and no claim holds; once paused, a claim may resume it.
    async fn pause(&self, pool: &str, id: &str) -> Outcome {
        let ids = [id.to_string()];
        let (free, _) = self.claims.reserve(pool, &ids);
        if free.is_empty() {
            return Outcome::one(ActionResult::Refused, format!("refused: {id} is claimed"));
        }
        let call = self.api.pause_sandbox(id);
        let out = self.on_owned(pool, id, "paused", call).await;
        if out.result == ActionResult::Ok {
            self.claims.paused(pool, id);
        } else {
            self.claims.unreserve(pool, &ids);
        }
        out
    }

    /// Sets each owned member's timeout to `timeout_s` from now; one result per member. A
    /// member that has gone meanwhile (404) is not a failure: there is nothing left to keep.
    async fn keep_alive(&self, pool: &str, ids: &[String], timeout_s: u64) -> Outcome {
        let (mut kept, mut notes, mut counted) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            if !self.owned(pool, id) {
                notes.push(format!("{id} refused: not owned by pool {pool}"));
                counted.push(ActionResult::Refused);
                continue;
            }
            match self.api.set_timeout(id, timeout_s).await {
                Ok(()) => {
                    kept.push(id.clone());
                    counted.push(ActionResult::Ok);
                }
                Err(Error::NotFound { .. }) => counted.push(ActionResult::Ok),
                Err(e) => {
                    notes.push(format!("{id} failed: {e}"));
                    counted.push(ActionResult::Failed);
                }
            }
        }
        let mut detail = Vec::new();
        if !kept.is_empty() {
            detail.push(format!("kept alive for {timeout_s}s: {}", kept.join(", ")));
        }
        detail.extend(notes);
        Outcome {
            result: worst(&counted),
            detail: detail.join("; "),
            sandbox_ids: kept,
            counted,
            sent: 0,
        }
    }

    /// Queues a notice to every notifier.
    fn notify(&self, n: &AlertNotice) -> Outcome {
        let Some(disp) = self.dispatcher else {
            return Outcome::one(ActionResult::Refused, "refused: no notifiers");
        };
        let errs = disp.send_all(n, self.now);
        if errs.is_empty() {
            return Outcome::one(ActionResult::Ok, "queued");
        }
        let why: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        Outcome::one(
            ActionResult::Refused,
            format!("refused: {}", why.join("; ")),
        )
    }

    /// Sends up to `count` creates in the background, each in the ledger before it is sent:
    /// as many as the pool's breaker and the team's cap admit; the rest are refused.
    fn create(&mut self, seq: u64, d: &Decision, pool: &str, count: u32) -> Outcome {
        let rules: &crate::rules::RuleSet = self.rules;
        let Some(def) = rules.pool(pool) else {
            return Outcome::one(ActionResult::Refused, "refused: unknown pool");
        };
        let admitted = self.budget.admit_creates(pool, count, self.now);
        announce_breakers(self.budget, self.rules, self.dispatcher, self.now);
        let refused = count - admitted.count;
        let why = admitted.refusal.map(|r| r.to_string()).unwrap_or_default();
        if admitted.count == 0 {
            return Outcome {
                counted: vec![ActionResult::Refused; refused as usize],
                ..Outcome::one(ActionResult::Refused, why)
            };
        }
        self.in_flight.retain(|h| !h.is_finished());
        let generation = self.gate.and(self.fence.acting());
        for i in 0..admitted.count {
            let key = match generation {
                Some(g) => format!("g{g}-{}", uuid::Uuid::new_v4()),
                None => uuid::Uuid::new_v4().to_string(),
            };
            if admitted.probe && i == 0 {
                // Named before it is sent: it may fail before this function goes on.
                self.budget.probing(pool, &key);
            }
            self.send_create(seq, d, pool, key, def.create_request());
        }
        let n = admitted.count;
        let mut detail = format!("sent {n} create{}", if n == 1 { "" } else { "s" });
        if refused > 0 {
            detail.push_str(&format!("; {refused} {why}"));
        }
        Outcome {
            result: ActionResult::Sent,
            detail,
            sandbox_ids: Vec::new(),
            counted: vec![ActionResult::Refused; refused as usize],
            sent: n,
        }
    }

    /// Sends one create of `pool` in the background, in the ledger first; its result goes to
    /// the ledger, the pool's breaker, the claims (a new member may be claimed at once) and
    /// the agent. `key` is its Idempotency-Key.
    fn send_create(
        &mut self,
        seq: u64,
        d: &Decision,
        pool: &str,
        key: String,
        mut req: NewSandbox,
    ) {
        let metadata = req.metadata.get_or_insert_with(Default::default);
        metadata.insert(CREATE_KEY.into(), key.clone());
        if self.gate.is_some()
            && let Some(g) = self.fence.acting()
        {
            metadata.insert(GENERATION_KEY.into(), g.to_string());
        }
        self.creates.sent(pool, &key);
        self.claims.create_sent(pool, &key);
        let (api, creates, budget, tx, claims) = (
            self.api.clone(),
            self.creates.clone(),
            self.budget.clone(),
            self.returned.clone(),
            self.claims.clone(),
        );
        // E2B's default lifetime when the create asks for none (its answer carries no end).
        let life = std::time::Duration::from_secs(req.timeout.unwrap_or(300));
        let (decision, pool) = (d.clone(), pool.to_string());
        let (fence, gate) = (self.fence.clone(), self.gate.cloned());
        self.in_flight.push(tokio::spawn(async move {
            let result = match may_send(&fence, gate).await {
                Ok(()) => api.create_sandbox(&req, &key).await,
                Err(why) => Err(crate::e2b::Error::NotSent(why)),
            };
            let how = match &result {
                Ok(s) => {
                    budget.create_succeeded(&pool, &key);
                    claims.added(&pool, &s.sandbox_id, life, &key);
                    Returned::Created(s.sandbox_id.clone())
                }
                Err(e) => {
                    budget.create_failed(&pool, &key);
                    claims.create_failed(&key);
                    Returned::from_error(e)
                }
            };
            creates.returned(&key, how);
            let _ = tx.send(CreateReturned {
                seq,
                decision,
                result: result.map(|s| s.sandbox_id),
            });
        }));
    }

    /// Kills each sandbox the pool owns and no claim holds; one result per sandbox.
    async fn kill(&mut self, pool: &str, ids: &[String]) -> Outcome {
        let (mut killed, mut notes, mut counted) = (Vec::new(), Vec::new(), Vec::new());
        let (free, held) = self.claims.reserve(pool, ids);
        for id in held {
            notes.push(format!("{id} refused: claimed"));
            counted.push(ActionResult::Refused);
        }
        for id in &free {
            if !self.owned(pool, id) {
                self.claims.unreserve(pool, std::slice::from_ref(id));
                notes.push(format!("{id} refused: not owned by pool {pool}"));
                counted.push(ActionResult::Refused);
                continue;
            }
            match self.api.kill_sandbox(id).await {
                Ok(()) | Err(Error::NotFound { .. }) => {
                    self.claims.killed(pool, id);
                    killed.push(id.clone());
                    counted.push(ActionResult::Ok);
                }
                Err(e) => {
                    self.claims.unreserve(pool, std::slice::from_ref(id));
                    notes.push(format!("{id} failed: {e}"));
                    counted.push(ActionResult::Failed);
                }
            }
        }
        let result = worst(&counted);
        let mut detail = Vec::new();
        if !killed.is_empty() {
            detail.push(format!("killed {}", killed.join(", ")));
        }
        detail.extend(notes);
        Outcome {
            result,
            detail: detail.join("; "),
            sandbox_ids: killed,
            counted,
            sent: 0,
        }
    }

    /// Runs `call` on a sandbox the pool owns, or refuses.
    async fn on_owned(
        &self,
        pool: &str,
        id: &str,
        done: &str,
        call: impl Future<Output = crate::e2b::Result<()>>,
    ) -> Outcome {
        if !self.owned(pool, id) {
            return Outcome::one(
                ActionResult::Refused,
                format!("refused: {id} not owned by pool {pool}"),
            );
        }
        match call.await {
            Ok(()) => Outcome {
                sandbox_ids: vec![id.to_string()],
                ..Outcome::one(ActionResult::Ok, format!("{done}: {id}"))
            },
            Err(e) => Outcome::one(ActionResult::Failed, format!("failed: {e}")),
        }
    }
}

/// Whether a create may be sent now: once the turn's state naming it is saved (a shared
/// store's write-ahead gate), and while this replica still leads.
async fn may_send(
    fence: &Fence,
    gate: Option<watch::Receiver<Option<bool>>>,
) -> Result<(), String> {
    if let Some(mut gate) = gate {
        match gate.wait_for(Option::is_some).await.map(|v| *v) {
            Ok(Some(true)) => {}
            _ => return Err("the state naming it could not be saved to the store".into()),
        }
    }
    match fence.acting() {
        Some(_) => Ok(()),
        None => Err("this replica no longer leads".into()),
    }
}

/// Announces the breakers that opened or closed by `now` as the [`BREAKER_ALERT`] alert
/// (critical, subject the pool) to every notifier of the rule set, and logs each change.
pub(crate) fn announce_breakers(
    budget: &Budget,
    rules: &crate::rules::RuleSet,
    dispatcher: Option<&Dispatcher>,
    now: chrono::DateTime<chrono::Utc>,
) {
    for change in budget.changes(now) {
        let n = breaker_notice(&change, rules);
        match n.status {
            AlertStatus::Firing => tracing::error!(pool = %n.subject, "{}", n.message),
            AlertStatus::Resolved => tracing::info!(pool = %n.subject, "{}", n.message),
        }
        let Some(d) = dispatcher else { continue };
        for e in d.send_all(&n, now) {
            tracing::error!(pool = %n.subject, error = %e, "breaker notice not queued");
        }
    }
}

/// The notice of one breaker change.
fn breaker_notice(change: &Change, rules: &crate::rules::RuleSet) -> AlertNotice {
    let (pool, status, since, message) = match change {
        Change::Opened {
            pool,
            failures,
            since,
            until,
        } => (
            pool,
            AlertStatus::Firing,
            *since,
            format!(
                "pool {pool}: {failures} creates failed in a row; its creates stop until {} (then one probe)",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
        Change::Closed { pool, since } => (
            pool,
            AlertStatus::Resolved,
            *since,
            format!("pool {pool}: a create succeeded; its creates resume"),
        ),
    };
    AlertNotice {
        alert: BREAKER_ALERT.to_string(),
        subject: pool.clone(),
        status,
        repeat: false,
        severity: "critical".to_string(),
        labels: [("pool".to_string(), pool.clone())].into(),
        message,
        notify: rules.notifiers.iter().map(|n| n.name.clone()).collect(),
        started_at: since,
    }
}
