//! Members that died of their E2B timeout while their pool wanted them: each one becomes a
//! [`Action::Note`] in the decision log, saying which pool lost which member and why it was not
//! kept alive, so an operator sees it where the pool's other decisions are.
//!
//! A member is told by the pool mark in the `killed` event's own metadata, so this needs no
//! memory of past observations. It only reads events; it never decides to act.

use chrono::{DateTime, Utc};

use super::{Action, Cause, Decision};
use crate::e2b::{EventType, LifecycleEvent};
use crate::rules::{POOL_KEY, Pool, RuleSet};

/// E2B's kill reason for a sandbox that reached its end.
const TIMEOUT: &str = "timeout";

/// One note per pool member the events say timed out.
pub(super) fn note(
    rules: &RuleSet,
    events: &[LifecycleEvent],
    now: DateTime<Utc>,
    out: &mut Vec<Decision>,
) {
    for ev in events {
        if ev.event_type != EventType::Killed || ev.kill_reason() != Some(TIMEOUT) {
            continue;
        }
        let Some(pool) = ev
            .metadata()
            .and_then(|m| m.get(POOL_KEY))
            .and_then(|name| rules.pool(name))
        else {
            continue;
        };
        out.push(Decision {
            at: now,
            rule: pool.name.clone(),
            action: Action::Note {
                pool: pool.name.clone(),
                sandbox_ids: vec![ev.sandbox_id.clone()],
            },
            dry_run: false,
            cause: Cause {
                summary: format!(
                    "pool {}: member {} expired at its E2B timeout ({}): {}",
                    pool.name,
                    ev.sandbox_id,
                    ev.timestamp.format("%H:%M:%S"),
                    why(pool)
                ),
                ..Cause::default()
            },
        });
    }
}

/// Why a member could expire, and what would keep the next one.
fn why(pool: &Pool) -> String {
    let timeout = pool
        .sandbox
        .timeout
        .map_or("E2B's default 5m".to_string(), |t| {
            humantime::format_duration(t).to_string()
        });
    if pool.keepalive.enabled {
        format!(
            "keep-alive is on but did not reach it in time (E2B unreachable, or an evaluation later than keepalive.before {}); its timeout was {timeout}",
            humantime::format_duration(pool.keepalive.before)
        )
    } else {
        format!(
            "keep-alive is off and its timeout was {timeout}; turn keepalive on or set a longer sandbox.timeout"
        )
    }
}
