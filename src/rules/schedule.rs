//! Schedules: standard 5-field crontab in an IANA time zone. The only module that imports the
//! cron library (croner: Sunday is 0 or 7, day-of-month OR day-of-week, no seconds field).

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron line with its zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    pub(crate) text: String,
    pub(crate) tz: Tz,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

impl CronSchedule {
    /// Parses a 5-field crontab line and an IANA zone name.
    pub(crate) fn parse(line: &str, tz: &str) -> Result<CronSchedule, String> {
        let fields = line.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "cron {line:?} has {fields} fields; expected the 5 of standard crontab: minute hour day-of-month month day-of-week (e.g. \"0 8 * * 1-5\")"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(line)
            .map_err(|e| format!("invalid cron {line:?}: {e}"))?;
        let tz: Tz = tz.parse().map_err(|_| {
            format!("unknown time zone {tz:?}; expected an IANA name such as \"UTC\", \"Europe/Paris\" or \"America/New_York\"")
        })?;
        Ok(CronSchedule {
            cron,
            text: line.to_string(),
            tz,
        })
    }

    /// The latest fire time at or before `now`, looking back at most 400 days. `None` outside
    /// [`SCHEDULED_YEARS`]: near the ends of chrono's range a zone offset or a search would
    /// overflow (and panic inside the libraries).
    pub(crate) fn previous(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !SCHEDULED_YEARS.contains(&now.year()) {
            return None;
        }
        let local = now.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        let prev = prev.with_timezone(&Utc);
        (now - prev <= chrono::TimeDelta::days(400)).then_some(prev)
    }

    /// The next fire time strictly after `now`.
    pub(crate) fn next(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !SCHEDULED_YEARS.contains(&now.year()) {
            return None;
        }
        let local = now.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// The years in which schedules are evaluated; outside them no schedule applies.
pub(crate) const SCHEDULED_YEARS: std::ops::RangeInclusive<i32> = 1971..=9998;

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn weekday_mornings_in_paris() {
        let s = CronSchedule::parse("0 8 * * 1-5", "Europe/Paris").unwrap();
        // Friday 2026-11-27 12:00 UTC: the last fire was 07:00 UTC (08:00 CET) that day.
        assert_eq!(
            s.previous(utc("2026-11-27T12:00:00Z")),
            Some(utc("2026-11-27T07:00:00Z"))
        );
        // The next is Monday, not Saturday.
        assert_eq!(
            s.next(utc("2026-11-27T12:00:00Z")),
            Some(utc("2026-11-30T07:00:00Z"))
        );
        // In summer Paris is UTC+2.
        assert_eq!(
            s.next(utc("2026-07-01T00:00:00Z")),
            Some(utc("2026-07-01T06:00:00Z"))
        );
    }

    #[test]
    fn sunday_is_0_and_7_and_dom_or_dow() {
        let a = CronSchedule::parse("0 9 * * 0", "UTC").unwrap();
        let b = CronSchedule::parse("0 9 * * 7", "UTC").unwrap();
        let t = utc("2026-11-25T00:00:00Z"); // a Wednesday
        assert_eq!(a.next(t), Some(utc("2026-11-29T09:00:00Z")));
        assert_eq!(a.next(t), b.next(t));
        // Day 1 of the month OR a Monday: Monday 30th comes before December 1st.
        let c = CronSchedule::parse("0 0 1 * 1", "UTC").unwrap();
        assert_eq!(c.next(t), Some(utc("2026-11-30T00:00:00Z")));
    }

    #[test]
    fn rejects_bad_lines_and_zones() {
        assert!(
            CronSchedule::parse("0 0 8 * * 1-5", "UTC")
                .unwrap_err()
                .contains("6 fields")
        );
        assert!(CronSchedule::parse("61 * * * *", "UTC").is_err());
        assert!(
            CronSchedule::parse("0 8 * * 1-5", "Mars/Olympus")
                .unwrap_err()
                .contains("IANA")
        );
    }
}
