//! `poolpilot run`: the long-running agent. Builds the client, notifiers, webhook receiver and
//! control loop from the config; serves the HTTP endpoints; ticks on the metrics interval;
//! reloads rules on request (SIGHUP) and when a rule file changes; shuts down gracefully.
//!
//! Reload is all or nothing: a rule set with any error keeps the old one running, logs every
//! error as `file:line:col`, and raises `poolpilot_rule_reloads_total{result="failed"}`. The
//! watcher polls the rule folders' listings and modification times, so editors that replace a
//! file by rename are seen, and waits for two equal looks (about a second apart) before
//! reloading, so a half-written file is not taken.
//!
//! Health bookkeeping: every turn's observation, success or failure, goes to the
//! [`super::health::Health`] behind `/readyz` and `poolpilot_up`. Each turn of work (a tick,
//! a webhook reaction) has a deadline ([`TURN_DEADLINE`]), and the systemd watchdog is fed on
//! every loop turn and while a turn runs, whatever its outcome: the watchdog says the loop is
//! alive, readiness says whether it can see E2B.

use crate::sync::lock;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::mpsc;

use super::config::{Config, secret};
use super::control::{Agent, AgentOptions, TickReport};
use super::dedup::{Dedup, Limits};
use super::health::Health;
use super::serve::{self, ServeLimits};
use super::server::{self, ServerState, Status};
use super::systemd::Watchdog;
use super::webhooks::{self, WebhookConfig, WebhookStats};
use crate::e2b::{ClientConfig, E2bApi, HttpClient};
use crate::notify::{Dispatcher, NotifyConfig};
use crate::rules::{self, RuleSet};

/// How long in-flight work may take after a shutdown request.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long one turn of work (a tick, a webhook reaction) may take before it is cut off and
/// counted as a failed observation. Well above a turn that retries E2B's slow answers.
pub const TURN_DEADLINE: Duration = Duration::from_secs(120);

fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, String> {
    rules::load_paths(paths).map_err(|d| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// What the rule files look like now: paths, sizes and modification times.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    for p in paths {
        for f in rules::rule_files_in(p).unwrap_or_default() {
            if rules::is_test_file(&f) {
                continue;
            }
            let meta = std::fs::metadata(&f).ok();
            out.push((
                f,
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            ));
        }
    }
    out
}

/// Runs the agent until `shutdown` completes. `reload` requests a rule reload (SIGHUP).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let key = secret(cfg.api.key_file.as_deref(), "e2b-api-key", "E2B_API_KEY")?;
    // Config::load and config::resolve fill both; a Config built in code may leave them out.
    let url = cfg
        .api
        .url
        .clone()
        .unwrap_or_else(|| crate::e2b::client::DEFAULT_API_URL.to_string());
    let mut client_cfg = ClientConfig::new(url.clone(), key);
    client_cfg.create_rate = Some(
        cfg.api
            .create_rate
            .unwrap_or(super::config::DEFAULT_CREATE_RATE),
    );
    let api_metrics = Arc::new(server::ApiMetrics::default());
    client_cfg.observer = Some(api_metrics.clone());
    let api: Arc<dyn E2bApi> = Arc::new(HttpClient::new(client_cfg)?);
    let rules =
        Arc::new(load_rules(&cfg.rules).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))?);

    let (dispatcher, _workers) = Dispatcher::start(&rules.notifiers, NotifyConfig::default());
    let dedup = Arc::new(Mutex::new(Dedup::with_limits(Limits {
        ids: cfg.limits.seen_ids,
        bytes: cfg.limits.seen_bytes,
    })));
    let webhook_stats = Arc::new(WebhookStats::default());
    let status = Arc::new(Status::default());
    *lock(&status.health) = Health::new(cfg.poll.metrics.0, TURN_DEADLINE);
    status.dry_run.store(cfg.dry_run, Ordering::Relaxed);
    set_dry_run_pools(&status, &rules);
    let mut app = server::router(ServerState {
        status: status.clone(),
        api: api_metrics,
        webhooks: webhook_stats.clone(),
        notify: Some(dispatcher.clone()),
    });
    let mut webhook_rx = None;
    let wake = Arc::new(tokio::sync::Notify::new());
    if let Some(w) = &cfg.webhook {
        let secret = secret(
            w.secret_file.as_deref(),
            "webhook-secret",
            "POOLPILOT_WEBHOOK_SECRET",
        )?;
        let (tx, rx) = mpsc::channel(10_000);
        let mut hook_cfg = WebhookConfig::new(secret.clone());
        hook_cfg.body_timeout = cfg.limits.body_timeout.0;
        app = app.merge(webhooks::router_with_wake(
            hook_cfg,
            tx,
            dedup.clone(),
            webhook_stats.clone(),
            Some(wake.clone()),
        ));
        webhook_rx = Some(rx);
        if let Some(public) = &w.public_url {
            // A failed registration is not fatal: polling still backfills every event.
            if let Err(e) =
                super::register::register_webhook(api.as_ref(), &w.name, public, &secret).await
            {
                tracing::error!(error = %e, url = %public, "webhook registration failed; relying on event polling");
            }
        }
    }
    let mut agent = Agent::new(
        api,
        rules.clone(),
        AgentOptions {
            dispatcher: Some(dispatcher),
            webhooks: webhook_rx,
            dedup,
            events_every: cfg.poll.events.0,
            dry_run: cfg.dry_run,
            state_dir: Some(cfg.state_dir.clone()),
        },
    )
    .with_context(|| format!("cannot use state dir {}", cfg.state_dir.display()))?;
    *lock(&status.recent) = agent.recent.clone();

    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, api = %url, pools = rules.pools.len(), dry_run = cfg.dry_run, "poolpilot running");
    let (stop_tx, server) = start_server(listener, app, &cfg);

    let mut tick = tokio::time::interval(cfg.poll.metrics.0.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    let mut watchdog = Watchdog::from_env();
    let mut announced = false;
    let mut seeing = false;
    let mut loaded = fingerprint(&cfg.rules);
    let mut last_look = loaded.clone();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let (now, started) = (Utc::now(), std::time::Instant::now());
                let report = bounded(agent.tick(now), &mut watchdog)
                    .await
                    .unwrap_or_else(cut_off);
                *lock(&status.last_tick_seconds) = started.elapsed().as_secs_f64();
                record_observation(&status, report.error.as_deref(), now, &mut seeing);
                if report.error.is_none() {
                    if !announced {
                        announced = true;
                        super::systemd::ready(&format!("first poll done: {} sandboxes observed", report.observed));
                    }
                    *lock(&status.actual) = report.actual.clone();
                }
                *lock(&status.engine) = agent.engine().state().clone();
                *lock(&status.pending) = agent.pending();
                count_actions(&status, &report);
            }
            _ = wake.notified() => {
                match bounded(agent.react(Utc::now()), &mut watchdog).await {
                    Some(report) => count_actions(&status, &report),
                    None => tracing::error!(deadline_s = TURN_DEADLINE.as_secs(), "a webhook reaction did not finish in time; cut off"),
                }
                *lock(&status.engine) = agent.engine().state().clone();
                *lock(&status.pending) = agent.pending();
            }
            Some(()) = reload.recv() => {
                reload_rules(&cfg, &mut agent, &status);
                loaded = fingerprint(&cfg.rules);
                last_look = loaded.clone();
            }
            _ = watch.tick() => {
                let now = fingerprint(&cfg.rules);
                if now != loaded && now == last_look {
                    tracing::info!("rule files changed; reloading");
                    reload_rules(&cfg, &mut agent, &status);
                    loaded = now.clone();
                }
                last_look = now;
            }
        }
        // Whatever the turn did, the loop is alive.
        watchdog.beat();
    }
    super::systemd::stopping();
    tracing::info!("shutting down: finishing in-flight creates, saving state");
    if tokio::time::timeout(SHUTDOWN_DEADLINE, agent.settle())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight creates did not finish within {}s",
            SHUTDOWN_DEADLINE.as_secs()
        );
    }
    agent.persist();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// Counts the actions whose outcome a turn learnt, by kind and result.
fn count_actions(status: &Status, report: &crate::agent::control::TickReport) {
    let mut actions = lock(&status.actions);
    for (kind, result) in &report.actions {
        *actions
            .entry((kind.to_string(), result.as_str().to_string()))
            .or_default() += 1;
    }
}

/// Runs one turn of work under [`TURN_DEADLINE`], feeding the watchdog while it runs: the
/// loop is alive while it waits on something bounded. None when the deadline passed; the work
/// is then dropped where it stood.
async fn bounded<T>(work: impl Future<Output = T>, watchdog: &mut Watchdog) -> Option<T> {
    let work = tokio::time::timeout(TURN_DEADLINE, work);
    tokio::pin!(work);
    let Some(every) = watchdog.every() else {
        return work.await.ok();
    };
    let mut beat = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            r = &mut work => return r.ok(),
            _ = beat.tick() => watchdog.beat(),
        }
    }
}

/// The report of a tick cut off at [`TURN_DEADLINE`]: a failed observation.
fn cut_off() -> TickReport {
    let error = format!(
        "the turn did not finish within {}s and was cut off",
        TURN_DEADLINE.as_secs()
    );
    tracing::error!("{error}");
    TickReport {
        error: Some(error),
        ..TickReport::default()
    }
}

/// Counts a tick's observation and feeds readiness; says so in the log and to systemd when
/// the agent stops, or starts again, seeing E2B.
fn record_observation(
    status: &Status,
    error: Option<&str>,
    at: chrono::DateTime<Utc>,
    seeing: &mut bool,
) {
    let readiness = {
        let mut health = lock(&status.health);
        match error {
            Some(e) => {
                status.tick_failures.fetch_add(1, Ordering::Relaxed);
                health.failed(e);
            }
            None => {
                status.ticks.fetch_add(1, Ordering::Relaxed);
                health.observed(at);
            }
        }
        health.readiness(at)
    };
    if readiness.ready != *seeing {
        *seeing = readiness.ready;
        if readiness.ready {
            tracing::info!("{}; ready", readiness.reason);
        } else {
            tracing::error!("{}; not ready", readiness.reason);
        }
        super::systemd::status(&readiness.reason);
    }
}

/// Tells the metrics which pools have their own `dry_run: true`.
fn set_dry_run_pools(status: &Status, rules: &RuleSet) {
    *lock(&status.dry_run_pools) = rules
        .pools
        .iter()
        .filter(|p| p.dry_run)
        .map(|p| p.name.clone())
        .collect();
}

/// Serves the HTTP endpoints under the configured limits, after making sure the open files
/// limit leaves room for them; the sender stops the server.
fn start_server(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cfg: &Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let limits = ServeLimits {
        max_connections: cfg.limits.max_connections,
        header_timeout: cfg.limits.header_timeout.0,
    };
    // The agent's own descriptors: the listener, E2B and notifier clients, state files, logs.
    const OWN_FDS: u64 = 128;
    if let Some(soft) = serve::raise_fd_limit()
        && (limits.max_connections as u64).saturating_add(OWN_FDS) > soft
    {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files_limit = soft,
            "limits.max_connections leaves too few descriptors for the agent's own work; lower it or raise LimitNOFILE"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::serve(listener, app, limits, async {
        let _ = stop_rx.await;
    }));
    (stop_tx, server)
}

fn reload_rules(cfg: &Config, agent: &mut Agent, status: &Status) {
    super::systemd::reloading();
    let outcome = load_rules(&cfg.rules);
    super::systemd::ready(if outcome.is_ok() {
        "rules reloaded"
    } else {
        "rule reload failed; previous rules in force"
    });
    match outcome {
        Ok(set) => {
            set_dry_run_pools(status, &set);
            agent.set_rules(Arc::new(set));
            status.reloads.fetch_add(1, Ordering::Relaxed);
            *lock(&status.last_reload_error) = None;
            tracing::info!("rules reloaded");
        }
        Err(e) => {
            status.reload_failures.fetch_add(1, Ordering::Relaxed);
            for line in e.lines() {
                tracing::error!("{line}");
            }
            tracing::error!("rule reload failed; the previous rules stay in force");
            *lock(&status.last_reload_error) = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_hangs_is_cut_off_at_the_deadline_and_the_watchdog_beats_meanwhile() {
        let mut dog = Watchdog::with_period(Some(Duration::from_secs(10)));
        let start = tokio::time::Instant::now();
        let out = bounded(std::future::pending::<()>(), &mut dog).await;
        assert_eq!(out, None);
        assert_eq!(start.elapsed(), TURN_DEADLINE);
        // One at the start, then one every 10 s until the deadline ends the turn.
        assert_eq!(dog.sent(), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_finishes_gives_its_result() {
        let mut dog = Watchdog::with_period(None);
        let out = bounded(async { 7 }, &mut dog).await;
        assert_eq!((out, dog.sent()), (Some(7), 0));
    }

    #[test]
    fn a_cut_off_turn_and_a_failed_poll_count_against_readiness() {
        let status = Status::default();
        *lock(&status.health) = Health::new(Duration::from_secs(5), TURN_DEADLINE);
        let mut seeing = false;
        let t0 = Utc::now();
        record_observation(&status, None, t0, &mut seeing);
        assert!(seeing);
        for _ in 0..2 {
            record_observation(&status, cut_off().error.as_deref(), t0, &mut seeing);
        }
        assert!(seeing, "two failures are a blip");
        record_observation(&status, Some("HTTP 503"), t0, &mut seeing);
        assert!(!seeing);
        assert_eq!(status.tick_failures.load(Ordering::Relaxed), 3);
        assert_eq!(status.ticks.load(Ordering::Relaxed), 1);
        let r = lock(&status.health).readiness(t0);
        assert!(r.reason.contains("HTTP 503"), "{r:?}");
    }
}
