//! The `alerts` section: alerting rules over sandboxes, pools or the team, with their timing
//! (`for`, `keep_firing_for`, `repeat_interval`), message and destinations.
//!
//! An alert's expression and message are checked in the scope it is evaluated in, so an alert
//! that loads can never name a variable its scope lacks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::messages::{check_labels, check_template};
use super::values::{MONTH, SECOND, WEEK, duration};
use super::{Checker, Names, check_refs};
use crate::duration::HumanDuration;
use crate::expr::{Kind, Scope};
use crate::rules::scopes::{POOL, SANDBOX, TEAM};
use crate::rules::{Alert, AlertScope};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    pub(super) name: Spanned<String>,
    scope: AlertScope,
    #[serde(default)]
    pool: Option<Spanned<String>>,
    when: Spanned<String>,
    #[serde(default, rename = "for")]
    for_: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<Spanned<String>>,
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    repeat_interval: Option<Spanned<HumanDuration>>,
}

/// An alert, or `None` after reporting every problem it has.
pub(super) fn check_alert(c: &mut Checker, a: &RawAlert, names: &Names) -> Option<Alert> {
    let ctx = format!("alert {:?}", a.name.value);
    let before = c.diags.len();
    let scope = scope_of(a.scope);
    if a.scope == AlertScope::Team && a.pool.is_some() {
        c.at(
            a.name.referenced,
            format!("{ctx}: a team alert covers every pool; remove `pool`"),
        );
    }
    check_refs(c, &ctx, &a.pool, &a.notify, names);
    let when = c.expr(&a.when, scope, Kind::Bool, &format!("{ctx}: when"));
    let message = check_template(
        c,
        &ctx,
        &a.message,
        "{alert} is firing for {subject}",
        scope,
    );
    let timing = check_timing(c, &ctx, a);
    let (severity, labels) = check_labels(c, &ctx, &a.name, &a.severity, &a.labels);
    if c.diags.len() > before {
        return None;
    }
    Some(Alert {
        name: a.name.value.clone(),
        scope: a.scope,
        pool: a.pool.as_ref().map(|p| p.value.clone()),
        when: when?,
        for_: timing.for_,
        keep_firing_for: timing.keep_firing_for,
        severity,
        labels,
        message: message?,
        notify: a.notify.iter().map(|n| n.value.clone()).collect(),
        repeat_interval: timing.repeat_interval,
    })
}

/// The variables an alert of this scope may use.
fn scope_of(scope: AlertScope) -> &'static Scope {
    match scope {
        AlertScope::Sandbox => &SANDBOX,
        AlertScope::Pool => &POOL,
        AlertScope::Team => &TEAM,
    }
}

/// An alert's durations, each defaulted and bounded.
struct Timing {
    for_: Duration,
    keep_firing_for: Duration,
    repeat_interval: Duration,
}

fn check_timing(c: &mut Checker, ctx: &str, a: &RawAlert) -> Timing {
    let repeat_interval = duration(
        c,
        ctx,
        "repeat_interval",
        &a.repeat_interval,
        Duration::from_secs(4 * 3600),
        (SECOND, MONTH),
    );
    let for_ = duration(
        c,
        ctx,
        "for",
        &a.for_,
        Duration::ZERO,
        (Duration::ZERO, WEEK),
    );
    let keep_firing_for = duration(
        c,
        ctx,
        "keep_firing_for",
        &a.keep_firing_for,
        Duration::ZERO,
        (Duration::ZERO, WEEK),
    );
    Timing {
        for_,
        keep_firing_for,
        repeat_interval,
    }
}
