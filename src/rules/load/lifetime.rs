//! A pool's service fields: `idle` (the band of unclaimed running members), `claims` (leases
//! and what a release does), `keepalive` (extending members before E2B's timeout ends them),
//! `max_age` (rolling old members) and `warm` (a paused standby tier). Each is bounded here,
//! with the place, the rule and what would be valid; the pool's own checks are in
//! [`super::pools`].
//!
//! This module only checks: what the engine does with the fields is in `engine::pools`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::Checker;
use super::values::{DAY, MAX_COUNT, RawNumber, SECOND, WEEK, count, duration};
use crate::duration::HumanDuration;
use crate::rules::{ClaimSettings, IdleBand, KeepAlive, OnRelease, Warm};

const MINUTE: Duration = Duration::from_secs(60);

/// `idle: { min: N, max: M }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdle {
    min: Spanned<RawNumber>,
    max: Spanned<RawNumber>,
}

/// `claims: { on_release, lease, max_lease }` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClaims {
    #[serde(default)]
    on_release: Option<OnRelease>,
    #[serde(default)]
    lease: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    max_lease: Option<Spanned<HumanDuration>>,
}

/// `keepalive: { enabled, extend_to, before }`, or `keepalive: false` (or `true`) alone.
#[derive(Debug, Default)]
pub(super) struct RawKeepAlive {
    enabled: Option<bool>,
    extend_to: Option<Spanned<HumanDuration>>,
    before: Option<Spanned<HumanDuration>>,
}

/// The mapping form of [`RawKeepAlive`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeepAliveMap {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    extend_to: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    before: Option<Spanned<HumanDuration>>,
}

impl<'de> Deserialize<'de> for RawKeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawKeepAlive;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`false`, `true`, or a mapping { enabled, extend_to, before }")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawKeepAlive, E> {
                Ok(RawKeepAlive {
                    enabled: Some(v),
                    ..RawKeepAlive::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawKeepAlive, A::Error> {
                let m = RawKeepAliveMap::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawKeepAlive {
                    enabled: m.enabled,
                    extend_to: m.extend_to,
                    before: m.before,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `warm: { paused: N, after: 2m }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWarm {
    paused: Spanned<RawNumber>,
    #[serde(default)]
    after: Option<Spanned<HumanDuration>>,
}

/// The service fields of one pool as written.
pub(super) struct RawLifetime<'a> {
    pub idle: &'a Option<Spanned<RawIdle>>,
    pub claims: &'a RawClaims,
    pub keepalive: &'a Option<Spanned<RawKeepAlive>>,
    pub max_age: &'a Option<Spanned<HumanDuration>>,
    pub warm: &'a Option<Spanned<RawWarm>>,
}

/// The service fields, checked: every problem is reported, and `None` follows a diagnostic.
pub(super) struct Lifetime {
    pub idle: Option<IdleBand>,
    pub claims: ClaimSettings,
    pub keepalive: KeepAlive,
    pub max_age: Option<Duration>,
    pub warm: Option<Warm>,
}

/// The pool's facts the service fields are checked against.
pub(super) struct PoolFacts {
    pub max: Option<u32>,
    pub interval: Duration,
    pub has_timeout: bool,
    /// Where the pool is named: warnings about the whole pool point here.
    pub at: Location,
}

/// Checks every service field of one pool; `None` after a diagnostic.
pub(super) fn check_lifetime(
    c: &mut Checker,
    ctx: &str,
    raw: &RawLifetime<'_>,
    pool: &PoolFacts,
) -> Option<Lifetime> {
    let before = c.diags.len();
    let idle = raw
        .idle
        .as_ref()
        .and_then(|i| check_idle(c, ctx, i, pool.max));
    let claims = check_claims(c, ctx, raw.claims);
    let keepalive = check_keepalive(c, ctx, raw.keepalive, pool);
    let max_age = raw.max_age.as_ref().map(|_| {
        duration(
            c,
            ctx,
            "max_age",
            raw.max_age,
            DAY,
            (MIN_MAX_AGE, MAX_MAX_AGE),
        )
    });
    let warm = raw
        .warm
        .as_ref()
        .and_then(|w| check_warm(c, ctx, w, raw.idle.is_some()));
    (c.diags.len() == before).then_some(Lifetime {
        idle,
        claims,
        keepalive,
        max_age,
        warm,
    })
}

/// The shortest `max_age`: rolling more often than every 10 minutes would spend more on
/// creates than it saves.
pub(super) const MIN_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// The longest `max_age`: E2B's cap on a sandbox's life on Pro (Hobby's is 1 h).
pub(super) const MAX_MAX_AGE: Duration = DAY;

/// `idle`: `min <= max`, and `max` no more than the pool's `max`.
fn check_idle(
    c: &mut Checker,
    ctx: &str,
    raw: &Spanned<RawIdle>,
    pool_max: Option<u32>,
) -> Option<IdleBand> {
    let r = &raw.value;
    let min = count(c, ctx, "idle.min", &r.min, (0, MAX_COUNT));
    let max = count(c, ctx, "idle.max", &r.max, (0, MAX_COUNT));
    let (min, max) = min.zip(max)?;
    if min > max {
        c.at(
            r.min.referenced,
            format!("{ctx}: `idle.min` {min} is greater than `idle.max` {max}; give min <= max, such as `idle: {{ min: {max}, max: {min} }}`"),
        );
        return None;
    }
    if let Some(pmax) = pool_max
        && max > pmax
    {
        c.at(
            r.max.referenced,
            format!("{ctx}: `idle.max` {max} is greater than the pool's `max` {pmax}; the pool can never hold that many idle members: give at most {pmax}"),
        );
        return None;
    }
    Some(IdleBand { min, max })
}

/// The longest `claims.max_lease`: a week. E2B itself ends a sandbox within a day.
const MAX_MAX_LEASE: Duration = WEEK;

/// `claims`: `lease` from 1s to `max_lease` (default 10m), `max_lease` from 1s to 7d (default
/// 24h), `on_release` kill (default) or return.
fn check_claims(c: &mut Checker, ctx: &str, raw: &RawClaims) -> ClaimSettings {
    let d = ClaimSettings::default();
    let max_lease = duration(
        c,
        ctx,
        "claims.max_lease",
        &raw.max_lease,
        d.max_lease,
        (SECOND, MAX_MAX_LEASE),
    );
    let lease = duration(
        c,
        ctx,
        "claims.lease",
        &raw.lease,
        d.lease.min(max_lease),
        (SECOND, max_lease),
    );
    ClaimSettings {
        on_release: raw.on_release.unwrap_or(d.on_release),
        lease,
        max_lease,
    }
}

/// `keepalive`: `extend_to` from 1m to 24h (default 10m); `before` from 1s to less than
/// `extend_to` (default 2m, or half of `extend_to` when that is shorter). A keep-alive written
/// out must look further ahead than the pool's `scale.interval`, or a member can expire between
/// two evaluations; the default only warns.
fn check_keepalive(
    c: &mut Checker,
    ctx: &str,
    raw: &Option<Spanned<RawKeepAlive>>,
    pool: &PoolFacts,
) -> KeepAlive {
    let d = KeepAlive::default();
    let Some(raw) = raw else {
        warn_default_keepalive(c, ctx, pool, &d);
        return d;
    };
    let r = &raw.value;
    let enabled = r.enabled.unwrap_or(true);
    let extend_to = duration(
        c,
        ctx,
        "keepalive.extend_to",
        &r.extend_to,
        d.extend_to,
        (MINUTE, DAY),
    );
    let before = duration(
        c,
        ctx,
        "keepalive.before",
        &r.before,
        d.before.min(extend_to / 2),
        (SECOND, DAY),
    );
    let place = r.before.as_ref().map_or(raw.referenced, |b| b.referenced);
    if before >= extend_to {
        c.at(
            place,
            format!(
                "{ctx}: `keepalive.before` {} must be shorter than `keepalive.extend_to` {}: a member is extended when it has less than `before` left, to `extend_to` from now",
                humantime::format_duration(before),
                humantime::format_duration(extend_to)
            ),
        );
    } else if enabled && before <= pool.interval {
        c.at(
            place,
            format!(
                "{ctx}: `keepalive.before` {} must be longer than `scale.interval` {}, or a member can expire between two evaluations; such as `before: {}`",
                humantime::format_duration(before),
                humantime::format_duration(pool.interval),
                humantime::format_duration(pool.interval * 2)
            ),
        );
    }
    if !enabled && !pool.has_timeout {
        c.warn(
            raw.referenced,
            format!("{ctx}: keep-alive is off and `sandbox.timeout` is not set: members will die at E2B's default 5 min timeout; set `sandbox.timeout`, or remove `keepalive: false`"),
        );
    }
    KeepAlive {
        enabled,
        extend_to,
        before,
    }
}

/// The default keep-alive on a pool evaluated less often than it looks ahead: say so.
fn warn_default_keepalive(c: &mut Checker, ctx: &str, pool: &PoolFacts, d: &KeepAlive) {
    if d.before <= pool.interval {
        c.warn(
            pool.at,
            format!(
                "{ctx}: keep-alive looks {} ahead but the pool is evaluated every {}: members may expire between evaluations; set `keepalive: {{ before: {} }}`, or `sandbox.timeout`",
                humantime::format_duration(d.before),
                humantime::format_duration(pool.interval),
                humantime::format_duration(pool.interval * 2)
            ),
        );
    }
}

/// The longest `warm.after`.
const MAX_WARM_AFTER: Duration = Duration::from_secs(3600);

/// `warm`: beside `idle` only (it parks idle members beyond `idle.min`); `paused` from 1 to
/// 100000, `after` from 0s to 1h (default 2m).
fn check_warm(c: &mut Checker, ctx: &str, raw: &Spanned<RawWarm>, has_idle: bool) -> Option<Warm> {
    let before = c.diags.len();
    if !has_idle {
        c.at(
            raw.referenced,
            format!("{ctx}: `warm` parks idle members beyond `idle.min`, and this pool has no `idle`; add one, such as `idle: {{ min: 2, max: 5 }}`, or remove `warm`"),
        );
    }
    let r = &raw.value;
    let paused = count(c, ctx, "warm.paused", &r.paused, (1, MAX_COUNT));
    let after = duration(
        c,
        ctx,
        "warm.after",
        &r.after,
        2 * MINUTE,
        (Duration::ZERO, MAX_WARM_AFTER),
    );
    (c.diags.len() == before).then_some(Warm {
        paused: paused?,
        after,
    })
}
