//! `poolpilot tune`: searches the rule parameters a space file names over scenarios, prints
//! the Pareto front of cost against unmet demand (or JSON) and writes the cheapest rules
//! within the unmet budget. It only reads the files named and writes `--out`; the search
//! itself is `crate::tune`, in virtual time.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use super::sim_flags::SimFlags;
use super::values::number_in;
use crate::emulator::Scenario;
use crate::tune::{RulesFile, Space, TuneOptions, TuneReport};

/// Flags of `poolpilot tune`.
#[derive(Debug, Args)]
pub(crate) struct TuneArgs {
    /// The rule file whose parameters are searched.
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: PathBuf,
    /// The space file: `path.in.rules: [value, ...]` per parameter (docs/tune.md).
    #[arg(long, value_name = "FILE")]
    pub(crate) space: PathBuf,
    /// Scenario files (docs/emulator.md); every combination runs on each.
    #[arg(long, required = true, num_args = 1.., value_name = "FILE")]
    pub(crate) scenario: Vec<PathBuf>,
    /// The most unmet demand the best rules may leave on any scenario, in percent.
    #[arg(long, default_value = "2%", value_name = "PERCENT", value_parser = unmet_budget)]
    pub(crate) unmet: f64,
    /// Print one JSON object instead of the front.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write the best rules here (the rule file with the chosen values set).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) sim: SimFlags,
}

/// `2%` or `2`: a percentage from 0 to 100.
fn unmet_budget(raw: &str) -> Result<f64, String> {
    number_in(raw.trim().trim_end_matches('%'), 0.0, 100.0, "a percentage")
}

/// `poolpilot tune`: false when no combination meets the budget.
pub(crate) fn run(args: &TuneArgs) -> anyhow::Result<bool> {
    let file = args.rules.display().to_string();
    let text = read(&args.rules)?;
    let rules = RulesFile::parse(&file, &text).map_err(diagnostics)?;
    crate::rules::load_str(&[(&file, &text)]).map_err(diagnostics)?;
    let space_file = args.space.display().to_string();
    let space = Space::load(&space_file, &read(&args.space)?, &rules.tree).map_err(diagnostics)?;
    let mut scenarios = Vec::new();
    for path in &args.scenario {
        scenarios.push((path.display().to_string(), Scenario::load(path)?));
    }
    let report = crate::tune::tune(&rules, &space, &scenarios, &options(args));
    if let (Some(out), Some(yaml)) = (&args.out, &report.best_rules) {
        let header = format!("# poolpilot tune: {file} with {}\n", chosen(&report));
        std::fs::write(out, header + yaml)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        out!("{}", front_table(&report));
        if let (Some(out), Some(_)) = (&args.out, report.best) {
            outln!("best rules written to {}", out.display());
        }
    }
    Ok(report.best.is_some())
}

/// The simulation and search settings from the flags.
fn options(args: &TuneArgs) -> TuneOptions {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    TuneOptions {
        sim: args.sim.options(),
        unmet_budget_pct: args.unmet,
        threads,
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    crate::files::read_regular(path, crate::files::MAX_TEXT_FILE)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

fn diagnostics(d: Vec<crate::rules::Diagnostic>) -> anyhow::Error {
    let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

/// The front as a table, the best marked with `*`, and the combinations that did not load.
fn front_table(r: &TuneReport) -> String {
    let short = short_names(&r.params);
    let mut out = format!(
        "{} combinations x {} scenarios; Pareto front of cost vs floor against worst unmet demand:\n",
        r.results.len(),
        r.scenarios.len()
    );
    out += &format!(
        "  {:>4} {:>8} {:>7} {:>8}  values\n",
        "#", "cost", "unmet", "creates"
    );
    for &i in &r.front {
        let (o, mark) = (&r.results[i], if r.best == Some(i) { '*' } else { ' ' });
        let Some(s) = &o.score else { continue };
        out += &format!(
            "{mark} {:>4} {:>7.2}x {:>6.2}% {:>8}  {}\n",
            i,
            s.cost_vs_floor,
            s.worst_unmet_pct,
            s.creates,
            values_line(&short, &o.values)
        );
    }
    for o in r.results.iter().filter(|o| o.error.is_some()) {
        let why = o.error.as_deref().unwrap_or_default();
        out += &format!(
            "  #{} did not load ({}): {why}\n",
            o.index,
            values_line(&short, &o.values)
        );
    }
    out += &match r.best {
        Some(i) => format!(
            "* the cheapest within {}% unmet: #{i}\n",
            r.unmet_budget_pct
        ),
        None => format!(
            "no combination leaves at most {}% unmet\n",
            r.unmet_budget_pct
        ),
    };
    out
}

/// The best combination as `path=value, ...`, with full paths.
fn chosen(r: &TuneReport) -> String {
    r.best.map_or_else(String::new, |i| {
        values_line(&r.params, &r.results[i].values)
    })
}

fn values_line(names: &[String], values: &[Value]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| match v {
            Value::String(s) => format!("{n}={s}"),
            v => format!("{n}={v}"),
        })
        .collect();
    pairs.join(" ")
}

/// The paths without the segments they all share at the start (`pools.workers.scale.`).
fn short_names(paths: &[String]) -> Vec<String> {
    let split: Vec<Vec<&str>> = paths.iter().map(|p| p.split('.').collect()).collect();
    let shortest = split.iter().map(Vec::len).min().unwrap_or(0);
    let common = (0..shortest.saturating_sub(1))
        .take_while(|&k| split.iter().all(|s| s[k] == split[0][k]))
        .count();
    split.iter().map(|s| s[common..].join(".")).collect()
}
