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
//! Time: every turn's `now` and the webhook receiver's clock come from one [`AgentClock`]. It
//! is the wall clock, unless `speed` is N != 1 (only for running against `poolpilot emulator
//! --speed N`): it then reads the emulator's virtual now once at start and runs N times
//! faster from there, and the loop ticks N times as often, so the agent keeps step with the
//! emulator. Against anything but the emulator such a speed refuses to start.
//!
//! [`run`] reads as the process's steps: [`connect`] to E2B, [`start_clock`], load the rules, [`open_webhooks`],
//! [`open_agent`] (resuming from the state dir), publish its [`Status`] and start the server,
//! then [`Process::turns`] until shutdown (each turn published by the one
//! [`Publisher`]), and [`Process::shut_down`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::settings::{API_KEY, API_TOKEN, STORE_PASSWORD, WEBHOOK_SECRET};
use super::config::{Config, optional_secret, secret};
use super::control::{Agent, AgentOptions, TickReport};
use super::dedup::{Dedup, Limits};
use super::health::Health;
use super::http::accept::{self, ServeLimits};
use super::http::metrics::ApiMetrics;
use super::http::webhooks::{self, Delivered, WebhookConfig, WebhookStats};
use super::http::{self, ServerState};
use super::leader::Leadership;
use super::status::{Publisher, Status};
use super::systemd::Watchdog;
use crate::e2b::{ClientConfig, E2bApi, HttpClient};
use crate::notify::{Dispatcher, NotifyConfig};
use crate::rules::{self, RuleSet};
use crate::store::claims::ClaimStore;
use crate::store::lease::{LEADER, Lease};
use crate::store::shared::Shared;

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
    let clock = start_clock(&cfg, &e2b.url).await?;
    let rules =
        Arc::new(load_rules(&cfg.rules).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))?);
    let (dispatcher, _workers) = Dispatcher::start(&rules.notifiers, NotifyConfig::default());
    let dedup = Arc::new(Mutex::new(Dedup::with_limits(Limits {
        ids: cfg.limits.seen_ids,
        bytes: cfg.limits.seen_bytes,
    })));
    let webhook_stats = Arc::new(WebhookStats::default());
    let wake = Arc::new(Notify::new());
    let receiver = open_webhooks(&cfg, e2b.api.as_ref(), &dedup, &webhook_stats, &wake, clock);
    let receiver = receiver.await?;
    let (receiver, webhook_rx) = receiver.unzip();
    let mut agent = open_agent(
        &cfg,
        e2b.api,
        &rules,
        dispatcher.clone(),
        webhook_rx,
        dedup,
        clock,
    )?;
    let history = open_history(&cfg, clock).await?;
    agent.keep_history(history.history.clone());
    let (leadership, forward) = share(&cfg, &mut agent, &history.history).await?.unzip();

    let health = Health::new(clock.wall_span(cfg.poll.metrics.0), TURN_DEADLINE);
    let status = Arc::new(Status::new(health, cfg.dry_run, agent.recent.clone()));
    let publisher = Publisher::new(status.clone());
    publisher.dry_run_pools(&rules);
    let mut app = http::router(ServerState {
        status,
        api: e2b.metrics.clone(),
        webhooks: webhook_stats,
        notify: Some(dispatcher),
        claims: Some(agent.claims()),
        budget: agent.budget(),
        history: Some(history),
    });
    if let Some(receiver) = receiver {
        app = app.merge(receiver);
    }
    app = app.merge(claims_api(&cfg, &agent, forward)?);
    let app = http::timed(app, &e2b.metrics);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, api = %e2b.url, pools = rules.pools.len(), dry_run = cfg.dry_run, speed = cfg.speed, "poolpilot running");
    let server = Server::start(listener, app, &cfg);

    let mut process = Process {
        cfg: &cfg,
        agent,
        clock,
        publisher,
        watchdog: Watchdog::from_env(),
        rule_files: RuleFiles::look(&cfg.rules),
        last_starved: None,
        leadership,
    };
    process.turns(shutdown, reload, &wake).await;
    process.publisher.closing();
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

/// The E2B client, with the API key and create pacing from the config. At `speed` N the
/// pacing is N times faster in wall time: the plan's rate in the emulator's virtual time.
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
            .unwrap_or(super::config::DEFAULT_CREATE_RATE)
            * cfg.speed,
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
/// webhook with E2B when a public URL is set. The receiver judges event timestamps by the
/// agent's `clock`.
async fn open_webhooks(
    cfg: &Config,
    api: &dyn E2bApi,
    dedup: &Arc<Mutex<Dedup>>,
    stats: &Arc<WebhookStats>,
    wake: &Arc<Notify>,
    clock: AgentClock,
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
    hook_cfg.clock = Arc::new(move || clock.now());
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

/// The claims API, guarded by the API token when there is one; without one it is served on
/// loopback only (and refused, with a warning, elsewhere). With `forward` (replicas sharing
/// a store), a standby forwards it to the leader.
fn claims_api(
    cfg: &Config,
    agent: &Agent,
    forward: Option<http::claims::Forward>,
) -> anyhow::Result<axum::Router> {
    let token = optional_secret(
        cfg.token_file.as_deref(),
        API_TOKEN.credential,
        API_TOKEN.env,
    )?;
    let access = http::claims::Access::new(&cfg.listen, token);
    if let http::claims::Access::Refused(why) = &access {
        tracing::warn!(listen = %cfg.listen, "{why}");
    }
    Ok(http::claims::router(http::claims::ClaimsState {
        claims: agent.claims(),
        access,
        forward,
    }))
}

/// The store: `store` (PostgreSQL, shared by replicas) or `history.db` in the state dir;
/// migrated, with its writer running.
async fn open_history(
    cfg: &Config,
    clock: AgentClock,
) -> anyhow::Result<http::history::HistoryApi> {
    let retention = crate::store::Retention {
        history: cfg.history.retention.0,
        samples: cfg.history.samples.0,
    };
    let clock: crate::store::Clock = Arc::new(move || clock.now());
    let history = match &cfg.store {
        Some(url) => {
            let url = store_url(url, cfg)?;
            crate::store::History::open(&url, retention, clock.clone()).await?
        }
        None => crate::store::History::open_in(&cfg.state_dir, retention, clock.clone()).await?,
    };
    Ok(http::history::HistoryApi { history, clock })
}

/// The store's URL with its password, read from `store_password_file`, the credential or
/// the variable (never from the config or a command line).
pub(crate) fn store_url(url: &str, cfg: &Config) -> anyhow::Result<String> {
    let password = optional_secret(
        cfg.store_password_file.as_deref(),
        STORE_PASSWORD.credential,
        STORE_PASSWORD.env,
    )?;
    let mut u = url::Url::parse(url).context("the store's URL")?;
    if let Some(p) = password {
        u.set_password(Some(p.trim()))
            .map_err(|()| anyhow::anyhow!("the store's URL cannot take a password"))?;
    }
    Ok(u.to_string())
}

/// With a PostgreSQL store: this replica shares its state and claims there and contends for
/// the leader's lease (saying where it serves, for standbys to forward claims to); None for
/// a single agent on SQLite, which always leads.
async fn share(
    cfg: &Config,
    agent: &mut Agent,
    history: &crate::store::History,
) -> anyhow::Result<Option<(Leadership, http::claims::Forward)>> {
    if !history.is_postgres() {
        return Ok(None);
    }
    let replica = replica_name();
    let lease = Lease::new(history, LEADER, &replica, cfg.lease.0)
        .await
        .context("set up the leader's lease in the store")?
        .with_address(&cfg.advertised());
    let forward = http::claims::Forward::new(lease.clone())
        .context("the HTTP client that forwards claims to the leader")?;
    let leadership = Leadership::start(lease);
    agent.share(Shared::new(history, &replica), leadership.fence.clone());
    agent.claims().share(ClaimStore::new(history, &replica));
    tracing::info!(replica = %replica, lease = ?cfg.lease.0, advertise = %cfg.advertised(), "sharing the store with other replicas; one leads");
    Ok(Some((leadership, forward)))
}

/// This process's name among replicas: the host, the process id and a random suffix, so a
/// restarted process is never taken for the one before it.
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// The control loop, resumed from the state dir.
fn open_agent(
    cfg: &Config,
    api: Arc<dyn E2bApi>,
    rules: &Arc<RuleSet>,
    dispatcher: Dispatcher,
    webhooks: Option<mpsc::Receiver<Delivered>>,
    dedup: Arc<Mutex<Dedup>>,
    clock: AgentClock,
) -> anyhow::Result<Agent> {
    let mut agent = Agent::new(
        api,
        rules.clone(),
        AgentOptions {
            dispatcher: Some(dispatcher),
            webhooks,
            dedup,
            events_every: cfg.poll.events.0,
            dry_run: cfg.dry_run,
            state_dir: Some(cfg.state_dir.clone()),
            clock: Some(Arc::new(move || clock.now())),
        },
    )
    .with_context(|| format!("cannot use state dir {}", cfg.state_dir.display()))?;
    agent.budget().set_cap(cfg.api.max_concurrent);
    if !cfg.decision_log {
        agent.without_decision_log();
    }
    Ok(agent)
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
    /// Where each turn's `now` comes from.
    clock: AgentClock,
    /// The one writer of the [`Status`] the server shows.
    publisher: Publisher,
    watchdog: Watchdog,
    rule_files: RuleFiles,
    /// When a starved claim last brought a tick forward.
    last_starved: Option<std::time::Instant>,
    /// With a PostgreSQL store: this replica's part in the election.
    leadership: Option<Leadership>,
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
        let every = (self.clock).wall_span(self.cfg.poll.metrics.0.max(Duration::from_millis(100)));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        let starved = self.agent.claims().starved();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => self.tick().await,
                _ = wake.notified() => self.react().await,
                _ = starved.notified() => self.starved().await,
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

    /// One tick under [`TURN_DEADLINE`], published. The agent ticks at the agent's time; health
    /// is judged by the wall clock, as `/readyz` reads it.
    async fn tick(&mut self) {
        if !self.follow_role().await {
            self.show_as_standby().await;
            return;
        }
        let (wall, started) = (Utc::now(), std::time::Instant::now());
        let report = bounded(self.agent.tick(self.clock.at(wall)), &mut self.watchdog)
            .await
            .unwrap_or_else(cut_off);
        self.publisher
            .tick(&self.agent, &report, started.elapsed(), wall);
    }

    /// A claim found no member free: its pools are evaluated in a tick now rather than at
    /// their next interval, so they grow toward their `idle` band at once.
    async fn starved(&mut self) {
        self.agent.expedite_starved();
        // At most one such tick a second: under a storm of claims the regular ticks follow
        // (and evaluate the expedited pools at once).
        let every = self.clock.wall_span(Duration::from_secs(1));
        if self.last_starved.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_starved = Some(std::time::Instant::now());
        self.tick().await;
    }

    /// With a PostgreSQL store, brings the agent in step with this replica's role and
    /// publishes it: takes over (resuming the shared state) when it became the leader, stands
    /// by when it stopped being one. True when the agent may turn.
    async fn follow_role(&mut self) -> bool {
        let Some(l) = &self.leadership else {
            return true;
        };
        let role = l.roles.borrow().clone();
        self.publisher.role(&role);
        l.follow(&mut self.agent, self.clock.now()).await
    }

    /// A standby's status, from the store: what the leader saved and the history.
    async fn show_as_standby(&mut self) {
        if let (Some(shared), Some(history)) = (self.agent.shared_store(), self.agent.history()) {
            super::standby::refresh(shared, history, &self.publisher, self.clock.now()).await;
        }
    }

    /// Reacts to the webhook deliveries waiting, under [`TURN_DEADLINE`], published.
    async fn react(&mut self) {
        if !self.follow_role().await {
            return;
        }
        let report = bounded(self.agent.react(self.clock.now()), &mut self.watchdog).await;
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
        self.agent.persist().await;
        self.agent.claims().sync();
        if let Some(h) = self.agent.history() {
            h.flush().await;
        }
        if let Some(l) = self.leadership.take() {
            l.stop().await;
        }
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

/// The agent's time: the wall clock, or at `speed` N != 1 the emulator's virtual time, read
/// once at start, plus the wall time since, times N.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentClock {
    speed: f64,
    /// The wall time the emulator's virtual time was read at, and that virtual time; None for
    /// the wall clock itself.
    origin: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// The shortest wall-clock interval of the loop at a high speed: below it, a turn's round
/// trips to the emulator take longer than the interval.
const MIN_WALL_INTERVAL: Duration = Duration::from_millis(10);

impl AgentClock {
    /// Real time.
    pub(crate) fn wall() -> AgentClock {
        AgentClock {
            speed: 1.0,
            origin: None,
        }
    }

    /// `speed` times faster than the wall clock, reading `virt0` at wall time `wall0`.
    pub(crate) fn sped(speed: f64, wall0: DateTime<Utc>, virt0: DateTime<Utc>) -> AgentClock {
        AgentClock {
            speed,
            origin: Some((wall0, virt0)),
        }
    }

    /// The agent's time when the wall clock reads `wall`. Past chrono's range it stays at the
    /// last time it can say; it never panics.
    pub(crate) fn at(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let Some((wall0, virt0)) = self.origin else {
            return wall;
        };
        let since = (wall - wall0).as_seconds_f64() * self.speed;
        // The float-to-integer cast saturates: some 292 years either way.
        let since = TimeDelta::nanoseconds((since * 1e9) as i64);
        virt0
            .checked_add_signed(since)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The agent's time now.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    /// How long `d` of the agent's time takes on the wall clock: `d` itself in real time, else
    /// `d` / speed, never below [`MIN_WALL_INTERVAL`].
    pub(crate) fn wall_span(&self, d: Duration) -> Duration {
        match self.origin {
            None => d,
            Some(_) => d.div_f64(self.speed).max(MIN_WALL_INTERVAL),
        }
    }
}

/// The agent's clock for `cfg.speed`: the wall clock at 1, with no request; else the
/// emulator's virtual now from `{url}/_emulator/stats`. Only the emulator serves that, so a
/// speed against E2B (or anything else) refuses to start: it would make no sense.
async fn start_clock(cfg: &Config, url: &str) -> anyhow::Result<AgentClock> {
    if cfg.speed == 1.0 {
        return Ok(AgentClock::wall());
    }
    let before = Utc::now();
    let virt0 = emulator_now(url).await.map_err(|e| {
        anyhow::anyhow!(
            "speed {}: {e}; `speed` is only for running against `poolpilot emulator --speed N`, against E2B leave it at 1",
            cfg.speed
        )
    })?;
    // The emulator read its clock somewhere during the request: take the middle.
    let wall0 = before + (Utc::now() - before) / 2;
    tracing::info!(speed = cfg.speed, emulator_now = %virt0, "keeping the emulator's virtual time");
    Ok(AgentClock::sped(cfg.speed, wall0, virt0))
}

/// The emulator's virtual now, from its stats.
async fn emulator_now(url: &str) -> Result<DateTime<Utc>, String> {
    #[derive(serde::Deserialize)]
    struct Stats {
        now: DateTime<Utc>,
    }
    let stats = format!("{}/_emulator/stats", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client
        .get(&stats)
        .send()
        .await
        .map_err(|e| format!("{stats} did not answer ({e})"))?;
    if !answer.status().is_success() {
        return Err(format!(
            "{stats} answered {}: this is not `poolpilot emulator`",
            answer.status()
        ));
    }
    let body: Stats = answer
        .json()
        .await
        .map_err(|e| format!("{stats} is not the emulator's stats ({e})"))?;
    Ok(body.now)
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

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_787_200 + s, 0).unwrap_or_default()
    }

    #[test]
    fn the_wall_clock_is_the_wall_clock_and_its_intervals_are_untouched() {
        let c = AgentClock::wall();
        assert_eq!(c.at(t(42)), t(42));
        assert_eq!(c.wall_span(Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn a_sped_clock_runs_from_the_emulator_s_now_n_times_faster() {
        let virt0 = t(-3600);
        let c = AgentClock::sped(10.0, t(0), virt0);
        assert_eq!(c.at(t(0)), virt0);
        assert_eq!(c.at(t(3)), virt0 + TimeDelta::seconds(30));
        assert_eq!(
            c.wall_span(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        // Never below the floor, however fast.
        let fast = AgentClock::sped(1000.0, t(0), virt0);
        assert_eq!(fast.wall_span(Duration::from_secs(1)), MIN_WALL_INTERVAL);
        // Far past chrono's range it stays at the end, without a panic.
        let far = DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1);
        assert_eq!(
            AgentClock::sped(1000.0, t(0), far).at(t(100)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_finishes_gives_its_result() {
        let mut dog = Watchdog::with_period(None);
        let out = bounded(async { 7 }, &mut dog).await;
        assert_eq!((out, dog.sent()), (Some(7), 0));
    }
}
