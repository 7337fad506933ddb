//! `poolpilot simulate`: the real agent with the given rules against a load scenario on the
//! emulator core, in virtual time, printed as a summary or JSON and optionally drawn as an
//! SVG chart. It never reaches E2B and never waits on the wall clock.

use std::path::PathBuf;

use clap::Args;

use super::sim_flags::SimFlags;
use crate::emulator::Scenario;

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
    #[command(flatten)]
    pub(crate) sim: SimFlags,
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
    let problems = crate::simulate::mismatches(&rules, &scenario);
    if !problems.is_empty() {
        anyhow::bail!(
            "{} does not fit the rules:\n{}",
            args.scenario.display(),
            problems.join("\n")
        );
    }
    let opts = args.sim.options();
    let report = crate::simulate::simulate(std::sync::Arc::new(rules), &scenario, &opts);
    if let Some(out) = &args.out {
        let title = format!("poolpilot simulate: {}", args.scenario.display());
        std::fs::write(out, crate::simulate::svg::render(&report, &title))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!("{}", crate::simulate::summary(&report));
        if let Some(out) = &args.out {
            outln!("chart written to {}", out.display());
        }
    }
    Ok(())
}
