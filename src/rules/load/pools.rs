//! The `pools` section: a pool's bounds, how a member is created (`sandbox`), when a member
//! is busy, how it scales (`scale`: target tracking, steps, cooldown, stabilization, largest
//! step) and which members go first when it shrinks (`scale_in`). Its `schedules` are checked
//! in [`super::schedules`].
//!
//! A pool that loads has `min <= max`, compiled expressions, and every duration and count
//! within its field's range: the engine relies on that (a schedule, too, keeps `min <= max`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Checker;
use super::lifetime::{
    Lifetime, PoolFacts, RawClaims, RawIdle, RawKeepAlive, RawLifetime, RawWarm, check_lifetime,
};
use super::schedules::{RawSchedule, check_schedules};
use super::values::{DAY, MAX_COUNT, RawNumber, SECOND, WEEK, count, duration, opt_count};
use crate::duration::HumanDuration;
use crate::e2b::Metadata;
use crate::expr::{Expr, Kind};
use crate::rules::scopes::{POOL, SANDBOX};
use crate::rules::{
    OnMissing, Pool, Predict, PredictMethod, PredictMode, RateLimit, RatePolicies, RatePolicy,
    SandboxSettings, Select, Step, Target, UpDown, Victims,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default)]
    timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    #[serde(default)]
    auto_pause: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    metric: Spanned<String>,
    value: Spanned<f64>,
    #[serde(default = "default_tolerance")]
    tolerance: Spanned<f64>,
    #[serde(default)]
    saturated_when: Option<Spanned<String>>,
}

/// When a target's reading is saturated unless the rule says otherwise: the members' average
/// CPU at its ceiling (a sample of a busy sandbox reads 95 to 100 %).
pub(crate) const DEFAULT_SATURATED_WHEN: &str = "avg_cpu_used_pct >= 95";

fn default_tolerance() -> Spanned<f64> {
    Spanned {
        value: 0.1,
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    when: Spanned<String>,
    #[serde(default)]
    add: Option<Spanned<RawNumber>>,
    #[serde(default)]
    remove: Option<Spanned<RawNumber>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub(super) struct RawUpDown<T> {
    #[serde(default)]
    up: Option<T>,
    #[serde(default)]
    down: Option<T>,
}

impl<T> Default for RawUpDown<T> {
    fn default() -> Self {
        RawUpDown {
            up: None,
            down: None,
        }
    }
}

/// One rate policy as written: `{pods: N, per: 15s}` or `{percent: P, per: 15s}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRatePolicy {
    #[serde(default)]
    pods: Option<Spanned<RawNumber>>,
    #[serde(default)]
    percent: Option<Spanned<RawNumber>>,
    per: Spanned<HumanDuration>,
}

/// A direction's rate policies as written: `{select: max, rules: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRatePolicies {
    #[serde(default)]
    select: Option<Select>,
    rules: Spanned<Vec<RawRatePolicy>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    #[serde(default)]
    interval: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    target: Option<RawTarget>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    cooldown: RawUpDown<Spanned<HumanDuration>>,
    #[serde(default)]
    stabilization: RawUpDown<Spanned<HumanDuration>>,
    #[serde(default)]
    max_step: RawUpDown<Spanned<RawNumber>>,
    #[serde(default)]
    policies: RawUpDown<RawRatePolicies>,
    #[serde(default)]
    on_missing_metrics: Option<OnMissing>,
    #[serde(default)]
    stale_after: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    predict: Option<Spanned<RawPredict>>,
}

/// `scale.predict` as written: `{ method: trend, lookback: 1h, horizon: 2m }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredict {
    #[serde(default)]
    method: Option<Spanned<PredictMethod>>,
    #[serde(default)]
    lookback: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    horizon: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    season: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    mode: Option<PredictMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaleIn {
    #[serde(default)]
    victims: Option<Victims>,
    #[serde(default)]
    min_age: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    protect: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    template: Option<String>,
    min: Spanned<RawNumber>,
    max: Spanned<RawNumber>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    busy: Option<Spanned<String>>,
    #[serde(default)]
    scale: RawScale,
    #[serde(default)]
    scale_in: RawScaleIn,
    #[serde(default)]
    schedules: Vec<RawSchedule>,
    #[serde(default)]
    idle: Option<Spanned<RawIdle>>,
    #[serde(default)]
    claims: RawClaims,
    #[serde(default)]
    keepalive: Option<Spanned<RawKeepAlive>>,
    #[serde(default)]
    max_age: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    warm: Option<Spanned<RawWarm>>,
    #[serde(default)]
    dry_run: bool,
}

/// A pool, or `None` after reporting every problem it has.
pub(super) fn check_pool(c: &mut Checker, p: &RawPool) -> Option<Pool> {
    let ctx = format!("pool {:?}", p.name.value);
    let before = c.diags.len();
    if p.name.value.trim().is_empty() {
        c.at(p.name.referenced, "pool name must not be empty".into());
    }
    let (min, max) = check_pool_bounds(c, &ctx, p);
    let busy = check_busy(c, &ctx, p);
    let target = p
        .scale
        .target
        .as_ref()
        .and_then(|t| check_target(c, &ctx, t));
    let steps = check_steps(c, &ctx, &p.scale.steps);
    let protect = p
        .scale_in
        .protect
        .as_ref()
        .and_then(|e| c.expr(e, &SANDBOX, Kind::Bool, &format!("{ctx}: scale_in.protect")));
    let schedules = check_schedules(c, &ctx, &p.schedules, min.zip(max));
    let max_step = check_max_step(c, &ctx, &p.scale.max_step);
    let policies = check_policies(c, &ctx, &p.scale.policies);
    let sandbox = check_sandbox(c, &ctx, &p.sandbox);
    let timing = check_timing(c, &ctx, p);
    let predict = p
        .scale
        .predict
        .as_ref()
        .and_then(|r| check_predict(c, &ctx, r, p.scale.target.is_some()));
    let lifetime = check_pool_lifetime(c, &ctx, p, max, &timing);
    if c.diags.len() > before {
        return None;
    }
    let lifetime = lifetime?;
    Some(Pool {
        name: p.name.value.clone(),
        template: p.template.clone().unwrap_or_else(|| "base".into()),
        min: min?,
        max: max?,
        sandbox: sandbox?,
        busy: busy?,
        interval: timing.interval,
        target,
        steps,
        cooldown: timing.cooldown,
        stabilization: timing.stabilization,
        max_step: max_step?,
        policies,
        on_missing: p.scale.on_missing_metrics.unwrap_or(OnMissing::Hold),
        stale_after: timing.stale_after,
        victims: p.scale_in.victims.unwrap_or(Victims::IdleFirst),
        min_age: timing.min_age,
        protect,
        schedules,
        predict,
        idle: lifetime.idle,
        claims: lifetime.claims,
        keepalive: lifetime.keepalive,
        max_age: lifetime.max_age,
        warm: lifetime.warm,
        dry_run: p.dry_run,
    })
}

/// The service fields (`idle`, `claims`, `keepalive`, `max_age`, `warm`), checked in
/// [`super::lifetime`] against the pool's `max`, interval and sandbox timeout.
fn check_pool_lifetime(
    c: &mut Checker,
    ctx: &str,
    p: &RawPool,
    max: Option<u32>,
    timing: &Timing,
) -> Option<Lifetime> {
    let raw = RawLifetime {
        idle: &p.idle,
        claims: &p.claims,
        keepalive: &p.keepalive,
        max_age: &p.max_age,
        warm: &p.warm,
    };
    let facts = PoolFacts {
        max,
        interval: timing.interval,
        has_timeout: p.sandbox.timeout.is_some(),
        at: p.name.referenced,
    };
    check_lifetime(c, ctx, &raw, &facts)
}

/// The longest history a forecast may ask for (AWS predictive scaling fits up to 14 days; one
/// week keeps a pool's downsampled history small).
const MAX_LOOKBACK: Duration = WEEK;
/// The furthest a forecast may look ahead: beyond an hour a trend says little.
const MAX_HORIZON: Duration = Duration::from_secs(3600);

/// `scale.predict`: only beside a `scale.target` (the forecast is of the target's demand);
/// lookback 1m to 7d (default 1h), horizon 5s to 1h (default 2m), and a `season` of 1m to 7d,
/// longer than the horizon, exactly when the method is `seasonal`. Default mode `forecast_only`.
fn check_predict(
    c: &mut Checker,
    ctx: &str,
    raw: &Spanned<RawPredict>,
    has_target: bool,
) -> Option<Predict> {
    let before = c.diags.len();
    let r = &raw.value;
    let what = format!("{ctx}: scale.predict");
    if !has_target {
        c.at(
            raw.referenced,
            format!("{what} forecasts the target's demand, and this pool has no `scale.target`; add one, such as `target: {{ metric: avg_cpu_used_pct, value: 70 }}`, or remove `predict`"),
        );
    }
    let minute = Duration::from_secs(60);
    let lookback = duration(
        c,
        &what,
        "lookback",
        &r.lookback,
        60 * minute,
        (minute, MAX_LOOKBACK),
    );
    let horizon = duration(
        c,
        &what,
        "horizon",
        &r.horizon,
        2 * minute,
        (5 * SECOND, MAX_HORIZON),
    );
    let method = r.method.as_ref().map_or(PredictMethod::Trend, |m| m.value);
    let season = check_season(c, &what, r, method, horizon);
    (c.diags.len() == before).then(|| Predict {
        method,
        lookback,
        horizon,
        season,
        mode: r.mode.unwrap_or(PredictMode::ForecastOnly),
    })
}

/// A `seasonal` forecast needs a `season` longer than its horizon; a `trend` takes none.
fn check_season(
    c: &mut Checker,
    what: &str,
    r: &RawPredict,
    method: PredictMethod,
    horizon: Duration,
) -> Option<Duration> {
    match (method, &r.season) {
        (PredictMethod::Trend, None) => None,
        (PredictMethod::Trend, Some(s)) => {
            c.at(
                s.referenced,
                format!("{what}: `season` is for `method: seasonal`; remove it, or set `method: seasonal`"),
            );
            None
        }
        (PredictMethod::Seasonal, None) => {
            let place = r
                .method
                .as_ref()
                .map_or(serde_saphyr::Location::UNKNOWN, |m| m.referenced);
            c.at(
                place,
                format!("{what}: `method: seasonal` needs a `season`, such as `season: 24h`"),
            );
            None
        }
        (PredictMethod::Seasonal, Some(s)) => {
            let before = c.diags.len();
            let season = duration(
                c,
                what,
                "season",
                &r.season,
                DAY,
                (Duration::from_secs(60), MAX_LOOKBACK),
            );
            if c.diags.len() == before && season <= horizon {
                c.at(
                    s.referenced,
                    format!(
                        "{what}: `season` {} must be longer than `horizon` {}: the forecast reads the demand one season before now + horizon",
                        humantime::format_duration(season),
                        humantime::format_duration(horizon)
                    ),
                );
            }
            Some(season)
        }
    }
}

/// The per-sandbox `busy` predicate; by default `cpu_used_pct > 80`, placed at the pool's name.
fn check_busy(c: &mut Checker, ctx: &str, p: &RawPool) -> Option<Expr> {
    let busy_src = p.busy.clone().unwrap_or(Spanned {
        value: "cpu_used_pct > 80".into(),
        referenced: p.name.referenced,
        defined: p.name.referenced,
    });
    c.expr(&busy_src, &SANDBOX, Kind::Bool, &format!("{ctx}: busy"))
}

/// `scale.max_step`: the most members one decision may add or remove; absent is no limit.
fn check_max_step(
    c: &mut Checker,
    ctx: &str,
    m: &RawUpDown<Spanned<RawNumber>>,
) -> Option<UpDown<Option<u32>>> {
    let up = opt_count(c, ctx, "scale.max_step.up", &m.up, (1, MAX_COUNT));
    let down = opt_count(c, ctx, "scale.max_step.down", &m.down, (1, MAX_COUNT));
    Some(UpDown {
        up: up?,
        down: down?,
    })
}

/// The most rate policies a direction may list (HPA's limit).
const MAX_POLICIES: usize = 10;
/// The longest rate policy period (HPA's `periodSeconds` limit, 1800).
pub(crate) const MAX_POLICY_PERIOD: Duration = Duration::from_secs(30 * 60);
/// The largest growth one up policy may allow per period: 1000 % is elevenfold.
const MAX_UP_PERCENT: u32 = 1000;

/// `scale.policies`: per direction, 1 to 10 rate policies and how one is selected (default
/// `max`, as HPA). Absent is no limit. Every policy is checked, so all problems are reported.
fn check_policies(
    c: &mut Checker,
    ctx: &str,
    p: &RawUpDown<RawRatePolicies>,
) -> UpDown<Option<RatePolicies>> {
    let up =
        p.up.as_ref()
            .and_then(|r| check_direction(c, ctx, "up", r, MAX_UP_PERCENT));
    let down = p
        .down
        .as_ref()
        .and_then(|r| check_direction(c, ctx, "down", r, 100));
    UpDown { up, down }
}

/// One direction's policies; `None` after a diagnostic.
fn check_direction(
    c: &mut Checker,
    ctx: &str,
    dir: &str,
    raw: &RawRatePolicies,
    max_percent: u32,
) -> Option<RatePolicies> {
    let before = c.diags.len();
    let list = &raw.rules.value;
    if list.is_empty() || list.len() > MAX_POLICIES {
        c.at(
            raw.rules.referenced,
            format!(
                "{ctx}: `scale.policies.{dir}.rules` has {} policies; give 1 to {MAX_POLICIES}, such as [{{ pods: 4, per: 15s }}, {{ percent: 100, per: 15s }}]",
                list.len()
            ),
        );
    }
    let rules: Vec<RatePolicy> = list
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let field = format!("scale.policies.{dir}.rules[{i}]");
            check_rate_policy(c, ctx, &field, r, max_percent)
        })
        .collect();
    (c.diags.len() == before).then(|| RatePolicies {
        select: raw.select.unwrap_or(Select::Max),
        rules,
    })
}

/// `{pods: N, per: D}` or `{percent: P, per: D}`: exactly one limit, and a period of 1s to 30m.
fn check_rate_policy(
    c: &mut Checker,
    ctx: &str,
    field: &str,
    r: &RawRatePolicy,
    max_percent: u32,
) -> Option<RatePolicy> {
    let what = format!("{ctx}: {field}");
    let limit = match (&r.pods, &r.percent) {
        (Some(n), None) => count(c, &what, "pods", n, (1, MAX_COUNT)).map(RateLimit::Pods),
        (None, Some(p)) => count(c, &what, "percent", p, (1, max_percent)).map(RateLimit::Percent),
        _ => {
            c.at(
                r.per.referenced,
                format!("{what}: give exactly one of `pods: N` or `percent: P` beside `per`"),
            );
            None
        }
    };
    let before = c.diags.len();
    let written = Some(r.per.clone());
    let per = duration(
        c,
        &what,
        "per",
        &written,
        SECOND,
        (SECOND, MAX_POLICY_PERIOD),
    );
    let per_ok = c.diags.len() == before;
    limit
        .filter(|_| per_ok)
        .map(|limit| RatePolicy { limit, per })
}

/// A pool's durations, each defaulted and bounded.
struct Timing {
    interval: Duration,
    cooldown: UpDown<Duration>,
    stabilization: UpDown<Duration>,
    stale_after: Duration,
    min_age: Duration,
}

fn check_timing(c: &mut Checker, ctx: &str, p: &RawPool) -> Timing {
    let (sc, si) = (&p.scale, &p.scale_in);
    let mut d = |field: &str, v: &Option<Spanned<HumanDuration>>, default: u64, range| {
        duration(c, ctx, field, v, Duration::from_secs(default), range)
    };
    let interval = d("scale.interval", &sc.interval, 15, (SECOND, DAY));
    let cooldown = UpDown {
        up: d(
            "scale.cooldown.up",
            &sc.cooldown.up,
            0,
            (Duration::ZERO, DAY),
        ),
        down: d(
            "scale.cooldown.down",
            &sc.cooldown.down,
            0,
            (Duration::ZERO, DAY),
        ),
    };
    let stabilization = UpDown {
        up: d(
            "scale.stabilization.up",
            &sc.stabilization.up,
            0,
            (Duration::ZERO, DAY),
        ),
        down: d(
            "scale.stabilization.down",
            &sc.stabilization.down,
            300,
            (Duration::ZERO, DAY),
        ),
    };
    let stale_after = d("scale.stale_after", &sc.stale_after, 30, (SECOND, DAY));
    let min_age = d("scale_in.min_age", &si.min_age, 0, (Duration::ZERO, DAY));
    Timing {
        interval,
        cooldown,
        stabilization,
        stale_after,
        min_age,
    }
}

/// E2B's longest sandbox lifetime: a create asking for more is refused with a 400.
pub(super) const MAX_SANDBOX_TIMEOUT: Duration = DAY;

/// `sandbox`: how a new member is created.
fn check_sandbox(c: &mut Checker, ctx: &str, s: &RawSandbox) -> Option<SandboxSettings> {
    let before = c.diags.len();
    let timeout = s.timeout.as_ref().map(|_| {
        duration(
            c,
            ctx,
            "sandbox.timeout",
            &s.timeout,
            Duration::ZERO,
            (SECOND, MAX_SANDBOX_TIMEOUT),
        )
    });
    if c.diags.len() > before {
        return None;
    }
    Some(SandboxSettings {
        timeout,
        metadata: s.metadata.clone(),
        env_vars: s.env_vars.clone(),
        auto_pause: s.auto_pause,
    })
}

/// `min` and `max`, each in range, with `min <= max`.
fn check_pool_bounds(c: &mut Checker, ctx: &str, p: &RawPool) -> (Option<u32>, Option<u32>) {
    let min = count(c, ctx, "min", &p.min, (0, MAX_COUNT));
    let max = count(c, ctx, "max", &p.max, (1, MAX_COUNT));
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        c.at(
            p.min.referenced,
            format!("{ctx}: min {lo} is greater than max {hi}"),
        );
    }
    (min, max)
}

/// `scale.target`: target tracking on a pool expression.
fn check_target(c: &mut Checker, ctx: &str, t: &RawTarget) -> Option<Target> {
    let metric = c.expr(
        &t.metric,
        &POOL,
        Kind::Number,
        &format!("{ctx}: scale.target.metric"),
    );
    let saturated_src = t.saturated_when.clone().unwrap_or(Spanned {
        value: DEFAULT_SATURATED_WHEN.into(),
        referenced: t.metric.referenced,
        defined: t.metric.referenced,
    });
    let saturated_when = c.expr(
        &saturated_src,
        &POOL,
        Kind::Bool,
        &format!("{ctx}: scale.target.saturated_when"),
    );
    let mut ok = true;
    if !(t.value.value.is_finite() && t.value.value > 0.0) {
        ok = false;
        c.at(
            t.value.referenced,
            format!(
                "{ctx}: scale.target.value must be a number above 0, got {}",
                t.value.value
            ),
        );
    }
    if !(0.0..1.0).contains(&t.tolerance.value) {
        ok = false;
        c.at(
            t.tolerance.referenced,
            format!(
                "{ctx}: scale.target.tolerance must be from 0 to 1 (0.1 = ±10 %), got {}",
                t.tolerance.value
            ),
        );
    }
    let (metric, saturated_when) = metric.zip(saturated_when).filter(|_| ok)?;
    Some(Target {
        metric,
        value: t.value.value,
        tolerance: t.tolerance.value,
        saturated_when,
    })
}

/// `scale.steps`: each adds or removes a positive number of members when its condition holds.
fn check_steps(c: &mut Checker, ctx: &str, raw: &[RawStep]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let what = format!("{ctx}: scale.steps[{i}]");
        let change = match (&s.add, &s.remove) {
            (Some(a), None) => count(c, &what, "add", a, (1, MAX_COUNT)).map(i64::from),
            (None, Some(r)) => count(c, &what, "remove", r, (1, MAX_COUNT)).map(|n| -i64::from(n)),
            _ => {
                c.at(
                    s.when.referenced,
                    format!(
                        "{what}: give exactly one of `add: N` or `remove: N`, with N at least 1"
                    ),
                );
                None
            }
        };
        let when = c.expr(&s.when, &POOL, Kind::Bool, &format!("{what}.when"));
        if let (Some(when), Some(change)) = (when, change) {
            steps.push(Step { when, change });
        }
    }
    steps
}
