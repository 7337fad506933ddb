//! Pool evaluation, as a chain of named steps a reader can follow from [`run`]:
//!
//! ```text
//!  due? -> members -> allowances -> recommend -> predict -> stabilize -> limit step -> limit rate
//!       -> cool down -> bounds -> resize (victims) -> start cooldown -> remember size -> record
//! ```
//!
//! Each step takes the size the previous one settled on and records in the [`Account`] every
//! limit it applied (a [`Clamp`]), so the cause of a decision lists them in the order they
//! applied. Min and max come last and always hold. The rate policies' allowances are worked
//! out before the recommendation, because a saturated target reading grows by them. This module never observes anything itself:
//! it reads the step's [`Prepared`] sandboxes and the pool's [`PoolState`].

mod bounds;
mod members;
mod predict;
mod rate;
mod recommend;
mod record;
mod stabilize;
mod victims;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::prepare::{self, PoolTexts, PoolView, Prepared};
use super::{Cause, Clamp, ClampKind, Decision, PoolState, time};
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

/// Evaluates one pool if it is due: recommendation, clamps, victims, and its status.
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
    let bounds = prepare::bounds(pool, now);
    let view = PoolView {
        running: u32::try_from(member_ids.len()).unwrap_or(u32::MAX),
        pending_creates: pending.get(&pool.name).copied().unwrap_or(0),
        bounds: &bounds,
        busy: members.busy,
        agg: &members.agg,
    };
    let texts = PoolTexts::of(pool);
    let mut pb = Bindings::new(&POOL);
    view.bind(&mut pb, &texts);

    let mut acc = Account::new(view.size());
    let allow = rate::allowances(pool, st, now, acc.size);
    let raw = recommend::recommend(pool, &pb, members.missing, view.running, &allow, &mut acc);
    let raw = predict::predict(pool, st, now, &pb, view.running, raw, &mut acc);
    acc.cause.raw = Some(raw);
    let to = stabilize::stabilize(pool, st, now, first_eval, raw, &mut acc);
    let to = bounds::limit_step(pool, to, &mut acc);
    let to = rate::limit_rate(&allow, to, &mut acc);
    let to = stabilize::cool_down(st, now, to, &mut acc);
    let to = bounds::enforce_bounds(&bounds, to, &mut acc);
    let (to, action) = victims::resize(pool, now, prepared, &members.cpu, to, &mut acc);
    stabilize::start_cooldown(pool, st, now, raw, acc.size, action.as_ref());
    rate::remember_size(pool, st, now, acc.size, to);
    let verdict = record::Verdict { raw, to, action };
    let busy_ratio = view.busy_ratio();
    out.extend(record::record(
        pool, st, now, &bounds, busy_ratio, verdict, acc,
    ));
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
