//! A pool's `schedules`: cron times (in a time zone) from which a pool's bounds change until
//! another schedule fires. The cron line itself is parsed by [`CronSchedule`] (the only user of
//! croner); here a schedule's bounds are checked against the pool's own, so that a schedule can
//! never make `min` exceed `max`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Checker;
use super::values::{MAX_COUNT, RawNumber, opt_count};
use crate::rules::{CronSchedule, Schedule};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    #[serde(default)]
    name: Option<String>,
    cron: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    min: Option<Spanned<RawNumber>>,
    #[serde(default)]
    max: Option<Spanned<RawNumber>>,
}

/// The schedules of a pool; `bounds` are its (min, max), when those are valid.
pub(super) fn check_schedules(
    c: &mut Checker,
    ctx: &str,
    raw: &[RawSchedule],
    bounds: Option<(u32, u32)>,
) -> Vec<Schedule> {
    let mut schedules = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let what = format!("{ctx}: schedules[{i}]");
        let tz = s
            .timezone
            .as_ref()
            .map(|t| t.value.as_str())
            .unwrap_or("UTC");
        let cron = match CronSchedule::parse(&s.cron.value, tz) {
            Ok(cron) => cron,
            Err(e) => {
                let loc = match (&s.timezone, e.contains("time zone")) {
                    (Some(t), true) => t.referenced,
                    _ => s.cron.referenced,
                };
                c.at(loc, format!("{what}: {e}"));
                continue;
            }
        };
        if s.min.is_none() && s.max.is_none() {
            c.at(
                s.cron.referenced,
                format!("{what}: set `min`, `max` or both"),
            );
        }
        let min = opt_count(c, &what, "min", &s.min, (0, MAX_COUNT));
        let max = opt_count(c, &what, "max", &s.max, (1, MAX_COUNT));
        let (Some(min), Some(max), Some((pmin, pmax))) = (min, max, bounds) else {
            continue;
        };
        let (emin, emax) = (min.unwrap_or(pmin), max.unwrap_or(pmax));
        if emin > emax {
            let loc = s
                .min
                .as_ref()
                .map(|m| m.referenced)
                .unwrap_or(s.cron.referenced);
            c.at(
                loc,
                format!("{what}: min {emin} would be greater than max {emax}"),
            );
        }
        schedules.push(Schedule {
            name: s.name.clone().unwrap_or_else(|| format!("schedules[{i}]")),
            cron,
            min,
            max,
        });
    }
    schedules
}
