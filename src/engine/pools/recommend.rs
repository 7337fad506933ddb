//! The recommend step: the raw size that target tracking and step rules ask for, before any
//! limit. Up beats none beats down; within a direction the larger change wins. Missing or stale
//! metrics never read as 0: under `hold` they stop metric-driven changes, under `up_only` they
//! stop scale-down; a rule with no finite value holds. The idle band (`idle: {min, max}`) is a
//! source beside them that counts claims, exact data, so it does not hold.
//!
//! Target tracking knows saturation: when the target's `saturated_when` holds, the members run
//! at their ceiling and `size * metric / target` understates a demand it cannot see. The target
//! then recommends what the up policies allow for the period (without up policies, double the
//! size), never less than the proportional count and never a scale-in.

use super::Account;
use super::rate::Allowances;
use crate::engine::prepare::ClaimView;
use crate::engine::{Cause, ClampKind};
use crate::expr::{Bindings, EvalError, Expr, format_number};
use crate::rules::{OnMissing, Pool, Step, Target};

/// The raw recommendation from target tracking, step rules and the idle band: up beats none
/// beats down, within a direction the larger change wins. Missing data, or a rule with no
/// finite value, holds the metric-driven rules (or, under `up_only` with some members
/// reporting, blocks their scale-down); the idle band counts claims, exact data, and never
/// holds.
pub(super) fn recommend(
    pool: &Pool,
    pb: &Bindings<'_>,
    missing: usize,
    running: u32,
    allow: &Allowances,
    claims: &ClaimView,
    acc: &mut Account,
) -> u32 {
    let mut recs = metric_recommendations(pool, pb, missing, running, allow, acc);
    if let Some(rec) = idle_recommendation(pool, claims, acc) {
        recs.push(rec);
    }
    strongest(&recs, acc.size)
}

/// What the target and step rules recommend; none at all while they hold.
fn metric_recommendations(
    pool: &Pool,
    pb: &Bindings<'_>,
    missing: usize,
    running: u32,
    allow: &Allowances,
    acc: &mut Account,
) -> Vec<u32> {
    let metric_rules = pool.target.is_some() || !pool.steps.is_empty();
    if pool.idle.is_some() && !metric_rules {
        return Vec::new();
    }
    if missing > 0 && pool.on_missing == OnMissing::Hold {
        hold_for_missing(pool, missing, running, acc);
        return Vec::new();
    }
    let mut recs = match rule_recommendations(pool, pb, allow, acc) {
        Ok(recs) => recs,
        Err((field, why)) => {
            hold_on(acc, &field, &why);
            return Vec::new();
        }
    };
    if missing > 0 {
        block_scale_down(&mut recs, missing, acc);
    }
    recs
}

/// `idle: {min, max, lead}`: claimed members plus the idle count kept within the band; no
/// change while it is inside. Creates in flight count as idle (they will be). With `lead`,
/// the band's floor is at least the claims expected within it (Little's law: the claim rate
/// times how long a new member takes to come), up to `max`, so a buffer sized for a quiet
/// hour grows with the rate instead of running dry.
fn idle_recommendation(pool: &Pool, claims: &ClaimView, acc: &mut Account) -> Option<u32> {
    let band = pool.idle?;
    let (size, claimed, waiting) = (acc.size, claims.claimed, claims.waiting);
    let idle = size.saturating_sub(claimed);
    let floor = lead_floor(band, claims.claim_rate);
    // Waiting claims take idle members (or creates in flight) first; what is left is kept in
    // the band, so a band of 0 still grows for a claim that waits.
    let spare = idle.saturating_sub(waiting);
    let rec = claimed
        .saturating_add(waiting)
        .saturating_add(spare.clamp(floor, band.max));
    acc.cause
        .values
        .insert("claimed".into(), f64::from(claimed));
    acc.cause.values.insert("idle".into(), f64::from(idle));
    if waiting > 0 {
        acc.cause
            .values
            .insert("waiting".into(), f64::from(waiting));
    }
    let expected = match band.lead {
        Some(lead) if floor > band.min => format!(
            " (min raised to {floor}: {} claims/s over a lead of {})",
            format_number(claims.claim_rate),
            humantime::format_duration(lead)
        ),
        _ => String::new(),
    };
    let waits = if waiting > 0 {
        format!(" and {waiting} claims waiting")
    } else {
        String::new()
    };
    acc.reasons.push(format!(
        "idle {idle} beside {claimed} claimed{waits} vs idle band {}..{}{expected}, {}",
        band.min,
        band.max,
        signed(rec, size)
    ));
    Some(rec)
}

/// The band's floor: `min`, or with a `lead` the claims expected within it if more, never
/// above `max`. A rate that is not finite reads as none.
fn lead_floor(band: crate::rules::IdleBand, claim_rate: f64) -> u32 {
    let Some(lead) = band.lead else {
        return band.min;
    };
    let rate = if claim_rate.is_finite() {
        claim_rate.max(0.0)
    } else {
        0.0
    };
    let expected = (rate * lead.as_secs_f64()).ceil().min(f64::from(u32::MAX)) as u32;
    expected.max(band.min).min(band.max)
}

/// `on_missing: hold`: some member has no fresh sample, so no metric-driven change.
fn hold_for_missing(pool: &Pool, missing: usize, running: u32, acc: &mut Account) {
    let note = format!(
        "{missing} of {running} members have no sample newer than {}; holding",
        humantime::format_duration(pool.stale_after)
    );
    hold(acc, note);
}

/// No metric-driven change at this evaluation: the size stays, and the clamp says why.
fn hold(acc: &mut Account, note: String) {
    let size = acc.size;
    acc.hold = true;
    acc.clamp(ClampKind::MissingData, size, size, None, note);
}

/// What the target and each step rule that fires recommend, with their reasons in the account;
/// or the field of the first rule that has no value.
fn rule_recommendations(
    pool: &Pool,
    pb: &Bindings<'_>,
    allow: &Allowances,
    acc: &mut Account,
) -> Result<Vec<u32>, (String, EvalError)> {
    let size = acc.size;
    let mut recs: Vec<u32> = Vec::new();
    if let Some(t) = &pool.target {
        let (rec, reason) = target_recommendation(t, pb, size)
            .map_err(|why| ("scale.target.metric".to_string(), why))?;
        let saturated = t
            .saturated_when
            .eval_bool(pb)
            .map_err(|why| ("scale.target.saturated_when".to_string(), why))?;
        note_values(&t.metric, pb, &mut acc.cause);
        let (rec, reason) = if saturated {
            note_values(&t.saturated_when, pb, &mut acc.cause);
            acc.cause.values.insert("saturated".into(), 1.0);
            saturated_recommendation(t, allow, (rec, reason), size)
        } else {
            (rec, reason)
        };
        acc.reasons.push(reason);
        recs.push(rec);
    }
    for (i, step) in pool.steps.iter().enumerate() {
        let fired = step
            .when
            .eval_bool(pb)
            .map_err(|why| (format!("scale.steps[{i}].when"), why))?;
        if fired {
            recs.push(step_recommendation(step, pb, acc));
        }
    }
    Ok(recs)
}

/// A step rule whose `when` holds: its change applied to the size, and why.
fn step_recommendation(step: &Step, pb: &Bindings<'_>, acc: &mut Account) -> u32 {
    let size = acc.size;
    note_values(&step.when, pb, &mut acc.cause);
    let rec = u32::try_from((i64::from(size) + step.change).max(0)).unwrap_or(u32::MAX);
    let shown: Vec<String> = step
        .when
        .variables()
        .filter_map(|v| pb.num(v).map(|x| format!("{v} {}", format_number(x))))
        .collect();
    acc.reasons.push(format!(
        "{} ({}), {}",
        step.when,
        shown.join(", "),
        signed(rec, size)
    ));
    rec
}

/// `on_missing: up_only` with some members missing: never shrink on partial data.
fn block_scale_down(recs: &mut Vec<u32>, missing: usize, acc: &mut Account) {
    let size = acc.size;
    if recs.iter().any(|r| *r < size) {
        let lowest = recs.iter().copied().min().unwrap_or(size);
        acc.clamp(
            ClampKind::MissingData,
            lowest,
            size,
            None,
            format!("{missing} members have no fresh sample; scale-down blocked"),
        );
    }
    recs.retain(|r| *r >= size);
}

/// Up beats none beats down; within a direction the larger change wins. No rule: the size.
fn strongest(recs: &[u32], size: u32) -> u32 {
    if let Some(up) = recs.iter().copied().filter(|r| *r > size).max() {
        up
    } else if recs.contains(&size) || recs.is_empty() {
        size
    } else {
        recs.iter().copied().min().unwrap_or(size)
    }
}

/// A rule without a finite value: no metric-driven change, and the cause says why.
fn hold_on(acc: &mut Account, field: &str, why: &EvalError) {
    acc.reasons.clear();
    let note = format!(
        "{field} {:?} has no value ({}); holding",
        why.text, why.reason
    );
    hold(acc, note);
}

/// HPA's `ceil(size * value / target)` outside the tolerance band, or an error when the
/// metric (or the ratio) is not a finite number.
fn target_recommendation(
    t: &Target,
    pb: &Bindings<'_>,
    size: u32,
) -> Result<(u32, String), EvalError> {
    let v = t.metric.eval_f64(pb)?;
    let ratio = v / t.value;
    let scaled = (size as f64 * ratio).ceil();
    if !ratio.is_finite() || !scaled.is_finite() {
        return Err(EvalError {
            text: t.metric.text().to_string(),
            reason: format!(
                "{} / {} is not a finite ratio",
                format_number(v),
                format_number(t.value)
            ),
            non_finite: Some(scaled),
        });
    }
    let rec = if (1.0 - ratio).abs() <= t.tolerance || size == 0 {
        size
    } else {
        // Saturating float-to-int: negative reads as 0, beyond u32 as u32::MAX.
        scaled.max(0.0).min(u32::MAX as f64) as u32
    };
    let reason = format!(
        "{} {} vs target {} (ratio {}), {}",
        t.metric,
        format_number(v),
        format_number(t.value),
        format_number(ratio),
        signed(rec, size)
    );
    Ok((rec, reason))
}

/// A saturated reading: grow by what the up policies allow this period, or double without
/// them; never less than the proportional count, never below the size.
fn saturated_recommendation(
    t: &Target,
    allow: &Allowances,
    (proportional, reason): (u32, String),
    size: u32,
) -> (u32, String) {
    let (grown, by) = match &allow.up {
        Some(a) => (a.limit, "the up policies' limit for the period"),
        None => (size.saturating_mul(2).max(1), "doubling (no up policies)"),
    };
    let rec = grown.max(proportional).max(size);
    let reason = format!(
        "{reason}; saturated ({}): demand unknown, growing by {by}, {}",
        t.saturated_when,
        signed(rec, size)
    );
    (rec, reason)
}

fn note_values(e: &Expr, pb: &Bindings<'_>, cause: &mut Cause) {
    for v in e.variables() {
        if let Some(x) = pb.num(v) {
            cause.values.insert(v.to_string(), x);
        }
    }
}

fn signed(rec: u32, size: u32) -> String {
    match rec.cmp(&size) {
        std::cmp::Ordering::Greater => format!("+{}", rec - size),
        std::cmp::Ordering::Less => format!("-{}", size - rec),
        std::cmp::Ordering::Equal => "hold".to_string(),
    }
}
