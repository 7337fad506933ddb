//! Bounded values of the rule language: counts and durations are read loosely from YAML (any
//! number, any duration text) and checked here against their field's range, so that an error
//! names the field, the value and what would be valid, at `file:line:col`. Also turns
//! serde-saphyr's parse errors into messages written for rule authors.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Checker;
use crate::duration::HumanDuration;

/// A number as written in YAML, before its field's range is checked.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RawNumber {
    Int(i128),
    Float(f64),
    Other(String),
}

impl fmt::Display for RawNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawNumber::Int(i) => write!(f, "{i}"),
            RawNumber::Float(x) => write!(f, "{x}"),
            RawNumber::Other(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(v))
            }
            fn visit_u128<E>(self, v: u128) -> Result<RawNumber, E> {
                Ok(RawNumber::Int(i128::try_from(v).unwrap_or(i128::MAX)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawNumber, E> {
                Ok(RawNumber::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawNumber, E> {
                Ok(RawNumber::Other(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawNumber, E> {
                Ok(RawNumber::Other(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<RawNumber, E> {
                Ok(RawNumber::Other("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The largest pool bound or step accepted: far above any E2B concurrency limit, far below
/// where arithmetic on sizes could overflow.
pub(super) const MAX_COUNT: u32 = 100_000;

/// A count field checked against `lo..=hi`; `None` (after a diagnostic) when out of range.
pub(super) fn count(
    c: &mut Checker,
    ctx: &str,
    field: &str,
    n: &Spanned<RawNumber>,
    (lo, hi): (u32, u32),
) -> Option<u32> {
    let ok = match &n.value {
        RawNumber::Int(i) => u32::try_from(*i).ok().filter(|v| (lo..=hi).contains(v)),
        RawNumber::Float(f) if f.fract() == 0.0 && *f >= lo as f64 && *f <= hi as f64 => {
            Some(*f as u32)
        }
        _ => None,
    };
    if ok.is_none() {
        c.at(
            n.referenced,
            format!(
                "{ctx}: `{field}` is {}; it must be a whole number from {lo} to {hi}",
                n.value
            ),
        );
    }
    ok
}

/// An optional count: absent is `Some(None)`, invalid is `None`.
pub(super) fn opt_count(
    c: &mut Checker,
    ctx: &str,
    field: &str,
    n: &Option<Spanned<RawNumber>>,
    range: (u32, u32),
) -> Option<Option<u32>> {
    match n {
        None => Some(None),
        Some(n) => count(c, ctx, field, n, range).map(Some),
    }
}

pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);
pub(super) const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
pub(super) const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration field: its default when absent, its value when within `lo..=hi`, else a
/// diagnostic naming the field, the value and the range (and the default is returned, so that
/// checking goes on; the rule is rejected by the diagnostic).
pub(super) fn duration(
    c: &mut Checker,
    ctx: &str,
    field: &str,
    d: &Option<Spanned<HumanDuration>>,
    default: Duration,
    (lo, hi): (Duration, Duration),
) -> Duration {
    let Some(d) = d else {
        return default;
    };
    let v = d.value.0;
    if v < lo || v > hi {
        c.at(
            d.referenced,
            format!(
                "{ctx}: `{field}` is {}; it must be from {} to {}",
                d.value,
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
        );
        return default;
    }
    v
}

/// A YAML parse error as a sentence for rule authors: without the position (the diagnostic
/// carries it), and without serde-saphyr's advice to its own API users.
pub(crate) fn yaml_message(e: &serde_saphyr::Error, text: &str) -> String {
    if let serde_saphyr::Error::DuplicateMappingKey { key, location } = e.without_snippet() {
        let first = key
            .as_deref()
            .and_then(|k| first_definition(text, k, location.line()))
            .map(|line| format!(" (first at line {line})"))
            .unwrap_or_default();
        return match key {
            Some(k) => format!("key `{k}` is defined twice in the same mapping{first}; keep one"),
            None => "a key is defined twice in the same mapping; keep one".to_string(),
        };
    }
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML").trim();
    strip_position(first).to_string()
}

/// `error: line 3 column 10: message` -> `message`.
fn strip_position(msg: &str) -> &str {
    let m = msg.strip_prefix("error: ").unwrap_or(msg);
    match m
        .strip_prefix("line ")
        .and_then(|rest| rest.find(": ").map(|i| &rest[i + 2..]))
    {
        Some(rest) => rest,
        None => m,
    }
}

/// The first line, at or before `dup_line`, where `key:` is written (block or flow style).
fn first_definition(text: &str, key: &str, dup_line: u64) -> Option<u64> {
    let patterns = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    text.lines()
        .enumerate()
        .take(usize::try_from(dup_line).unwrap_or(usize::MAX))
        .find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            patterns.iter().any(|p| {
                t.starts_with(p.as_str())
                    || l.contains(&format!("{{ {p}"))
                    || l.contains(&format!(", {p}"))
                    || l.contains(&format!("{{{p}"))
            })
        })
        .map(|(i, _)| i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stripped_once() {
        assert_eq!(
            strip_position("error: line 2 column 21: invalid u32"),
            "invalid u32"
        );
        assert_eq!(strip_position("unknown field"), "unknown field");
        assert_eq!(
            first_definition("a: 1\nb:\n  c: 2\nb: 3\n", "b", 4),
            Some(2)
        );
        assert_eq!(first_definition("x: { a: 1, a: 2 }\n", "a", 1), Some(1));
    }
}
