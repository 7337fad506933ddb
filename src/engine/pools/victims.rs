//! The resize step: the action that takes a pool from its size to the settled target. Growing
//! is a create; shrinking kills victims chosen by the pool's policy (`idle_first`, `oldest`,
//! `newest`) among members that may go: older than `min_age` and not protected. When fewer may
//! go than wanted, the shortfall is recorded as a clamp and the pool shrinks by what it can.

use chrono::{DateTime, Utc};

use super::Account;
use crate::engine::prepare::{Prepared, bind_sandbox};
use crate::engine::{Action, ClampKind, time};
use crate::expr::Bindings;
use crate::rules::scopes::SANDBOX;
use crate::rules::{Pool, Victims};

/// The settled size after victim choice, and the action that gets there (none when the pool
/// stays as it is).
pub(super) fn resize(
    pool: &Pool,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    cpu: &[(usize, Option<f64>)],
    mut to: u32,
    acc: &mut Account,
) -> (u32, Option<Action>) {
    let size = acc.size;
    if to > size {
        let create = Action::Create {
            pool: pool.name.clone(),
            count: to - size,
        };
        return (to, Some(create));
    }
    if to == size {
        return (to, None);
    }
    let wanted = size - to;
    let victims = pick_victims(pool, now, prepared, cpu, wanted as usize);
    let got_n = u32::try_from(victims.len()).unwrap_or(u32::MAX);
    if got_n < wanted {
        let got = size - got_n;
        let note = format!(
            "only {got_n} of {wanted} members may be removed (pending creates, protected, or younger than min_age {})",
            humantime::format_duration(pool.min_age)
        );
        acc.clamp(ClampKind::Victims, to, got, None, note);
        to = got;
    }
    if victims.is_empty() {
        return (to, None);
    }
    let kill = Action::Kill {
        pool: pool.name.clone(),
        sandbox_ids: victims,
    };
    (to, Some(kill))
}

/// Up to `n` members that may go, in the order the pool's victim policy prefers. A member
/// younger than `min_age`, or one its `protect` rule holds for (or cannot be evaluated for),
/// is never chosen.
fn pick_victims(
    pool: &Pool,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    cpu: &[(usize, Option<f64>)],
    n: usize,
) -> Vec<String> {
    let mut sb = Bindings::new(&SANDBOX);
    let mut eligible: Vec<(usize, Option<f64>)> = cpu
        .iter()
        .copied()
        .filter(|(i, _)| {
            let s = &prepared.sandboxes[*i];
            if now < time::after(s.obs.started_at, pool.min_age) {
                return false;
            }
            match &pool.protect {
                Some(p) => {
                    bind_sandbox(&mut sb, s, now, pool.stale_after);
                    // A protect rule that cannot be evaluated (no data) protects.
                    !p.eval_bool(&sb).unwrap_or(true)
                }
                None => true,
            }
        })
        .collect();
    let started = |i: usize| prepared.sandboxes[i].obs.started_at;
    match pool.victims {
        Victims::IdleFirst => eligible.sort_by(|a, b| {
            let ka = a.1.unwrap_or(f64::INFINITY);
            let kb = b.1.unwrap_or(f64::INFINITY);
            ka.total_cmp(&kb).then(started(a.0).cmp(&started(b.0)))
        }),
        Victims::Oldest => eligible.sort_by_key(|(i, _)| started(*i)),
        Victims::Newest => eligible.sort_by_key(|(i, _)| std::cmp::Reverse(started(*i))),
    }
    eligible
        .into_iter()
        .take(n)
        .map(|(i, _)| prepared.sandboxes[i].obs.id.clone())
        .collect()
}
