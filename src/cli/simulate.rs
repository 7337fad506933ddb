//! `poolpilot simulate`: the real agent with the given rules against a load scenario on the
//! emulator core, in virtual time, printed as a summary or JSON and optionally drawn as an
//! SVG chart. It never reaches E2B and never waits on the wall clock.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{emulated_create_rate, max_concurrent, tick_interval};
use crate::duration::HumanDuration;
use crate::emulator::{CoreConfig, Scenario};

/// Flags of `poolpilot simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Rule files or directories.
    #[arg(long = "rules", required = true, value_name = "PATH")]
    pub(crate) rules: Vec<PathBuf>,
    /// Scenario file (docs/emulator.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) scenario: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a chart of the run (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Time between two engine steps (the agent's poll interval).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub(crate) tick: HumanDuration,
    /// Sandbox creates per second the emulated team may make (E2B: 1 Hobby, 5 Pro); 0 is
    /// unlimited.
    #[arg(long, default_value_t = 5.0, value_name = "PER_SECOND", value_parser = emulated_create_rate)]
    pub(crate) create_rate: f64,
    /// Running sandboxes the emulated team may have (E2B: 20 Hobby, 100 Pro, up to 1,100).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = max_concurrent)]
    pub(crate) max_concurrent: usize,
    /// Metric sampling interval of the emulator (E2B: 5s).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = tick_interval)]
    pub(crate) metrics_interval: HumanDuration,
}

/// `poolpilot simulate`: loads the rules and the scenario, runs them, writes the chart and
/// prints the report.
pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let rules = crate::rules::load_paths(&args.rules).map_err(|d| {
        anyhow::anyhow!(
            "invalid rules:\n{}",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let scenario = Scenario::load(&args.scenario)?;
    let opts = crate::simulate::SimOptions {
        tick: args.tick.0,
        core: CoreConfig {
            create_rate: args.create_rate,
            max_concurrent: args.max_concurrent,
            metrics_interval: args.metrics_interval.0.max(Duration::from_millis(100)),
            ..CoreConfig::default()
        },
        ..Default::default()
    };
    let report = crate::simulate::simulate(std::sync::Arc::new(rules), &scenario, &opts);
    if let Some(out) = &args.out {
        let title = format!("poolpilot simulate: {}", args.scenario.display());
        std::fs::write(out, crate::simulate::svg::render(&report, &title))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", crate::simulate::summary(&report));
        if let Some(out) = &args.out {
            println!("chart written to {}", out.display());
        }
    }
    Ok(())
}
