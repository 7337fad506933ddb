//! The predict step (`scale.predict`): remember the demand the target tracks, forecast it
//! `horizon` ahead, and in `forecast_and_scale` mode raise the recommendation to the size the
//! forecast needs, AWS predictive scaling's `max(reactive, forecast)`. It never lowers a
//! recommendation and so never scales in; in `forecast_only` mode it only records what it would
//! have asked. Without enough fresh, finite history there is no forecast at all: a pool never
//! moves on a forecast of bad data.
//!
//! Demand is in members: `running * metric / target`, the proportional recommendation before
//! its ceiling, so the forecast size is `ceil(forecast demand)` with the same target ratio. It
//! counts the running members, not creates in flight: an average over the members that report
//! times a size that includes creates would read the forecast's own growth as more demand.

use chrono::{DateTime, TimeDelta, Utc};

use super::Account;
use crate::engine::{DemandPoint, PoolState};
use crate::expr::{Bindings, format_number};
use crate::rules::{Pool, Predict, PredictMethod, PredictMode};

/// The most points a pool's history keeps: wider windows are downsampled to fit.
const MAX_POINTS: u32 = 1440;
/// The fewest points a trend is fitted on.
const MIN_POINTS: usize = 5;
/// Holt's smoothing of the level and of the slope.
const ALPHA: f64 = 0.5;
const BETA: f64 = 0.3;

/// Remembers this evaluation's demand and returns the recommendation the forecast allows:
/// `raw`, or in `forecast_and_scale` mode the forecast size when it is larger.
pub(super) fn predict(
    pool: &Pool,
    st: &mut PoolState,
    now: DateTime<Utc>,
    pb: &Bindings<'_>,
    running: u32,
    raw: u32,
    acc: &mut Account,
) -> u32 {
    let Some(p) = &pool.predict else {
        st.demand.clear();
        return raw;
    };
    let spacing = spacing(pool, p);
    if !acc.hold
        && let Some(d) = demand(pool, pb, running)
    {
        remember(st, now, d, spacing);
    }
    prune(st, now, window(p), spacing);
    let Some(demand) = forecast(pool, p, &st.demand, now, spacing) else {
        return raw;
    };
    let size = demand.ceil().min(f64::from(u32::MAX)) as u32;
    acc.cause.values.insert("forecast".into(), f64::from(size));
    acc.cause.values.insert("forecast_demand".into(), demand);
    if size <= raw {
        return raw;
    }
    let said = format!(
        "{} of demand says {} at +{} ({} members)",
        method_name(p.method),
        format_number(demand),
        humantime::format_duration(p.horizon),
        size
    );
    match p.mode {
        // A pool holding on missing or non-finite data does not move, forecast or not: the
        // forecast's history may be sound, but what the pool is serving now is not known.
        PredictMode::ForecastAndScale if acc.hold => {
            acc.reasons.push(format!(
                "forecast (not applied while holding): {said}, would raise {raw} -> {size}"
            ));
            raw
        }
        PredictMode::ForecastAndScale => {
            acc.reasons
                .push(format!("forecast: {said}, floor {raw} -> {size}"));
            size
        }
        PredictMode::ForecastOnly => {
            acc.reasons.push(format!(
                "forecast (forecast_only, not applied): {said}, would raise {raw} -> {size}"
            ));
            raw
        }
    }
}

fn method_name(m: PredictMethod) -> &'static str {
    match m {
        PredictMethod::Trend => "trend",
        PredictMethod::Seasonal => "seasonal",
    }
}

/// The target's demand in members, `running * metric / target`, when it is a finite number >= 0.
fn demand(pool: &Pool, pb: &Bindings<'_>, running: u32) -> Option<f64> {
    let t = pool.target.as_ref()?;
    let v = t.metric.eval_f64(pb).ok()?;
    let d = f64::from(running) * v / t.value;
    (d.is_finite() && d >= 0.0).then_some(d)
}

/// How far back the history reaches: the lookback, and for a seasonal forecast a whole season.
fn window(p: &Predict) -> TimeDelta {
    TimeDelta::from_std(keep(p)).unwrap_or(TimeDelta::MAX)
}

fn keep(p: &Predict) -> std::time::Duration {
    p.season.map_or(p.lookback, |s| s.max(p.lookback))
}

/// The least time between two remembered points: one per evaluation, or fewer when the
/// window would otherwise hold more than [`MAX_POINTS`].
fn spacing(pool: &Pool, p: &Predict) -> TimeDelta {
    let every = pool.interval.max(keep(p) / MAX_POINTS);
    TimeDelta::from_std(every).unwrap_or(TimeDelta::MAX)
}

/// Appends a point unless the last one is more recent than `spacing`.
fn remember(st: &mut PoolState, now: DateTime<Utc>, value: f64, spacing: TimeDelta) {
    let due = st.demand.back().is_none_or(|last| now - last.at >= spacing);
    if due {
        st.demand.push_back(DemandPoint { at: now, value });
    }
}

/// Drops points older than the window (and any beyond the cap, oldest first).
fn prune(st: &mut PoolState, now: DateTime<Utc>, window: TimeDelta, spacing: TimeDelta) {
    let oldest = now - window - spacing;
    while st.demand.front().is_some_and(|p| p.at < oldest) {
        st.demand.pop_front();
    }
    while st.demand.len() > MAX_POINTS as usize + 2 {
        st.demand.pop_front();
    }
}

/// The demand at `now + horizon`, or `None` without enough fresh, finite history.
fn forecast(
    pool: &Pool,
    p: &Predict,
    history: &std::collections::VecDeque<DemandPoint>,
    now: DateTime<Utc>,
    spacing: TimeDelta,
) -> Option<f64> {
    let newest = history.back()?;
    let fresh = TimeDelta::from_std(pool.stale_after).unwrap_or(TimeDelta::MAX) + spacing;
    if now - newest.at > fresh {
        return None;
    }
    let horizon = TimeDelta::from_std(p.horizon).ok()?;
    let f = match (p.method, p.season) {
        (PredictMethod::Seasonal, Some(season)) => {
            let then = now + horizon - TimeDelta::from_std(season).ok()?;
            seasonal_naive(history, then, spacing)?
        }
        _ => {
            let from = now - TimeDelta::from_std(p.lookback).ok()?;
            let points: Vec<DemandPoint> =
                history.iter().copied().filter(|q| q.at >= from).collect();
            holt(&points, now + horizon)?
        }
    };
    f.is_finite().then_some(f.max(0.0))
}

/// Holt's linear trend over `points` (oldest first, possibly unevenly spaced), extrapolated to
/// `at`; `None` with fewer than [`MIN_POINTS`].
fn holt(points: &[DemandPoint], at: DateTime<Utc>) -> Option<f64> {
    if points.len() < MIN_POINTS {
        return None;
    }
    let secs = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds() as f64 / 1000.0;
    let (first, second) = (points[0], points[1]);
    let mut level = first.value;
    let mut slope = (second.value - first.value) / secs(first.at, second.at).max(1e-3);
    for w in points.windows(2) {
        let dt = secs(w[0].at, w[1].at).max(1e-3);
        let prev = level;
        level = ALPHA * w[1].value + (1.0 - ALPHA) * (level + slope * dt);
        slope = BETA * (level - prev) / dt + (1.0 - BETA) * slope;
    }
    let last = points[points.len() - 1].at;
    Some(level + slope * secs(last, at))
}

/// The demand one season before the forecast time: the point nearest `then`, if one lies
/// within `spacing` of it.
fn seasonal_naive(
    history: &std::collections::VecDeque<DemandPoint>,
    then: DateTime<Utc>,
    spacing: TimeDelta,
) -> Option<f64> {
    history
        .iter()
        .min_by_key(|q| (q.at - then).abs())
        .filter(|q| (q.at - then).abs() <= spacing)
        .map(|q| q.value)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn series(f: impl Fn(i64) -> f64, every: i64, n: i64) -> VecDeque<DemandPoint> {
        (0..n)
            .map(|i| DemandPoint {
                at: t(i * every),
                value: f(i * every),
            })
            .collect()
    }

    #[test]
    fn holt_on_a_linear_ramp_forecasts_the_ramp_ahead() {
        // 10 members plus one every 30 s; the last point is at 285 s.
        let h: Vec<DemandPoint> = series(|s| 10.0 + s as f64 / 30.0, 15, 20).into();
        let f = holt(&h, t(285 + 120)).unwrap();
        assert!((f - (10.0 + 405.0 / 30.0)).abs() < 1e-9, "{f}");
    }

    #[test]
    fn holt_needs_five_points() {
        let h: Vec<DemandPoint> = series(|s| s as f64, 15, 4).into();
        assert_eq!(holt(&h, t(200)), None);
    }

    #[test]
    fn seasonal_naive_reads_one_season_back_or_nothing() {
        // A day of one point a minute: demand = the minute of the day.
        let h = series(|s| (s / 60) as f64, 60, 1440);
        let m = TimeDelta::minutes(1);
        assert_eq!(seasonal_naive(&h, t(600), m), Some(10.0));
        assert_eq!(seasonal_naive(&h, t(-3600), m), None, "before the history");
    }
}
