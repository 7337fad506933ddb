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
//!
//! [`run`] reads as the process's steps: [`connect`] to E2B, load the rules, [`open_webhooks`],
//! [`open_agent`] (resuming from the state dir), publish its [`Status`] and start the server,
//! then [`Process::turns`] until shutdown (each turn published by the one
//! [`Publisher`]), and [`Process::shut_down`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::settings::{API_KEY, WEBHOOK_SECRET};
use super::config::{Config, secret};
use super::control::{Agent, AgentOptions, TickReport};
use super::dedup::{Dedup, Limits};
use super::health::Health;
use super::http::accept::{self, ServeLimits};
use super::http::metrics::ApiMetrics;
use super::http::webhooks::{self, Delivered, WebhookConfig, WebhookStats};
use super::http::{self, ServerState};
use super::status::{Publisher, Status};
use super::systemd::Watchdog;
use crate::e2b::{ClientConfig, E2bApi, HttpClient};
use crate::notify::{Dispatcher, NotifyConfig};
use crate::rules::{self, RuleSet};

/// How long in-flight work may take after a shutdown request.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long one turn of work (a tick, a webhook reaction) may take before it is cut off and
/// counted as a failed observation. Well above a turn that retries E2B's slow answers.
pub(crate) const TURN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs the agent until `shutdown` completes. `reload` requests a rule reload (SIGHUP).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()>,
    reload: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let e2b = connect(&cfg)?;
    let rules =
        Arc::new(load_rules(&cfg.rules).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))?);
    let (dispatcher, _workers) = Dispatcher::start(&rules.notifiers, NotifyConfig::default());
    let dedup = Arc::new(Mutex::new(Dedup::with_limits(Limits {
        ids: cfg.limits.seen_ids,
        bytes: cfg.limits.seen_bytes,
    })));
    let webhook_stats = Arc::new(WebhookStats::default());
    let wake = Arc::new(Notify::new());
    let receiver = open_webhooks(&cfg, e2b.api.as_ref(), &dedup, &webhook_stats, &wake).await?;
    let (receiver, webhook_rx) = receiver.unzip();
    let agent = open_agent(&cfg, e2b.api, &rules, dispatcher.clone(), webhook_rx, dedup)?;

    let health = Health::new(cfg.poll.metrics.0, TURN_DEADLINE);
    let status = Arc::new(Status::new(health, cfg.dry_run, agent.recent.clone()));
    let publisher = Publisher::new(status.clone());
    publisher.dry_run_pools(&rules);
    let mut app = http::router(ServerState {
        status,
        api: e2b.metrics,
        webhooks: webhook_stats,
        notify: Some(dispatcher),
    });
    if let Some(receiver) = receiver {
        app = app.merge(receiver);
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, api = %e2b.url, pools = rules.pools.len(), dry_run = cfg.dry_run, "poolpilot running");
    let server = Server::start(listener, app, &cfg);

    let mut process = Process {
        cfg: &cfg,
        agent,
        publisher,
        watchdog: Watchdog::from_env(),
        rule_files: RuleFiles::look(&cfg.rules),
    };
    process.turns(shutdown, reload, &wake).await;
    process.shut_down().await;
    server.stop().await;
    Ok(())
}

/// The E2B client, and what it tells `/metrics` about its requests.
struct E2b {
    api: Arc<dyn E2bApi>,
    metrics: Arc<ApiMetrics>,
    url: String,
}

/// The E2B client, with the API key and create pacing from the config.
fn connect(cfg: &Config) -> anyhow::Result<E2b> {
    let key = secret(cfg.api.key_file.as_deref(), API_KEY.credential, API_KEY.env)?;
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
    let metrics = Arc::new(ApiMetrics::default());
    client_cfg.observer = Some(metrics.clone());
    let api: Arc<dyn E2bApi> = Arc::new(HttpClient::new(client_cfg)?);
    Ok(E2b { api, metrics, url })
}

fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, String> {
    rules::load_paths(paths).map_err(|d| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// When webhooks are configured: the receiver's router (merged into the server's) and
/// the queue the agent takes deliveries from; `wake` is notified on each one. Registers the
/// webhook with E2B when a public URL is set.
async fn open_webhooks(
    cfg: &Config,
    api: &dyn E2bApi,
    dedup: &Arc<Mutex<Dedup>>,
    stats: &Arc<WebhookStats>,
    wake: &Arc<Notify>,
) -> anyhow::Result<Option<(axum::Router, mpsc::Receiver<Delivered>)>> {
    let Some(w) = &cfg.webhook else {
        return Ok(None);
    };
    let secret = secret(
        w.secret_file.as_deref(),
        WEBHOOK_SECRET.credential,
        WEBHOOK_SECRET.env,
    )?;
    let (tx, rx) = mpsc::channel(10_000);
    let mut hook_cfg = WebhookConfig::new(secret.clone());
    hook_cfg.body_timeout = cfg.limits.body_timeout.0;
    let router = webhooks::router_with_wake(
        hook_cfg,
        tx,
        dedup.clone(),
        stats.clone(),
        Some(wake.clone()),
    );
    if let Some(public) = &w.public_url {
        // A failed registration is not fatal: polling still backfills every event.
        if let Err(e) = super::register::register_webhook(api, &w.name, public, &secret).await {
            tracing::error!(error = %e, url = %public, "webhook registration failed; relying on event polling");
        }
    }
    Ok(Some((router, rx)))
}

/// The control loop, resumed from the state dir.
fn open_agent(
    cfg: &Config,
    api: Arc<dyn E2bApi>,
    rules: &Arc<RuleSet>,
    dispatcher: Dispatcher,
    webhooks: Option<mpsc::Receiver<Delivered>>,
    dedup: Arc<Mutex<Dedup>>,
) -> anyhow::Result<Agent> {
    Agent::new(
        api,
        rules.clone(),
        AgentOptions {
            dispatcher: Some(dispatcher),
            webhooks,
            dedup,
            events_every: cfg.poll.events.0,
            dry_run: cfg.dry_run,
            state_dir: Some(cfg.state_dir.clone()),
        },
    )
    .with_context(|| format!("cannot use state dir {}", cfg.state_dir.display()))
}

/// The HTTP server, running in its own task.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves the HTTP endpoints under the configured limits, after making sure the open files
    /// limit leaves room for them.
    fn start(listener: tokio::net::TcpListener, app: axum::Router, cfg: &Config) -> Server {
        let limits = ServeLimits {
            max_connections: cfg.limits.max_connections,
            header_timeout: cfg.limits.header_timeout.0,
        };
        // The agent's own descriptors: the listener, E2B and notifier clients, state files, logs.
        const OWN_FDS: u64 = 128;
        if let Some(soft) = accept::raise_fd_limit()
            && (limits.max_connections as u64).saturating_add(OWN_FDS) > soft
        {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_files_limit = soft,
                "limits.max_connections leaves too few descriptors for the agent's own work; lower it or raise LimitNOFILE"
            );
        }
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(accept::serve(listener, app, limits, async {
            let _ = stop_rx.await;
        }));
        Server { stop, task }
    }

    /// Stops the server, giving open requests a few seconds.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The running process between turns.
struct Process<'a> {
    cfg: &'a Config,
    agent: Agent,
    /// The one writer of the [`Status`] the server shows.
    publisher: Publisher,
    watchdog: Watchdog,
    rule_files: RuleFiles,
}

impl Process<'_> {
    /// The turn loop until `shutdown`: ticks on the metrics interval, reacts to webhooks as
    /// `wake` says they arrive, reloads the rules on request and when their files change.
    async fn turns(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut reload: mpsc::Receiver<()>,
        wake: &Notify,
    ) {
        let every = self.cfg.poll.metrics.0.max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => self.tick().await,
                _ = wake.notified() => self.react().await,
                Some(()) = reload.recv() => {
                    self.reload();
                    self.rule_files = RuleFiles::look(&self.cfg.rules);
                }
                _ = watch.tick() => {
                    if self.rule_files.changed_and_settled(&self.cfg.rules) {
                        tracing::info!("rule files changed; reloading");
                        self.reload();
                    }
                }
            }
            // Whatever the turn did, the loop is alive.
            self.watchdog.beat();
        }
    }

    /// One tick under [`TURN_DEADLINE`], published.
    async fn tick(&mut self) {
        let (now, started) = (Utc::now(), std::time::Instant::now());
        let report = bounded(self.agent.tick(now), &mut self.watchdog)
            .await
            .unwrap_or_else(cut_off);
        self.publisher
            .tick(&self.agent, &report, started.elapsed(), now);
    }

    /// Reacts to the webhook deliveries waiting, under [`TURN_DEADLINE`], published.
    async fn react(&mut self) {
        let report = bounded(self.agent.react(Utc::now()), &mut self.watchdog).await;
        if report.is_none() {
            tracing::error!(
                deadline_s = TURN_DEADLINE.as_secs(),
                "a webhook reaction did not finish in time; cut off"
            );
        }
        self.publisher.turn(&self.agent, report.as_ref());
    }

    /// Reloads the rules, all or nothing, telling systemd around it.
    fn reload(&mut self) {
        super::systemd::reloading();
        let outcome = load_rules(&self.cfg.rules);
        super::systemd::ready(if outcome.is_ok() {
            "rules reloaded"
        } else {
            "rule reload failed; previous rules in force"
        });
        match outcome {
            Ok(set) => {
                let set = Arc::new(set);
                self.agent.set_rules(set.clone());
                // Published once the agent has them: a reader that sees the count sees them.
                self.publisher.reloaded(&set);
                tracing::info!("rules reloaded");
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!("{line}");
                }
                tracing::error!("rule reload failed; the previous rules stay in force");
                self.publisher.reload_failed(e);
            }
        }
    }

    /// Tells systemd, lets the creates in flight finish within [`SHUTDOWN_DEADLINE`], and
    /// saves state.
    async fn shut_down(mut self) {
        super::systemd::stopping();
        tracing::info!("shutting down: finishing in-flight creates, saving state");
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.agent.settle())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight creates did not finish within {}s",
                SHUTDOWN_DEADLINE.as_secs()
            );
        }
        self.agent.persist();
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
pub(crate) fn cut_off() -> TickReport {
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

/// What the rule files look like: paths, sizes and modification times.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
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

/// The rule files as last loaded and as last seen, so that a change is reloaded once it has
/// settled: two equal looks (a second apart) that differ from what was loaded.
struct RuleFiles {
    loaded: Fingerprint,
    last_look: Fingerprint,
}

impl RuleFiles {
    /// The files as they are now, taken as loaded.
    fn look(paths: &[PathBuf]) -> RuleFiles {
        let loaded = fingerprint(paths);
        RuleFiles {
            last_look: loaded.clone(),
            loaded,
        }
    }

    /// Looks again: true when the files differ from those loaded and look as they did a look
    /// ago, in which case they count as loaded from now on.
    fn changed_and_settled(&mut self, paths: &[PathBuf]) -> bool {
        let now = fingerprint(paths);
        let settled = now != self.loaded && now == self.last_look;
        if settled {
            self.loaded = now.clone();
        }
        self.last_look = now;
        settled
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
}
