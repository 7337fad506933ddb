//! Pool evaluation, as a chain of named steps a reader can follow from [`run`]:
//!
//! ```text
//!  due? -> members -> lifetime (retiring) -> allowances -> recommend (rules, idle band)
//!       -> predict -> stabilize -> limit step -> limit rate -> cool down -> bounds
//!       -> warm (park the lasting idle excess) -> resize (creates, victims, rolling)
//!       -> warm split (pause instead of kill) -> start cooldown -> remember size
//!       -> keep-alive -> record
//! ```
//!
//! Each step takes the size the previous one settled on and records in the [`Account`] every
//! limit it applied (a [`Clamp`]), so the cause of a decision lists them in the order they
//! applied. Min and max come last and always hold. The rate policies' allowances are worked
//! out before the recommendation, because a saturated target reading grows by them. This module never observes anything itself:
//! it reads the step's [`Prepared`] sandboxes and the pool's [`PoolState`].

mod bounds;
mod keepalive;
mod lifetime;
mod members;
mod predict;
mod rate;
mod recommend;
mod record;
mod stabilize;
mod victims;
mod warm;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::prepare::{self, PoolTexts, PoolView, Prepared};
use super::{Action, Cause, Clamp, ClampKind, Decision, PoolState, time};
use crate::expr::Bindings;
use crate::rules::Pool;
use crate::rules::scopes::POOL;

/// The running account of one evaluation: the clamps applied and the reasons given.
struct Account {
    size: u32,
    clamps: Vec<Clamp>,
    reasons: Vec<String>,
    cause: Cause,
    /// Metric-driven changes are off for this evaluation (missing or non-finite data).
    hold: bool,
}

impl Account {
    fn new(size: u32) -> Self {
        Account {
            size,
            clamps: Vec::new(),
            reasons: Vec::new(),
            cause: Cause {
                current: Some(size),
                ..Cause::default()
            },
            hold: false,
        }
    }

    fn clamp(
        &mut self,
        kind: ClampKind,
        from: u32,
        to: u32,
        until: Option<DateTime<Utc>>,
        note: String,
    ) {
        self.clamps.push(Clamp {
            kind,
            from,
            to,
            until,
            note,
        });
    }
}

/// Evaluates one pool if it is due: recommendation, clamps, victims, keep-alive, and its
/// status.
pub(super) fn run(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    pending: &BTreeMap<String, u32>,
    out: &mut Vec<Decision>,
) {
    if !due(pool, st, now) {
        return;
    }
    st.last_eval = Some(on_schedule(pool, st.last_eval, now));
    let first_eval = *st.first_eval.get_or_insert(now);
    let member_ids = prepared.members(&pool.name);
    let members = members::observe(pool, prepared, member_ids, now);
    let claims = prepared.claims(&pool.name);
    let retiring = lifetime::retiring(pool, prepared, member_ids, claims, now);
    let bounds = prepare::bounds(pool, now);
    let view = PoolView {
        running: u32::try_from(member_ids.len()).unwrap_or(u32::MAX),
        pending_creates: pending.get(&pool.name).copied().unwrap_or(0),
        bounds: &bounds,
        busy: members.busy,
        agg: &members.agg,
        claims: prepared.claim_view(&pool.name),
    };
    let texts = PoolTexts::of(pool);
    let mut pb = Bindings::new(&POOL);
    view.bind(&mut pb, &texts);

    let replaced = lifetime::replaced(st, prepared, &retiring);
    let mut acc = Account::new(view.size().saturating_sub(replaced));
    let (raw, to) = settle(pool, st, now, first_eval, &pb, &view, &members, &mut acc);
    let rolling = u32::try_from(retiring.len()).unwrap_or(u32::MAX);
    let idle = warm::Idle {
        parkable: view.claims.idle.saturating_sub(rolling),
        kept: view.size().saturating_sub(rolling),
        min: bounds.min,
    };
    let to = warm::park_excess(pool, st, now, &idle, to, &mut acc);
    let fleet = victims::Fleet {
        prepared,
        cpu: &members.cpu,
        claims,
        retiring: &retiring,
        running: view.running,
        size: view.size(),
        max: bounds.max,
    };
    let mut plan = victims::resize(pool, now, &fleet, to, &mut acc);
    lifetime::remember_replacements(st, prepared, &retiring, &plan);
    warm::split(pool, prepared, &mut plan, &mut acc);
    stabilize::start_cooldown(pool, st, now, raw, acc.size, plan.to);
    rate::remember_size(pool, st, now, acc.size, plan.to);
    keepalive::keep_alive(pool, prepared, member_ids, claims, &plan, now, out);
    let verdict = record::Verdict {
        raw,
        to: plan.to,
        actions: actions(pool, plan),
    };
    let busy_ratio = view.busy_ratio();
    record::record(pool, st, now, &bounds, busy_ratio, verdict, acc, out);
}

/// The recommendation and the limits on it, in order: the raw recommendation and the size the
/// limits settled on (min and max included).
#[allow(clippy::too_many_arguments)] // the chain's inputs, each named; a struct would only rename them
fn settle(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    first_eval: DateTime<Utc>,
    pb: &Bindings<'_>,
    view: &PoolView<'_>,
    members: &members::Members,
    acc: &mut Account,
) -> (u32, u32) {
    let allow = rate::allowances(pool, st, now, acc.size);
    let claimed = view.claims.claimed;
    let raw = recommend::recommend(
        pool,
        pb,
        members.missing,
        view.running,
        &allow,
        claimed,
        acc,
    );
    let raw = predict::predict(pool, st, now, pb, view.running, raw, acc);
    acc.cause.raw = Some(raw);
    let to = stabilize::stabilize(pool, st, now, first_eval, raw, acc);
    let to = bounds::limit_step(pool, to, acc);
    let to = rate::limit_rate(&allow, to, acc);
    let to = stabilize::cool_down(st, now, to, acc);
    (raw, bounds::enforce_bounds(view.bounds, to, acc))
}

/// The plan as actions: one kill (victims and retiring members together) before one create
/// (a kill at `max` makes the create's room), and a pause per parked member.
fn actions(pool: &Pool, plan: victims::Plan) -> Vec<Action> {
    let victims::Plan {
        create,
        mut victims,
        retired,
        pause,
        ..
    } = plan;
    let mut out = Vec::new();
    victims.extend(retired);
    if !victims.is_empty() {
        out.push(Action::Kill {
            pool: pool.name.clone(),
            sandbox_ids: victims,
        });
    }
    if create > 0 {
        out.push(Action::Create {
            pool: pool.name.clone(),
            count: create,
        });
    }
    out.extend(pause.into_iter().map(|sandbox_id| Action::Pause {
        pool: pool.name.clone(),
        sandbox_id,
    }));
    out
}

/// Whether a whole `interval` has passed since the pool's last scheduled evaluation, give or
/// take [`due_slack`]: a live agent's ticks land a few milliseconds either side of their
/// schedule, and a tick a hair early must not put the evaluation off by a whole poll.
fn due(pool: &Pool, st: &PoolState, now: DateTime<Utc>) -> bool {
    st.last_eval.is_none_or(|t| {
        let due_at = time::after(t, pool.interval);
        now >= time::before(due_at, due_slack(pool.interval))
    })
}

/// When this evaluation was due: evaluations stay on a grid of `interval` from the first, so a
/// late tick delays one evaluation, never the ones after it (a live agent's evaluations would
/// otherwise drift a poll later each time a tick lands early). After a gap of more than one
/// interval (a restart, an outage), the grid starts again now.
fn on_schedule(pool: &Pool, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match last {
        Some(t) => {
            let due_at = time::after(t, pool.interval);
            if now < time::after(due_at, pool.interval) {
                due_at
            } else {
                now
            }
        }
        None => now,
    }
}

/// How early an evaluation may come: a tenth of the interval, at most 50 ms, half the
/// shortest poll the agent allows, so an evaluation never comes a whole tick early.
fn due_slack(interval: std::time::Duration) -> std::time::Duration {
    (interval / 10).min(std::time::Duration::from_millis(50))
}
