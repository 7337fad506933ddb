//! Pool evaluation: recommendation, clamps, victims. Also the per-step preparation of
//! sandboxes shared by pools and alerts (text values converted once per sandbox, not per rule).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Action, Cause, Clamp, ClampKind, Decision, ObservedSandbox, PoolState, PoolStatus};
use crate::e2b::SandboxState;
use crate::expr::{Bindings, Meta, Text, format_number};
use crate::rules::scopes::{AGGREGATED, POOL, SANDBOX, pool as ps, sandbox as ss};
use crate::rules::{OnMissing, Pool, Victims};

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

fn secs(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// `t + d`, saturating at the end of time: a duration or a saved time that reaches past
/// chrono's range means "never", not a panic.
fn later(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_add_signed(secs(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the start of time.
fn earlier(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    t.checked_sub_signed(secs(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
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
        (now - s.obs.started_at).as_seconds_f64().max(0.0),
    );
    b.set_num(
        ss::TIME_LEFT_S,
        (s.obs.end_at - now).as_seconds_f64().max(0.0),
    );
    b.set_text(ss::TEMPLATE, &s.template);
    b.set_text(ss::SANDBOX_ID, &s.id);
    b.set_text(ss::POOL, &s.pool);
    b.set_meta(&s.meta);
    let fresh = s
        .obs
        .metric
        .as_ref()
        .filter(|m| m.timestamp >= earlier(now, stale_after));
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

pub(super) fn run(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    prepared: &Prepared<'_>,
    pending: &BTreeMap<String, u32>,
    out: &mut Vec<Decision>,
) {
    if st.last_eval.is_some_and(|t| now < later(t, pool.interval)) {
        return;
    }
    st.last_eval = Some(now);
    let first_eval = *st.first_eval.get_or_insert(now);
    let members: &[usize] = prepared
        .by_pool
        .get(pool.name.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let pending_n = pending.get(&pool.name).copied().unwrap_or(0);
    let size = members.len() as u32 + pending_n;
    let (min, max, schedule) = bounds(pool, now);

    // Per-member pass: busy predicate and aggregates over members with fresh data.
    let mut busy = 0usize;
    let mut agg = Agg::new();
    let mut cpu: Vec<(usize, Option<f64>)> = Vec::with_capacity(members.len());
    let mut sb = Bindings::new(&SANDBOX);
    for &i in members {
        let s = &prepared.sandboxes[i];
        let fresh = bind_sandbox(&mut sb, s, now, pool.stale_after);
        if fresh {
            agg.add(&sb);
            if pool.busy.eval_bool(&sb).unwrap_or(false) {
                busy += 1;
            }
        }
        cpu.push((i, fresh.then(|| sb.num("cpu_used_pct")).flatten()));
    }
    let with_data = agg.n;
    let missing = members.len() - with_data;
    let busy_ratio = if with_data == 0 {
        0.0
    } else {
        busy as f64 / with_data as f64
    };
    let pool_text = Text::new(&pool.name);
    let template_text = Text::new(&pool.template);
    let mut pb = Bindings::new(&POOL);
    pb.set_num(ps::SIZE, size as f64);
    pb.set_num(ps::RUNNING, members.len() as f64);
    pb.set_num(ps::PENDING_CREATES, pending_n as f64);
    pb.set_num(ps::MIN, min as f64);
    pb.set_num(ps::MAX, max as f64);
    pb.set_num(ps::BUSY_COUNT, busy as f64);
    pb.set_num(ps::BUSY_RATIO, busy_ratio);
    pb.set_num(ps::WITH_DATA, with_data as f64);
    agg.write(&mut pb, ps::AVG, ps::MIN_OF, ps::MAX_OF);
    pb.set_text(ps::POOL, &pool_text);
    pb.set_text(ps::TEMPLATE, &template_text);

    let mut cause = Cause {
        current: Some(size),
        ..Cause::default()
    };
    let mut reasons: Vec<String> = Vec::new();
    let mut clamps: Vec<Clamp> = Vec::new();
    let hold = missing > 0 && pool.on_missing == OnMissing::Hold;
    let mut recs: Vec<u32> = Vec::new();
    let note_values = |e: &crate::expr::Expr, cause: &mut Cause| {
        for v in e.variables() {
            if let Some(x) = pb.num(v) {
                cause.values.insert(v.to_string(), x);
            }
        }
    };
    if hold {
        clamps.push(Clamp {
            kind: ClampKind::MissingData,
            from: size,
            to: size,
            until: None,
            note: format!(
                "{missing} of {} members have no sample newer than {}; holding",
                members.len(),
                humantime::format_duration(pool.stale_after)
            ),
        });
    } else {
        if let Some(t) = &pool.target
            && let Ok(v) = t.metric.eval_f64(&pb)
        {
            note_values(&t.metric, &mut cause);
            let ratio = v / t.value;
            let rec = if (1.0 - ratio).abs() <= t.tolerance || size == 0 {
                size
            } else {
                (size as f64 * ratio).ceil().max(0.0).min(u32::MAX as f64) as u32
            };
            reasons.push(format!(
                "{} {} vs target {} (ratio {}), {}",
                t.metric,
                format_number(v),
                format_number(t.value),
                format_number(ratio),
                signed(rec, size)
            ));
            recs.push(rec);
        }
        for step in &pool.steps {
            if step.when.eval_bool(&pb).unwrap_or(false) {
                note_values(&step.when, &mut cause);
                let rec = (size as i64 + step.change).clamp(0, u32::MAX as i64) as u32;
                let shown: Vec<String> = step
                    .when
                    .variables()
                    .filter_map(|v| pb.num(v).map(|x| format!("{v} {}", format_number(x))))
                    .collect();
                reasons.push(format!(
                    "{} ({}), {}",
                    step.when,
                    shown.join(", "),
                    signed(rec, size)
                ));
                recs.push(rec);
            }
        }
        if missing > 0 {
            // up_only: never shrink on partial data.
            if recs.iter().any(|r| *r < size) {
                clamps.push(Clamp {
                    kind: ClampKind::MissingData,
                    from: *recs.iter().min().unwrap_or(&size),
                    to: size,
                    until: None,
                    note: format!("{missing} members have no fresh sample; scale-down blocked"),
                });
            }
            recs.retain(|r| *r >= size);
        }
    }
    // Up beats none beats down; within a direction the larger change wins.
    let raw = if let Some(up) = recs.iter().copied().filter(|r| *r > size).max() {
        up
    } else if recs.contains(&size) || recs.is_empty() {
        size
    } else {
        recs.iter().copied().min().unwrap_or(size)
    };
    cause.raw = Some(raw);

    // Stabilization, over recommended changes so that relative step rules and absolute target
    // recommendations mean the same: scale in by the smallest cut recommended in the last
    // `stabilization.down` (none if any recommendation in it was to hold or grow), and only
    // once a whole window has been watched; scale out by the smallest increase in the last
    // `stabilization.up`.
    let horizon = pool.stabilization.up.max(pool.stabilization.down);
    let delta = raw as i64 - size as i64;
    st.window.push_back((now, delta));
    while st
        .window
        .front()
        .is_some_and(|(t, _)| *t <= earlier(now, horizon))
    {
        st.window.pop_front();
    }
    let mut to = raw;
    if raw < size && !pool.stabilization.down.is_zero() {
        let since = earlier(now, pool.stabilization.down);
        let in_window = st.window.iter().filter(|(t, _)| *t > since);
        if let Some(&(t, highest)) = in_window.max_by_key(|(t, d)| (*d, *t)) {
            let stab = (size as i64 + highest.min(0)) as u32;
            if stab > to {
                let note = if highest >= 0 {
                    format!(
                        "scale-in held by stabilization: {} recommended at {}",
                        signed_delta(highest),
                        t.format("%H:%M:%S")
                    )
                } else {
                    format!(
                        "scale-in limited by stabilization: {} recommended at {}",
                        signed_delta(highest),
                        t.format("%H:%M:%S")
                    )
                };
                clamps.push(Clamp {
                    kind: ClampKind::Stabilization,
                    from: to,
                    to: stab,
                    until: Some(later(t, pool.stabilization.down)),
                    note,
                });
                to = stab;
            }
        }
        if to < size && now - first_eval < secs(pool.stabilization.down) {
            let until = later(first_eval, pool.stabilization.down);
            clamps.push(Clamp {
                kind: ClampKind::Stabilization,
                from: to,
                to: size,
                until: Some(until),
                note: format!(
                    "scale-in held until a whole stabilization window has been observed ({})",
                    until.format("%H:%M:%S")
                ),
            });
            to = size;
        }
    }
    if raw > size && !pool.stabilization.up.is_zero() {
        let since = earlier(now, pool.stabilization.up);
        let in_window = st.window.iter().filter(|(t, _)| *t > since);
        if let Some(&(t, lowest)) = in_window.min_by_key(|(t, d)| (*d, std::cmp::Reverse(*t))) {
            let stab = (size as i64 + lowest.max(0)) as u32;
            if stab < to {
                clamps.push(Clamp {
                    kind: ClampKind::Stabilization,
                    from: to,
                    to: stab,
                    until: Some(later(t, pool.stabilization.up)),
                    note: format!(
                        "scale-out held by stabilization: {} recommended at {}",
                        signed_delta(lowest),
                        t.format("%H:%M:%S")
                    ),
                });
                to = stab;
            }
        }
    }
    // Max step.
    if let Some(up) = pool.max_step.up
        && to > size.saturating_add(up)
    {
        clamps.push(Clamp {
            kind: ClampKind::MaxStep,
            from: to,
            to: size + up,
            until: None,
            note: format!("capped by max_step.up {up}"),
        });
        to = size + up;
    }
    if let Some(down) = pool.max_step.down
        && to < size.saturating_sub(down)
    {
        clamps.push(Clamp {
            kind: ClampKind::MaxStep,
            from: to,
            to: size - down,
            until: None,
            note: format!("capped by max_step.down {down}"),
        });
        to = size - down;
    }
    // Cooldown.
    if to > size
        && let Some(until) = st.cooldown_up_until.filter(|u| now < *u)
    {
        clamps.push(Clamp {
            kind: ClampKind::Cooldown,
            from: to,
            to: size,
            until: Some(until),
            note: format!("scale-out in cooldown until {}", until.format("%H:%M:%S")),
        });
        to = size;
    }
    if to < size
        && let Some(until) = st.cooldown_down_until.filter(|u| now < *u)
    {
        clamps.push(Clamp {
            kind: ClampKind::Cooldown,
            from: to,
            to: size,
            until: Some(until),
            note: format!("scale-in in cooldown until {}", until.format("%H:%M:%S")),
        });
        to = size;
    }
    // Min and max always hold.
    let source = schedule
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if to < min {
        clamps.push(Clamp {
            kind: ClampKind::Min,
            from: to,
            to: min,
            until: None,
            note: format!("raised to min {min}{source}"),
        });
        to = min;
    }
    if to > max {
        clamps.push(Clamp {
            kind: ClampKind::Max,
            from: to,
            to: max,
            until: None,
            note: format!("capped by max {max}{source}"),
        });
        to = max;
    }

    let mut action = None;
    if to > size {
        action = Some(Action::Create {
            pool: pool.name.clone(),
            count: to - size,
        });
        // Cooldowns damp metric-driven changes; enforcing min (or a schedule) starts none.
        if raw > size {
            st.cooldown_up_until =
                Some(later(now, pool.cooldown.up)).filter(|_| !pool.cooldown.up.is_zero());
        }
    } else if to < size {
        let wanted = size - to;
        let victims = pick_victims(pool, now, prepared, &cpu, wanted as usize);
        if (victims.len() as u32) < wanted {
            let got = size - victims.len() as u32;
            clamps.push(Clamp { kind: ClampKind::Victims, from: to, to: got, until: None, note: format!("only {} of {wanted} members may be removed (pending creates, protected, or younger than min_age {})", victims.len(), humantime::format_duration(pool.min_age)) });
            to = got;
        }
        if !victims.is_empty() {
            action = Some(Action::Kill {
                pool: pool.name.clone(),
                sandbox_ids: victims,
            });
            if raw < size {
                st.cooldown_down_until =
                    Some(later(now, pool.cooldown.down)).filter(|_| !pool.cooldown.down.is_zero());
            }
        }
    }
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
            if now - s.obs.started_at < secs(pool.min_age) {
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
