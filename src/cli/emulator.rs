//! `poolpilot emulator`: a local E2B-compatible API server, optionally printing a status line
//! and exiting at the end of its scenario. Every flag is checked against
//! `crate::emulator::limits` before anything listens; it never talks to the real E2B.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{duration_in, emulated_create_rate, max_concurrent, tick_interval};
use crate::duration::HumanDuration;
use crate::emulator::core::StatsReport;
use crate::emulator::delivery::DeliveryPolicy;
use crate::emulator::{Clock, CoreConfig, Emulator, EmulatorOptions, RunningEmulator, Scenario};

/// Flags of `poolpilot emulator`.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// Address to listen on. Loopback by default; anything else exposes the emulator.
    #[arg(
        long,
        default_value = "127.0.0.1:3000",
        env = "POOLPILOT_EMULATOR_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub(crate) listen: String,
    /// Scenario file: templates, load over time, initial sandboxes, faults (docs/emulator.md).
    #[arg(long, env = "POOLPILOT_EMULATOR_SCENARIO", value_name = "FILE")]
    pub(crate) scenario: Option<PathBuf>,
    /// Time between two metric samples of a sandbox (E2B: 5s).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub(crate) metrics_interval: HumanDuration,
    /// API key clients must send; without it any non-empty key is accepted.
    #[arg(
        long,
        env = "POOLPILOT_EMULATOR_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub(crate) api_key: Option<String>,
    /// Virtual seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub(crate) speed: f64,
    /// Virtual time moves only on POST /_emulator/advance.
    #[arg(long, conflicts_with = "speed")]
    pub(crate) manual_clock: bool,
    /// Running sandboxes at most (E2B: 20 on Hobby, 100 on Pro).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = max_concurrent)]
    pub(crate) max_concurrent: usize,
    /// Sandbox creates per second (E2B: 1 on Hobby, 5 on Pro); 0 is unlimited.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SECOND", value_parser = emulated_create_rate)]
    pub(crate) create_rate: f64,
    /// Tries per webhook delivery, the first included.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) webhook_attempts: u32,
    /// Wait before the first webhook retry; doubles each retry.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = webhook_backoff)]
    pub(crate) webhook_backoff: HumanDuration,
    /// Answer POST /v2/sandboxes with a router 404, like an API that only has v1 creates.
    #[arg(long)]
    pub(crate) no_v2_create: bool,
    /// Print a status line this often (wall clock); 0s prints none.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = status_every)]
    pub(crate) status_every: HumanDuration,
    /// Exit once the scenario's duration has passed in virtual time.
    #[arg(long)]
    pub(crate) exit_at_end: bool,
}

/// The first webhook retry's wait: up to an hour.
fn webhook_backoff(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::ZERO, Duration::from_secs(3600))
}

/// The emulator's status line period: 0 (none) to a day.
fn status_every(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::ZERO, Duration::from_secs(86_400))
}

/// `poolpilot emulator`: serves until a signal, or until the scenario ends with
/// `--exit-at-end`.
pub(crate) async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::default(),
    };
    let opts = options(&args, scenario.clone());
    // Every flag within crate::emulator::limits, or exit 1 naming the flag and its range.
    opts.validate()?;
    crate::emulator::limits::span("--status-every", args.status_every.0)?;
    let running = RunningEmulator::bind(opts, &args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        url = %running.url(),
        key_required = args.api_key.is_some(),
        "emulator listening; point clients at it with E2B_API_URL={}",
        running.url()
    );
    outln!("poolpilot emulator listening on {}", running.url());
    let end = scenario.duration.filter(|_| args.exit_at_end).map(|d| d.0);
    let status_every = (!args.status_every.0.is_zero()).then_some(args.status_every.0);
    tokio::select! {
        r = watch(&running.emulator, status_every, end) => r?,
        _ = super::shutdown_signal() => tracing::info!("shutting down"),
    }
    running.stop().await;
    Ok(())
}

/// The emulator's options from its flags.
fn options(args: &EmulatorArgs, scenario: Scenario) -> EmulatorOptions {
    EmulatorOptions {
        core: CoreConfig {
            metrics_interval: args.metrics_interval.0,
            max_concurrent: args.max_concurrent,
            create_rate: args.create_rate,
            ..CoreConfig::default()
        },
        scenario,
        api_key: args.api_key.clone(),
        clock: if args.manual_clock {
            Clock::Manual
        } else {
            Clock::Wall { speed: args.speed }
        },
        delivery: DeliveryPolicy {
            max_attempts: args.webhook_attempts,
            backoff: args.webhook_backoff.0,
            ..DeliveryPolicy::default()
        },
        serve_v2_create: !args.no_v2_create,
        ..EmulatorOptions::default()
    }
}

/// Prints a status line every `status_every` (if any) and returns once the scenario's `end`
/// has passed in virtual time (never, without one).
async fn watch(
    emulator: &Emulator,
    status_every: Option<Duration>,
    end: Option<Duration>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(status_every.unwrap_or(Duration::from_millis(200)));
    loop {
        tick.tick().await;
        let stats = emulator.with_core(|c| c.stats());
        if status_every.is_some() {
            outln!("{}", status_line(&stats));
        }
        if end.is_some_and(|e| stats.elapsed_s >= e.as_secs_f64()) {
            outln!("scenario finished: {}", serde_json::to_string(&stats)?);
            return Ok(());
        }
    }
}

/// One human-readable line about the emulator's state.
fn status_line(s: &StatsReport) -> String {
    let secs = s.elapsed_s.max(0.0) as u64;
    let mut line = format!("t+{:02}:{:02}", secs / 60, secs % 60);
    for (name, t) in &s.templates {
        if t.running == 0 && t.demand_cores == 0.0 && t.totals.creates == 0 {
            continue;
        }
        line.push_str(&format!(
            " | {name}: demand {:.1} cores, capacity {:.0} cores, {} running ({} booting), cpu avg {:.0}%",
            t.demand_cores, t.capacity_cores, t.running, t.booting, t.avg_cpu_pct
        ));
    }
    line.push_str(&format!(
        " | unmet {:.0} core-s, {:.0} sandbox-s, {} events",
        s.unmet_core_seconds, s.sandbox_seconds, s.events
    ));
    line
}
