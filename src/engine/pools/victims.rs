//! The resize step: the actions that take a pool from its size to the settled target.
//!
//! - Growing is a create, within `max` counting every member (retiring ones too).
//! - Shrinking kills victims chosen by the pool's policy (`idle_first`, `oldest`, `newest`)
//!   among members that may go: older than `min_age`, not protected, not claimed and not
//!   retiring. When fewer may go than wanted, the shortfall is recorded as a clamp and the pool
//!   shrinks by what it can.
//! - Rolling: retiring members (see `lifetime`) do not count toward the size the target is
//!   compared with, so their replacements are created first; they are killed once the running
//!   members without them reach the target. At `max` with no room and nothing in flight, one
//!   retiring member is killed and its replacement created in the same evaluation, kill first
//!   (a dip of one member for as long as the create takes).
//!
//! A claimed member is never a victim, whatever the shrink.

use chrono::{DateTime, Utc};

use super::Account;
use crate::engine::prepare::{Prepared, bind_sandbox};
use crate::engine::{ClampKind, PoolClaims, time};
use crate::expr::Bindings;
use crate::rules::scopes::SANDBOX;
use crate::rules::{Pool, Victims};

/// What resize knows about the pool's members at this evaluation.
pub(super) struct Fleet<'p, 'a> {
    pub prepared: &'p Prepared<'a>,
    /// (sandbox index, CPU when fresh) of each running member.
    pub cpu: &'p [(usize, Option<f64>)],
    pub claims: Option<&'p PoolClaims>,
    /// Retiring members, oldest first.
    pub retiring: &'p [usize],
    pub running: u32,
    /// Running members and creates in flight, retiring members included.
    pub size: u32,
    /// The effective `max` at this evaluation.
    pub max: u32,
}

/// What resize settled on.
#[derive(Default)]
pub(super) struct Plan {
    /// The size after victim choice (retiring members not counted).
    pub to: u32,
    pub create: u32,
    /// Victims of a shrink, in the policy's order (the warm tier may pause some instead).
    pub victims: Vec<String>,
    /// Retiring members killed now, and paused members beyond the warm tier's cap.
    pub retired: Vec<String>,
    pub pause: Vec<String>,
}

/// The plan that takes the pool from its size to `to`: creates, victims, retiring kills.
pub(super) fn resize(
    pool: &Pool,
    now: DateTime<Utc>,
    fleet: &Fleet<'_, '_>,
    mut to: u32,
    acc: &mut Account,
) -> Plan {
    let size = fleet.size;
    let rolling = u32::try_from(fleet.retiring.len()).unwrap_or(u32::MAX);
    let kept = size.saturating_sub(rolling);
    let mut plan = Plan::default();
    if to > kept {
        plan.create = (to - kept).min(fleet.max.saturating_sub(size));
    }
    let wanted = kept.saturating_sub(to);
    if wanted > 0 {
        plan.victims = pick_victims(pool, now, fleet, wanted as usize);
        let got_n = u32::try_from(plan.victims.len()).unwrap_or(u32::MAX);
        if got_n < wanted {
            let got = kept - got_n;
            let note = format!(
                "only {got_n} of {wanted} members may be removed (pending creates, claimed, protected, or younger than min_age {})",
                humantime::format_duration(pool.min_age)
            );
            acc.clamp(ClampKind::Victims, to, got, None, note);
            to = got;
        }
    }
    plan.to = to;
    roll(pool, fleet, size, kept, &mut plan, acc);
    plan
}

/// Kills the retiring members the pool can spare: as many as leave the running members at the
/// target or above. At `max` with no room and nothing in flight, one is killed first.
fn roll(
    pool: &Pool,
    fleet: &Fleet<'_, '_>,
    size: u32,
    kept: u32,
    plan: &mut Plan,
    acc: &mut Account,
) {
    if fleet.retiring.is_empty() {
        return;
    }
    let victims = u32::try_from(plan.victims.len()).unwrap_or(u32::MAX);
    let spare = fleet
        .running
        .saturating_sub(victims)
        .saturating_sub(plan.to);
    let mut kill = (spare as usize).min(fleet.retiring.len());
    let no_room = plan.to > kept && plan.create == 0 && size == fleet.running;
    let dip = kill == 0 && no_room;
    if dip {
        // Kill-then-create: the kill makes the room its replacement is created in.
        kill = 1;
        plan.create = 1;
    }
    plan.retired.extend(
        fleet.retiring[..kill]
            .iter()
            .map(|&i| fleet.prepared.sandboxes[i].obs.id.clone()),
    );
    let max_age = pool.max_age.map(humantime::format_duration);
    let mut why = format!(
        "rolled: {} older than max_age {}",
        members(fleet.retiring.len()),
        max_age.map(|d| d.to_string()).unwrap_or_default()
    );
    if dip {
        why.push_str(&format!(
            ", at max {} with no room: 1 killed, then its replacement created",
            fleet.max
        ));
    } else {
        why.push_str(&format!(
            ", {} created first, {kill} killed",
            plan.create
                .min(u32::try_from(fleet.retiring.len()).unwrap_or(u32::MAX))
        ));
    }
    acc.reasons.push(why);
}

/// "1 member", "3 members".
pub(super) fn members(n: usize) -> String {
    if n == 1 {
        "1 member".to_string()
    } else {
        format!("{n} members")
    }
}

/// Up to `n` members that may go, in the order the pool's victim policy prefers. A member
/// younger than `min_age`, claimed, retiring (killed on its own terms), or one its `protect`
/// rule holds for (or cannot be evaluated for), is never chosen.
fn pick_victims(pool: &Pool, now: DateTime<Utc>, fleet: &Fleet<'_, '_>, n: usize) -> Vec<String> {
    let prepared = fleet.prepared;
    let mut sb = Bindings::new(&SANDBOX);
    let mut eligible: Vec<(usize, Option<f64>)> = fleet
        .cpu
        .iter()
        .copied()
        .filter(|(i, _)| {
            let s = &prepared.sandboxes[*i];
            if now < time::after(s.obs.started_at, pool.min_age)
                || prepared.is_claimed(fleet.claims, *i)
                || fleet.retiring.contains(i)
            {
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
