//! `/metrics`, in Prometheus text format: one named step per group of metric families, in
//! the order they are written. Names follow the Prometheus naming guidelines: base units
//! (`_seconds`, `_bytes`), `_total` on counters, and one family per quantity, so that no
//! label mixes values that must not be summed (docs/config.md lists every family, and the
//! names they replaced). Request durations are in [`super::http_metrics`], the process
//! families in [`super::process_metrics`].
//!
//! Counters whose labels are known up front (actions by kind and result, ticks, reloads,
//! webhook outcomes, each notifier's results) are written from the start at 0, so that
//! Prometheus's `increase()` sees their first rise. Only reads: what it shows comes from the
//! [`Status`] the loop publishes and from the counters of the client, receiver and notifiers.

use crate::sync::lock;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ServerState;
pub(crate) use super::http_metrics::ApiMetrics;
use super::webhooks::WebhookReport;
use crate::agent::budget::BudgetReport;
use crate::agent::status::Status;
use crate::engine::{AlertPhase, EngineState};
use crate::notify::Dispatcher;

/// Action kinds of `poolpilot_actions_total`, written at 0 from the start.
pub(crate) const ACTION_KINDS: [&str; 7] = [
    "create",
    "kill",
    "set_timeout",
    "pause",
    "keepalive",
    "note",
    "notify",
];
/// Action results of `poolpilot_actions_total`, written at 0 from the start.
pub(crate) const ACTION_RESULTS: [&str; 4] = ["ok", "failed", "refused", "dry_run"];

/// Writes a metric family's `# HELP` and `# TYPE` lines.
pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(super) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub(super) async fn metrics(State(s): State<ServerState>) -> Response {
    let out = render(&s);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Every metric family, in order.
fn render(s: &ServerState) -> String {
    let st = &s.status;
    let mut out = String::new();
    render_build_and_up(&mut out, st);
    let engine = lock(&st.engine).clone();
    render_pool_sizes(&mut out, st, &engine);
    render_dry_run(&mut out, st, &engine);
    render_actions(&mut out, &lock(&st.actions));
    render_alerts_firing(&mut out, &engine);
    render_budget(&mut out, &s.budget.report(), &engine);
    render_loop(&mut out, st);
    render_webhooks(&mut out, &s.webhooks.report());
    if let Some(d) = &s.notify {
        render_notifications(&mut out, d);
    }
    s.api.render(&mut out);
    if let Some(c) = &s.claims {
        super::claim_metrics::render(&mut out, c);
    }
    if let Some(h) = &s.history {
        render_history(&mut out, h.history.stats());
    }
    super::process_metrics::render(&mut out);
    out
}

/// `poolpilot_history_records_total` by result, and the rows retention removed.
fn render_history(out: &mut String, stats: &crate::store::Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    family(
        out,
        "poolpilot_history_records_total",
        "counter",
        "Records for the history store: written, dropped (its queue was full) or failed (the database refused their batch).",
    );
    for (result, n) in [
        ("written", &stats.written),
        ("dropped", &stats.dropped),
        ("failed", &stats.failed),
    ] {
        let _ = writeln!(
            out,
            "poolpilot_history_records_total{{result=\"{result}\"}} {}",
            n.load(Relaxed)
        );
    }
    family(
        out,
        "poolpilot_history_rows_expired_total",
        "counter",
        "Rows the history store's retention removed.",
    );
    let _ = writeln!(
        out,
        "poolpilot_history_rows_expired_total {}",
        stats.expired.load(Relaxed)
    );
}

/// `poolpilot_build_info` and `poolpilot_up` (what `/readyz` says, now).
fn render_build_and_up(out: &mut String, st: &Status) {
    family(
        out,
        "poolpilot_build_info",
        "gauge",
        "Always 1; the labels say which build runs.",
    );
    let _ = writeln!(
        out,
        "poolpilot_build_info{{version=\"{}\"}} 1",
        esc(env!("CARGO_PKG_VERSION"))
    );
    family(
        out,
        "poolpilot_up",
        "gauge",
        "1 while the agent can see E2B (what /readyz says), 0 otherwise.",
    );
    let ready = lock(&st.health).readiness(chrono::Utc::now()).ready;
    let _ = writeln!(out, "poolpilot_up {}", u8::from(ready));
    render_role(out, st);
}

/// `poolpilot_leader` and `poolpilot_leader_generation`: with a PostgreSQL store, whether
/// this replica leads and with which generation (a single agent always leads, generation 0).
fn render_role(out: &mut String, st: &Status) {
    let (leading, generation) = match &*lock(&st.role) {
        Some(crate::agent::leader::Role::Leader { generation }) => (1, *generation),
        Some(_) => (0, 0),
        None => (1, 0),
    };
    family(
        out,
        "poolpilot_leader",
        "gauge",
        "1 while this replica leads (evaluates and acts), 0 while it stands by or cannot reach the store.",
    );
    let _ = writeln!(out, "poolpilot_leader {leading}");
    family(
        out,
        "poolpilot_leader_generation",
        "gauge",
        "The lease generation this replica leads with (the fencing token); 0 for a single agent or a standby.",
    );
    let _ = writeln!(out, "poolpilot_leader_generation {generation}");
}

/// The size gauges of each pool, one family per quantity since desired, actual and the
/// bounds must not be summed: desired, min and max from the last decision (once there is
/// one), actual and pending always.
fn render_pool_sizes(out: &mut String, st: &Status, engine: &EngineState) {
    let actual = lock(&st.actual).clone();
    let pending = lock(&st.pending).clone();
    let decided = |get: fn(&crate::engine::PoolStatus) -> u32| -> Vec<(&str, u64)> {
        let pools = engine.pools.iter();
        pools
            .filter_map(|(pool, p)| Some((pool.as_str(), u64::from(get(p.status.as_ref()?)))))
            .collect()
    };
    let observed = |sizes: &BTreeMap<String, u32>| -> Vec<(&str, u64)> {
        let size = |pool: &String| u64::from(sizes.get(pool).copied().unwrap_or(0));
        engine.pools.keys().map(|p| (p.as_str(), size(p))).collect()
    };
    let families = [
        (
            "poolpilot_pool_desired_sandboxes",
            "Members the pool's last decision wants.",
            decided(|s| s.desired),
        ),
        (
            "poolpilot_pool_min_sandboxes",
            "The pool's lower bound, as the last decision applied it.",
            decided(|s| s.min),
        ),
        (
            "poolpilot_pool_max_sandboxes",
            "The pool's upper bound, as the last decision applied it.",
            decided(|s| s.max),
        ),
        (
            "poolpilot_pool_actual_sandboxes",
            "Running members of the pool, as last observed.",
            observed(&actual),
        ),
        (
            "poolpilot_pool_pending_sandboxes",
            "Creates for the pool in flight, not yet observed.",
            observed(&pending),
        ),
    ];
    for (name, help, values) in families {
        pool_gauge(out, name, help, values);
    }
}

/// A gauge family `name` with one series per pool.
pub(super) fn pool_gauge<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) {
    family(out, name, "gauge", help);
    for (pool, v) in values {
        let _ = writeln!(out, "{name}{{pool=\"{}\"}} {v}", esc(pool));
    }
}

/// `poolpilot_dry_run` per pool: 1 when nothing is changed for it (the agent or the pool in
/// dry run), so that alerts on pool sizes can leave it out.
fn render_dry_run(out: &mut String, st: &Status, engine: &EngineState) {
    family(
        out,
        "poolpilot_dry_run",
        "gauge",
        "1 for a pool in dry run (the agent's or its own): decisions are logged, not carried out.",
    );
    let all = st.dry_run.load(Ordering::Relaxed);
    let pools = lock(&st.dry_run_pools);
    for name in engine.pools.keys() {
        let on = all || pools.contains(name);
        let _ = writeln!(
            out,
            "poolpilot_dry_run{{pool=\"{}\"}} {}",
            esc(name),
            u8::from(on)
        );
    }
}

/// `poolpilot_actions_total`: every known kind and result from the start, then any other.
fn render_actions(out: &mut String, actions: &BTreeMap<(String, String), u64>) {
    family(
        out,
        "poolpilot_actions_total",
        "counter",
        "Actions by kind and result.",
    );
    let mut keys: BTreeSet<(String, String)> = ACTION_KINDS
        .iter()
        .flat_map(|k| {
            ACTION_RESULTS
                .iter()
                .map(|r| (k.to_string(), r.to_string()))
        })
        .collect();
    keys.extend(actions.keys().cloned());
    for key in &keys {
        let n = actions.get(key).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "poolpilot_actions_total{{kind=\"{}\",result=\"{}\"}} {n}",
            esc(&key.0),
            esc(&key.1)
        );
    }
}

/// `poolpilot_team_sandboxes` by state and `poolpilot_team_max_sandboxes` (the cap), and per pool
/// `poolpilot_pool_circuit_open` and `poolpilot_create_failures_total`, from the start at 0
/// for every pool.
fn render_budget(out: &mut String, b: &BudgetReport, engine: &EngineState) {
    family(
        out,
        "poolpilot_team_sandboxes",
        "gauge",
        "The team's sandboxes that count against its cap, by state: running (observed), creating and resuming (in flight).",
    );
    for (state, v) in [
        ("running", b.running),
        ("creating", b.creating),
        ("resuming", b.resuming),
    ] {
        let _ = writeln!(out, "poolpilot_team_sandboxes{{state=\"{state}\"}} {v}");
    }
    family(
        out,
        "poolpilot_team_max_sandboxes",
        "gauge",
        "The team's cap on concurrent sandboxes (absent without one).",
    );
    if let Some(cap) = b.cap {
        let _ = writeln!(out, "poolpilot_team_max_sandboxes {cap}");
    }
    let pools: BTreeSet<&String> = engine.pools.keys().chain(b.pools.keys()).collect();
    let state = |p: &String| b.pools.get(p).copied().unwrap_or_default();
    family(
        out,
        "poolpilot_pool_circuit_open",
        "gauge",
        "1 while the pool's creates are stopped after repeated failures (the PoolCreatesFailing alert).",
    );
    for p in &pools {
        let open = u8::from(state(p).0);
        let _ = writeln!(
            out,
            "poolpilot_pool_circuit_open{{pool=\"{}\"}} {open}",
            esc(p)
        );
    }
    family(
        out,
        "poolpilot_create_failures_total",
        "counter",
        "Creates that failed, per pool, each counted once after the client's retries.",
    );
    for p in &pools {
        let n = state(p).1;
        let _ = writeln!(
            out,
            "poolpilot_create_failures_total{{pool=\"{}\"}} {n}",
            esc(p)
        );
    }
}

/// `poolpilot_alerts_firing`: the instances of each alert now firing.
fn render_alerts_firing(out: &mut String, engine: &EngineState) {
    family(
        out,
        "poolpilot_alerts_firing",
        "gauge",
        "Alert instances firing, by alert.",
    );
    for (name, subjects) in &engine.alerts {
        let firing = subjects
            .values()
            .filter(|a| a.phase == AlertPhase::Firing)
            .count();
        let _ = writeln!(
            out,
            "poolpilot_alerts_firing{{alert=\"{}\"}} {firing}",
            esc(name)
        );
    }
}

/// The loop itself: `poolpilot_ticks_total`, `poolpilot_loop_turn_duration_seconds` and
/// `poolpilot_rule_reloads_total`.
fn render_loop(out: &mut String, st: &Status) {
    family(
        out,
        "poolpilot_ticks_total",
        "counter",
        "Control loop turns, and those whose observation failed.",
    );
    for (result, n) in [("ok", &st.ticks), ("failed", &st.tick_failures)] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(out, "poolpilot_ticks_total{{result=\"{result}\"}} {n}");
    }
    family(
        out,
        "poolpilot_loop_turn_duration_seconds",
        "histogram",
        "Duration of each control loop tick (observe, evaluate, act), E2B calls included.",
    );
    lock(&st.turn_durations).write(out, "poolpilot_loop_turn_duration_seconds", "");
    family(
        out,
        "poolpilot_rule_reloads_total",
        "counter",
        "Rule reloads by result.",
    );
    for (result, n) in [("ok", &st.reloads), ("failed", &st.reload_failures)] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "poolpilot_rule_reloads_total{{result=\"{result}\"}} {n}"
        );
    }
}

/// `poolpilot_webhook_deliveries_total`: every outcome, from 0.
fn render_webhooks(out: &mut String, w: &WebhookReport) {
    family(
        out,
        "poolpilot_webhook_deliveries_total",
        "counter",
        "Webhook deliveries by outcome.",
    );
    for (k, v) in w.outcomes() {
        let _ = writeln!(
            out,
            "poolpilot_webhook_deliveries_total{{outcome=\"{k}\"}} {v}"
        );
    }
}

/// `poolpilot_notifications_total`: each notifier's results, from 0.
fn render_notifications(out: &mut String, d: &Dispatcher) {
    family(
        out,
        "poolpilot_notifications_total",
        "counter",
        "Notifications by notifier and result.",
    );
    for (name, n) in d.stats() {
        let name = esc(&name);
        for (k, v) in [
            ("sent", n.sent),
            ("failed", n.failed),
            ("retried", n.retries),
            ("resent", n.resent),
            ("queue_full", n.queue_full),
        ] {
            let _ = writeln!(
                out,
                "poolpilot_notifications_total{{notifier=\"{name}\",result=\"{k}\"}} {v}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pools_breaker_and_failures_are_written_from_zero() {
        let mut engine = EngineState::default();
        engine.pools.insert("quiet".into(), Default::default());
        let report = BudgetReport {
            cap: Some(20),
            running: 7,
            pools: [("busy".to_string(), (true, 5))].into(),
            ..BudgetReport::default()
        };
        let mut out = String::new();
        render_budget(&mut out, &report, &engine);
        for line in [
            "poolpilot_team_sandboxes{state=\"running\"} 7",
            "poolpilot_team_max_sandboxes 20",
            "poolpilot_pool_circuit_open{pool=\"busy\"} 1",
            "poolpilot_pool_circuit_open{pool=\"quiet\"} 0",
            "poolpilot_create_failures_total{pool=\"busy\"} 5",
            "poolpilot_create_failures_total{pool=\"quiet\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn every_known_action_series_is_there_from_the_start() {
        let mut out = String::new();
        render_actions(&mut out, &BTreeMap::new());
        let zeros = out.lines().filter(|l| l.ends_with("} 0")).count();
        assert_eq!(zeros, ACTION_KINDS.len() * ACTION_RESULTS.len(), "{out}");
        assert!(out.contains("poolpilot_actions_total{kind=\"create\",result=\"failed\"} 0"));
    }

    #[test]
    fn counted_and_unknown_actions_are_written_with_their_counts() {
        let mut out = String::new();
        let counted = BTreeMap::from([
            (("create".to_string(), "failed".to_string()), 35),
            (("replace".to_string(), "ok".to_string()), 1),
        ]);
        render_actions(&mut out, &counted);
        assert!(out.contains("poolpilot_actions_total{kind=\"create\",result=\"failed\"} 35"));
        assert!(out.contains("poolpilot_actions_total{kind=\"replace\",result=\"ok\"} 1"));
        assert!(out.contains("poolpilot_actions_total{kind=\"create\",result=\"ok\"} 0"));
    }
}
