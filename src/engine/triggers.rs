//! Lifecycle triggers: match events, evaluate `when`, and act. Actions on sandboxes only ever
//! touch sandboxes owned by the trigger's pool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::pools::Prepared;
use super::{Action, AlertNotice, AlertStatus, Cause, Decision, Observations};
use crate::e2b::LifecycleEvent;
use crate::expr::{Bindings, Meta, Text};
use crate::rules::scopes::{EVENT, event as es};
use crate::rules::{POOL_KEY, RuleSet, TriggerAction};

pub(super) fn run(
    rules: &RuleSet,
    now: DateTime<Utc>,
    obs: &Observations<'_>,
    prepared: &Prepared<'_>,
    pending: &mut BTreeMap<String, u32>,
    out: &mut Vec<Decision>,
) {
    for ev in obs.events {
        let triggers: Vec<_> = rules
            .triggers
            .iter()
            .filter(|t| t.on == ev.event_type)
            .collect();
        if triggers.is_empty() {
            continue;
        }
        let meta_map = ev.metadata().cloned().unwrap_or_default();
        let owner = meta_map.get(POOL_KEY).cloned();
        let data = ev.event_data.as_ref();
        let exec = data.and_then(|d| d.execution.as_ref());
        let texts = [
            Text::new(ev.event_type.as_str()),
            Text::new(ev.kill_reason().unwrap_or("")),
            Text::new(ev.sandbox_template_id.as_deref().unwrap_or("")),
            Text::new(&ev.sandbox_id),
            Text::new(owner.as_deref().unwrap_or("")),
        ];
        let meta = Meta::new(&meta_map);
        let mut b = Bindings::new(&EVENT);
        b.set_text(es::TYPE, &texts[0]);
        b.set_text(es::KILL_REASON, &texts[1]);
        b.set_text(es::TEMPLATE, &texts[2]);
        b.set_text(es::SANDBOX_ID, &texts[3]);
        b.set_text(es::POOL, &texts[4]);
        b.set_num(
            es::EXECUTION_TIME_S,
            exec.and_then(|e| e.execution_time).unwrap_or(0) as f64 / 1000.0,
        );
        b.set_num(
            es::VCPU_COUNT,
            exec.and_then(|e| e.vcpu_count).unwrap_or(0) as f64,
        );
        b.set_num(
            es::MEMORY_MB,
            exec.and_then(|e| e.memory_mb).unwrap_or(0) as f64,
        );
        b.set_meta(&meta);
        for t in triggers {
            if let Some(p) = &t.pool
                && owner.as_deref() != Some(p.as_str())
            {
                continue;
            }
            if let Some(w) = &t.when
                && !w.eval_bool(&b).unwrap_or(false)
            {
                continue;
            }
            let what = describe(ev);
            let pool = t.pool.clone().unwrap_or_default();
            let action = match &t.action {
                TriggerAction::Alert => {
                    let message = t.message.render(&|n| match n {
                        "alert" | "rule" => Some(t.name.clone()),
                        "severity" => Some(t.severity.clone()),
                        "subject" => Some(ev.sandbox_id.clone()),
                        "value" => Some(String::new()),
                        other => b.render(other),
                    });
                    Action::Alert(AlertNotice {
                        alert: t.name.clone(),
                        subject: ev.sandbox_id.clone(),
                        status: AlertStatus::Firing,
                        repeat: false,
                        severity: t.severity.clone(),
                        labels: t.labels.clone(),
                        message,
                        notify: t.notify.clone(),
                        started_at: ev.timestamp,
                    })
                }
                TriggerAction::Replace => {
                    let Some(def) = rules.pool(&pool) else {
                        continue;
                    };
                    let members = prepared.by_pool.get(pool.as_str()).map_or(0, Vec::len) as u32;
                    let size = members + pending.get(&pool).copied().unwrap_or(0);
                    let (_, max, _) = super::pools::bounds(def, now);
                    if size >= max {
                        // The pool is full: a replacement would break max.
                        continue;
                    }
                    *pending.entry(pool.clone()).or_default() += 1;
                    Action::Create {
                        pool: pool.clone(),
                        count: 1,
                    }
                }
                TriggerAction::SetTimeout(d) => Action::SetTimeout {
                    pool: pool.clone(),
                    sandbox_id: ev.sandbox_id.clone(),
                    timeout_s: d.as_secs(),
                },
                TriggerAction::Kill => Action::Kill {
                    pool: pool.clone(),
                    sandbox_ids: vec![ev.sandbox_id.clone()],
                },
                TriggerAction::Pause => Action::Pause {
                    pool: pool.clone(),
                    sandbox_id: ev.sandbox_id.clone(),
                },
            };
            let dry_run = rules.pool(&pool).is_some_and(|p| p.dry_run);
            let verb = match &action {
                Action::Create { .. } => format!("create 1 in pool {pool}"),
                Action::Kill { .. } => format!("kill {}", ev.sandbox_id),
                Action::SetTimeout { timeout_s, .. } => {
                    format!("set the timeout of {} to {timeout_s}s", ev.sandbox_id)
                }
                Action::Pause { .. } => format!("pause {}", ev.sandbox_id),
                Action::Alert(_) => "alert".to_string(),
            };
            out.push(Decision {
                at: now,
                rule: t.name.clone(),
                action,
                dry_run,
                cause: Cause {
                    summary: format!("trigger {}: {what}: {verb}", t.name),
                    ..Cause::default()
                },
            });
        }
    }
}

fn describe(ev: &LifecycleEvent) -> String {
    let mut s = format!("{} of {}", ev.event_type, ev.sandbox_id);
    if let Some(r) = ev.kill_reason() {
        s.push_str(&format!(" (kill_reason {r})"));
    }
    s
}
