//! Pool evaluation: recommendation, clamps, victims. Also the per-step preparation of
//! sandboxes shared by pools and alerts (text values converted once per sandbox, not per rule).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{
    Action, Cause, Clamp, ClampKind, Decision, ObservedSandbox, PoolState, PoolStatus, time,
};
use crate::e2b::SandboxState;
use crate::expr::{Bindings, EvalError, Meta, Text, format_number};
use crate::rules::scopes::{AGGREGATED, POOL, SANDBOX, pool as ps, sandbox as ss};
use crate::rules::{OnMissing, Pool, Target, Victims};

pub(super) struct PreparedSandbox<'a> {
    pub obs: &'a ObservedSandbox,
    pub template: Text,
    pub id: Text,
    pub pool: Text,
    pub meta: Meta,
}

pub(super) struct Prepared<'a> {
    pub sandboxes: Vec<PreparedSandbox<'a>>,
    /// Indexes of running sandboxes by owning pool.
    pub by_pool: BTreeMap<&'a str, Vec<usize>>,
}

/// Which per-sandbox text values some sandbox-scope rule reads; the others are not converted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Needs {
    pub id: bool,
    pub template: bool,
    pub pool: bool,
    pub meta: bool,
}

impl Needs {
    pub fn of(rules: &crate::rules::RuleSet) -> Needs {
        let mut names: Vec<String> = Vec::new();
        for p in &rules.pools {
            names.extend(p.busy.variables().map(str::to_string));
            if let Some(e) = &p.protect {
                names.extend(e.variables().map(str::to_string));
            }
        }
        for a in rules
            .alerts
            .iter()
            .filter(|a| a.scope == crate::rules::AlertScope::Sandbox)
        {
            names.extend(a.when.variables().map(str::to_string));
            names.extend(a.message.placeholders());
        }
        let has = |n: &str| names.iter().any(|x| x == n);
        Needs {
            id: has("sandbox_id"),
            template: has("template"),
            pool: has("pool"),
            meta: names.iter().any(|x| x.starts_with("metadata.")),
        }
    }
}

pub(super) fn prepare<'a>(sandboxes: &'a [ObservedSandbox], needs: Needs) -> Prepared<'a> {
    let text = |want: bool, s: &str| if want { Text::new(s) } else { Text::new("") };
    let mut by_pool: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let sandboxes: Vec<PreparedSandbox> = sandboxes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.state == SandboxState::Running
                && let Some(p) = s.pool()
            {
                by_pool.entry(p).or_default().push(i);
            }
            PreparedSandbox {
                obs: s,
                template: text(needs.template, &s.template),
                id: text(needs.id, &s.id),
                pool: text(needs.pool, s.pool().unwrap_or("")),
                meta: if needs.meta {
                    Meta::new(&s.metadata)
                } else {
                    Meta::default()
                },
            }
        })
        .collect();
    Prepared { sandboxes, by_pool }
}

const METRIC_SLOTS: [usize; 8] = [
    ss::CPU_USED_PCT,
    ss::CPU_COUNT,
    ss::MEM_USED,
    ss::MEM_TOTAL,
    ss::MEM_USED_PCT,
    ss::DISK_USED,
    ss::DISK_TOTAL,
    ss::DISK_USED_PCT,
];

/// Fills sandbox bindings; returns false (and leaves metric slots unset) when the sandbox has
/// no sample newer than `stale_after`.
pub(super) fn bind_sandbox<'b>(
    b: &mut Bindings<'b>,
    s: &'b PreparedSandbox<'_>,
    now: DateTime<Utc>,
    stale_after: std::time::Duration,
) -> bool {
    b.set_num(
        ss::AGE_S,
        time::seconds_between(s.obs.started_at, now).max(0.0),
    );
    b.set_num(
        ss::TIME_LEFT_S,
        time::seconds_between(now, s.obs.end_at).max(0.0),
    );
    b.set_text(ss::TEMPLATE, &s.template);
    b.set_text(ss::SANDBOX_ID, &s.id);
    b.set_text(ss::POOL, &s.pool);
    b.set_meta(&s.meta);
    let fresh = s
        .obs
        .metric
        .as_ref()
        .filter(|m| m.timestamp >= time::before(now, stale_after));
    let Some(m) = fresh else {
        // Bindings are reused across sandboxes: never leave another sandbox's metrics behind.
        for slot in METRIC_SLOTS {
            b.unset(slot);
        }
        return false;
    };
    let pct = |used: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64 * 100.0
        }
    };
    b.set_num(ss::CPU_USED_PCT, m.cpu_used_pct);
    b.set_num(ss::CPU_COUNT, m.cpu_count as f64);
    b.set_num(ss::MEM_USED, m.mem_used as f64);
    b.set_num(ss::MEM_TOTAL, m.mem_total as f64);
    b.set_num(ss::MEM_USED_PCT, pct(m.mem_used, m.mem_total));
    b.set_num(ss::DISK_USED, m.disk_used as f64);
    b.set_num(ss::DISK_TOTAL, m.disk_total as f64);
    b.set_num(ss::DISK_USED_PCT, pct(m.disk_used, m.disk_total));
    true
}

/// Running sums of the aggregated sandbox metrics.
pub(super) struct Agg {
    pub n: usize,
    sum: [f64; 6],
    min: [f64; 6],
    max: [f64; 6],
}

impl Agg {
    pub fn new() -> Self {
        Agg {
            n: 0,
            sum: [0.0; 6],
            min: [f64::INFINITY; 6],
            max: [f64::NEG_INFINITY; 6],
        }
    }

    pub fn add(&mut self, b: &Bindings<'_>) {
        const SLOTS: [usize; 6] = [
            ss::CPU_USED_PCT,
            ss::MEM_USED,
            ss::MEM_USED_PCT,
            ss::DISK_USED,
            ss::DISK_USED_PCT,
            ss::AGE_S,
        ];
        self.n += 1;
        for (i, slot) in SLOTS.iter().enumerate() {
            let v = b.num_at(*slot).unwrap_or(0.0);
            self.sum[i] += v;
            self.min[i] = self.min[i].min(v);
            self.max[i] = self.max[i].max(v);
        }
    }

    /// Writes avg/min/max at the given slot offsets; all 0 over no data.
    pub fn write(&self, b: &mut Bindings<'_>, avg: usize, min: usize, max: usize) {
        for i in 0..AGGREGATED.len() {
            let (a, lo, hi) = if self.n == 0 {
                (0.0, 0.0, 0.0)
            } else {
                (self.sum[i] / self.n as f64, self.min[i], self.max[i])
            };
            b.set_num(avg + i, a);
            b.set_num(min + i, lo);
            b.set_num(max + i, hi);
        }
    }
}

/// The effective bounds at `now`: the pool's, overridden by the schedule that fired last.
pub(super) fn bounds(pool: &Pool, now: DateTime<Utc>) -> (u32, u32, Option<String>) {
    let latest = pool
        .schedules
        .iter()
        .filter_map(|s| s.cron.previous(now).map(|t| (t, s)))
        .max_by_key(|(t, _)| *t);
    match latest {
        Some((t, s)) => {
            let min = s.min.unwrap_or(pool.min);
            let max = s.max.unwrap_or(pool.max);
            (
                min,
                max,
                Some(format!(
                    "schedule {:?} since {}",
                    s.name,
                    t.format("%Y-%m-%d %H:%M UTC")
                )),
            )
        }
        None => (pool.min, pool.max, None),
    }
}

/// What the per-member pass saw: busy members, aggregates, and each member's CPU for victims.
struct Members {
    busy: usize,
    agg: Agg,
    /// (sandbox index, CPU when fresh), for victim selection.
    cpu: Vec<(usize, Option<f64>)>,
    /// Members without a fresh sample, or whose `busy` could not be evaluated.
    missing: usize,
}

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
    if st
        .last_eval
        .is_some_and(|t| now < time::after(t, pool.interval))
    {
        return;
    }
    st.last_eval = Some(now);
    let first_eval = *st.first_eval.get_or_insert(now);
    let member_ids: &[usize] = prepared
        .by_pool
        .get(pool.name.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let pending_n = pending.get(&pool.name).copied().unwrap_or(0);
    let running = u32::try_from(member_ids.len()).unwrap_or(u32::MAX);
    let size = running.saturating_add(pending_n);
    let (min, max, schedule) = bounds(pool, now);
    let members = observe_members(pool, prepared, member_ids, now);
    let busy_ratio = if members.agg.n == 0 {
        0.0
    } else {
        members.busy as f64 / members.agg.n as f64
    };
    let (pool_text, template_text) = (Text::new(&pool.name), Text::new(&pool.template));
    let mut pb = Bindings::new(&POOL);
    pb.set_num(ps::SIZE, size as f64);
    pb.set_num(ps::RUNNING, running as f64);
    pb.set_num(ps::PENDING_CREATES, pending_n as f64);
    pb.set_num(ps::MIN, min as f64);
    pb.set_num(ps::MAX, max as f64);
    pb.set_num(ps::BUSY_COUNT, members.busy as f64);
    pb.set_num(ps::BUSY_RATIO, busy_ratio);
    pb.set_num(ps::WITH_DATA, members.agg.n as f64);
    members.agg.write(&mut pb, ps::AVG, ps::MIN_OF, ps::MAX_OF);
    pb.set_text(ps::POOL, &pool_text);
    pb.set_text(ps::TEMPLATE, &template_text);

    let mut acc = Account {
        size,
        clamps: Vec::new(),
        reasons: Vec::new(),
        cause: Cause {
            current: Some(size),
            ..Cause::default()
        },
        hold: false,
    };
    let raw = recommend(pool, &pb, members.missing, running, &mut acc);
    acc.cause.raw = Some(raw);
    let mut to = stabilize(pool, st, now, first_eval, raw, &mut acc);
    to = limit_step(pool, to, &mut acc);
    to = cool_down(st, now, to, &mut acc);
    to = enforce_bounds(min, max, schedule.as_deref(), to, &mut acc);
    let action = act(
        pool,
        st,
        now,
        prepared,
        &members.cpu,
        raw,
        &mut to,
        &mut acc,
    );
    record(
        pool,
        st,
        now,
        (min, max),
        raw,
        to,
        busy_ratio,
        action,
        acc,
        out,
    );
}

/// The per-member pass: the busy predicate and the aggregates over members with fresh data.
fn observe_members(
    pool: &Pool,
    prepared: &Prepared<'_>,
    member_ids: &[usize],
    now: DateTime<Utc>,
) -> Members {
    let mut m = Members {
        busy: 0,
        agg: Agg::new(),
        cpu: Vec::with_capacity(member_ids.len()),
        missing: 0,
    };
    let mut sb = Bindings::new(&SANDBOX);
    for &i in member_ids {
        let Some(s) = prepared.sandboxes.get(i) else {
            continue;
        };
        let fresh = bind_sandbox(&mut sb, s, now, pool.stale_after);
        // A busy predicate that cannot be evaluated (no value, not finite) is missing data.
        let busy = fresh.then(|| pool.busy.eval_bool(&sb).ok()).flatten();
        match busy {
            Some(b) => {
                m.agg.add(&sb);
                m.busy += usize::from(b);
            }
            None => m.missing += 1,
        }
        m.cpu
            .push((i, busy.is_some().then(|| sb.num("cpu_used_pct")).flatten()));
    }
    m
}

/// The raw recommendation from target tracking and step rules: up beats none beats down,
/// within a direction the larger change wins. Missing data, or a rule with no finite value,
/// holds (or, under `up_only` with some members reporting, blocks scale-down).
fn recommend(
    pool: &Pool,
    pb: &Bindings<'_>,
    missing: usize,
    running: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    if missing > 0 && pool.on_missing == OnMissing::Hold {
        acc.hold = true;
        acc.clamp(
            ClampKind::MissingData,
            size,
            size,
            None,
            format!(
                "{missing} of {running} members have no sample newer than {}; holding",
                humantime::format_duration(pool.stale_after)
            ),
        );
        return size;
    }
    let mut recs: Vec<u32> = Vec::new();
    if let Some(t) = &pool.target {
        match target_recommendation(t, pb, size) {
            Ok((rec, reason)) => {
                note_values(&t.metric, pb, &mut acc.cause);
                acc.reasons.push(reason);
                recs.push(rec);
            }
            Err(why) => return hold_on(acc, "scale.target.metric", &why),
        }
    }
    for (i, step) in pool.steps.iter().enumerate() {
        match step.when.eval_bool(pb) {
            Ok(true) => {
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
                recs.push(rec);
            }
            Ok(false) => {}
            Err(e) => return hold_on(acc, &format!("scale.steps[{i}].when"), &e),
        }
    }
    if missing > 0 {
        // up_only: never shrink on partial data.
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
    if let Some(up) = recs.iter().copied().filter(|r| *r > size).max() {
        up
    } else if recs.contains(&size) || recs.is_empty() {
        size
    } else {
        recs.iter().copied().min().unwrap_or(size)
    }
}

/// A rule without a finite value: no metric-driven change, and the cause says why.
fn hold_on(acc: &mut Account, field: &str, why: &EvalError) -> u32 {
    acc.hold = true;
    acc.reasons.clear();
    let size = acc.size;
    acc.clamp(
        ClampKind::MissingData,
        size,
        size,
        None,
        format!(
            "{field} {:?} has no value ({}); holding",
            why.text, why.reason
        ),
    );
    size
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

fn note_values(e: &crate::expr::Expr, pb: &Bindings<'_>, cause: &mut Cause) {
    for v in e.variables() {
        if let Some(x) = pb.num(v) {
            cause.values.insert(v.to_string(), x);
        }
    }
}

/// Stabilization, over recommended changes so that relative step rules and absolute target
/// recommendations mean the same: scale in by the smallest cut recommended in the last
/// `stabilization.down` (none if any recommendation in it was to hold or grow), and only once a
/// whole window has been watched; scale out by the smallest increase in the last
/// `stabilization.up`.
fn stabilize(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    first_eval: DateTime<Utc>,
    raw: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    let horizon = pool.stabilization.up.max(pool.stabilization.down);
    st.window.push_back((now, i64::from(raw) - i64::from(size)));
    let oldest = time::before(now, horizon);
    while st.window.front().is_some_and(|(t, _)| *t <= oldest) {
        st.window.pop_front();
    }
    let mut to = raw;
    if raw < size && !pool.stabilization.down.is_zero() {
        to = stabilize_down(pool, st, now, first_eval, to, acc);
    }
    if raw > size && !pool.stabilization.up.is_zero() {
        let since = time::before(now, pool.stabilization.up);
        let in_window = st.window.iter().filter(|(t, _)| *t > since);
        if let Some(&(t, lowest)) = in_window.min_by_key(|(t, d)| (*d, std::cmp::Reverse(*t))) {
            let stab = plus(size, lowest.max(0));
            if stab < to {
                acc.clamp(
                    ClampKind::Stabilization,
                    to,
                    stab,
                    Some(time::after(t, pool.stabilization.up)),
                    format!(
                        "scale-out held by stabilization: {} recommended at {}",
                        signed_delta(lowest),
                        t.format("%H:%M:%S")
                    ),
                );
                to = stab;
            }
        }
    }
    to
}

fn stabilize_down(
    pool: &Pool,
    st: &PoolState,
    now: DateTime<Utc>,
    first_eval: DateTime<Utc>,
    mut to: u32,
    acc: &mut Account,
) -> u32 {
    let size = acc.size;
    let window = pool.stabilization.down;
    let since = time::before(now, window);
    let in_window = st.window.iter().filter(|(t, _)| *t > since);
    if let Some(&(t, highest)) = in_window.max_by_key(|(t, d)| (*d, *t)) {
        let stab = plus(size, highest.min(0));
        if stab > to {
            let verb = if highest >= 0 { "held" } else { "limited" };
            acc.clamp(
                ClampKind::Stabilization,
                to,
                stab,
                Some(time::after(t, window)),
                format!(
                    "scale-in {verb} by stabilization: {} recommended at {}",
                    signed_delta(highest),
                    t.format("%H:%M:%S")
                ),
            );
            to = stab;
        }
    }
    let until = time::after(first_eval, window);
    if to < size && now < until {
        acc.clamp(
            ClampKind::Stabilization,
            to,
            size,
            Some(until),
            format!(
                "scale-in held until a whole stabilization window has been observed ({})",
                until.format("%H:%M:%S")
            ),
        );
        to = size;
    }
    to
}

/// `size + d`, within 0..=u32::MAX.
fn plus(size: u32, d: i64) -> u32 {
    u32::try_from((i64::from(size) + d).max(0)).unwrap_or(u32::MAX)
}

/// At most `max_step.up` added or `max_step.down` removed per evaluation.
fn limit_step(pool: &Pool, mut to: u32, acc: &mut Account) -> u32 {
    let size = acc.size;
    if let Some(up) = pool.max_step.up
        && to > size.saturating_add(up)
    {
        let cap = size.saturating_add(up);
        acc.clamp(
            ClampKind::MaxStep,
            to,
            cap,
            None,
            format!("capped by max_step.up {up}"),
        );
        to = cap;
    }
    if let Some(down) = pool.max_step.down
        && to < size.saturating_sub(down)
    {
        let floor = size.saturating_sub(down);
        acc.clamp(
            ClampKind::MaxStep,
            to,
            floor,
            None,
            format!("capped by max_step.down {down}"),
        );
        to = floor;
    }
    to
}

/// No scale-out inside the up cooldown, no scale-in inside the down cooldown.
fn cool_down(st: &PoolState, now: DateTime<Utc>, mut to: u32, acc: &mut Account) -> u32 {
    let size = acc.size;
    if to > size
        && let Some(until) = st.cooldown_up_until.filter(|u| now < *u)
    {
        let note = format!("scale-out in cooldown until {}", until.format("%H:%M:%S"));
        acc.clamp(ClampKind::Cooldown, to, size, Some(until), note);
        to = size;
    }
    if to < size
        && let Some(until) = st.cooldown_down_until.filter(|u| now < *u)
    {
        let note = format!("scale-in in cooldown until {}", until.format("%H:%M:%S"));
        acc.clamp(ClampKind::Cooldown, to, size, Some(until), note);
        to = size;
    }
    to
}

/// Min and max always hold, schedules included.
fn enforce_bounds(
    min: u32,
    max: u32,
    schedule: Option<&str>,
    mut to: u32,
    acc: &mut Account,
) -> u32 {
    let source = schedule.map(|s| format!(" ({s})")).unwrap_or_default();
    if to < min {
        acc.clamp(
            ClampKind::Min,
            to,
            min,
            None,
            format!("raised to min {min}{source}"),
        );
        to = min;
    }
    if to > max {
        acc.clamp(
            ClampKind::Max,
            to,
            max,
            None,
            format!("capped by max {max}{source}"),
        );
        to = max;
    }
    to
}

/// The action that takes the pool from its size to `to`, and the cooldown it starts.
/// Cooldowns damp metric-driven changes; enforcing min (or a schedule) starts none.
#[allow(clippy::too_many_arguments)]
fn act(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    cpu: &[(usize, Option<f64>)],
    raw: u32,
    to: &mut u32,
    acc: &mut Account,
) -> Option<Action> {
    let size = acc.size;
    let cooldown_end = |d: std::time::Duration| Some(time::after(now, d)).filter(|_| !d.is_zero());
    if *to > size {
        if raw > size {
            st.cooldown_up_until = cooldown_end(pool.cooldown.up);
        }
        return Some(Action::Create {
            pool: pool.name.clone(),
            count: *to - size,
        });
    }
    if *to == size {
        return None;
    }
    let wanted = size - *to;
    let victims = pick_victims(pool, now, prepared, cpu, wanted as usize);
    let got_n = u32::try_from(victims.len()).unwrap_or(u32::MAX);
    if got_n < wanted {
        let got = size - got_n;
        let note = format!(
            "only {got_n} of {wanted} members may be removed (pending creates, protected, or younger than min_age {})",
            humantime::format_duration(pool.min_age)
        );
        acc.clamp(ClampKind::Victims, *to, got, None, note);
        *to = got;
    }
    if victims.is_empty() {
        return None;
    }
    if raw < size {
        st.cooldown_down_until = cooldown_end(pool.cooldown.down);
    }
    Some(Action::Kill {
        pool: pool.name.clone(),
        sandbox_ids: victims,
    })
}

/// Writes the cause and the pool's status, and emits the decision when there is an action.
#[allow(clippy::too_many_arguments)]
fn record(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    (min, max): (u32, u32),
    raw: u32,
    to: u32,
    busy_ratio: f64,
    action: Option<Action>,
    acc: Account,
    out: &mut Vec<Decision>,
) {
    let Account {
        size,
        clamps,
        reasons,
        mut cause,
        hold,
    } = acc;
    cause.result = Some(to);
    let mut summary = format!("pool {}: ", pool.name);
    if reasons.is_empty() {
        summary.push_str(if hold {
            "metrics missing"
        } else {
            "no rule fired"
        });
    } else {
        summary.push_str(&reasons.join("; "));
    }
    for c in &clamps {
        let _ = write!(summary, "; {}: {} -> {}", c.note, c.from, c.to);
    }
    let _ = write!(summary, "; size {size} -> {to}");
    cause.summary = summary;
    cause.values.insert("size".into(), size as f64);
    cause.values.insert("busy_ratio".into(), busy_ratio);
    cause.clamps = clamps.clone();
    st.status = Some(PoolStatus {
        at: now,
        size,
        min,
        max,
        raw,
        desired: to,
        clamps,
        summary: cause.summary.clone(),
    });
    if let Some(action) = action {
        out.push(Decision {
            at: now,
            rule: pool.name.clone(),
            action,
            dry_run: pool.dry_run,
            cause,
        });
    }
}

fn signed_delta(d: i64) -> String {
    match d {
        0 => "hold".to_string(),
        d if d > 0 => format!("+{d}"),
        d => d.to_string(),
    }
}

fn signed(rec: u32, size: u32) -> String {
    match rec.cmp(&size) {
        std::cmp::Ordering::Greater => format!("+{}", rec - size),
        std::cmp::Ordering::Less => format!("-{}", size - rec),
        std::cmp::Ordering::Equal => "hold".to_string(),
    }
}

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
