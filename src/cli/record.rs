//! `poolpilot record`: what a running agent observed, read from its history store
//! (`STATE_DIR/history.db`, opened read-only), turned into a scenario that `simulate` and
//! `tune` replay ([`crate::simulate::record`] derives it; docs/record.md says how). It never
//! writes to the store and never reaches E2B; the scenario it writes is checked to load back.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::values::duration_in;
use crate::duration::HumanDuration;
use crate::emulator::Scenario;
use crate::simulate::record::{self, Recording, Span};
use crate::store::read;

/// Flags of `poolpilot record`.
#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
    /// The agent's state dir, holding history.db.
    #[arg(long = "from", value_name = "STATE_DIR")]
    pub(crate) from: PathBuf,
    /// How far back from the end to record (1m to 30d), or an RFC 3339 time to start at.
    #[arg(long, default_value = "24h", value_name = "DURATION|TIME", value_parser = since)]
    pub(crate) since: Since,
    /// Where the recording ends, an RFC 3339 time [default: the newest pool sample].
    #[arg(long, value_name = "TIME", value_parser = time)]
    pub(crate) until: Option<DateTime<Utc>>,
    /// Record only this pool (repeat for more) [default: every pool sampled].
    #[arg(long = "pool", value_name = "POOL")]
    pub(crate) pools: Vec<String>,
    /// One point per this much time in each curve (1s to 1h).
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = step)]
    pub(crate) step: HumanDuration,
    /// The scenario file to write; `-` prints it.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
}

/// `--since`: a span back from the end, or a time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Since {
    Back(Duration),
    At(DateTime<Utc>),
}

fn since(raw: &str) -> Result<Since, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(Since::At(t.with_timezone(&Utc)));
    }
    duration_in(
        raw,
        Duration::from_secs(60),
        Duration::from_secs(30 * 86_400),
    )
    .map(|d| Since::Back(d.0))
    .map_err(|e| format!("{e}; or give an RFC 3339 time such as 2026-01-07T12:00:00Z"))
}

fn time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}; expected an RFC 3339 time such as 2026-01-07T12:00:00Z"))
}

fn step(raw: &str) -> Result<HumanDuration, String> {
    duration_in(raw, Duration::from_secs(1), Duration::from_secs(3600))
}

/// `poolpilot record`: reads the span from the store, converts it, checks that it loads, and
/// writes it.
pub(crate) async fn run(args: &RecordArgs) -> anyhow::Result<()> {
    let db = crate::store::open_reader(&args.from).await?;
    let Some(newest) = read::newest_pool_sample(&db).await? else {
        anyhow::bail!(
            "{}: the history store has no pool samples yet; run the agent with this state dir first",
            args.from.join("history.db").display()
        );
    };
    let end = args.until.unwrap_or(newest);
    let start = match args.since {
        Since::Back(d) => end - chrono::TimeDelta::from_std(d).context("--since")?,
        Since::At(t) => t,
    };
    let rows = read_rows(&db, start, end).await?;
    // The recording starts at the first sample in the span, not before: no invented silence.
    let first = rows.pool_samples.first().map_or(start, |s| s.at);
    let span = Span {
        start: first.max(start),
        end,
        step: args.step.0,
        pools: args.pools.clone(),
    };
    let recorded = record::scenario(&rows, &span)?;
    let text = record::render(&recorded, &args.from.display().to_string(), &span);
    let name = args.out.display().to_string();
    Scenario::parse(&name, &text).map_err(|e| {
        anyhow::anyhow!("the recording does not load back (a bug in poolpilot record): {e}")
    })?;
    write(args, &text)?;
    if args.out.as_os_str() != "-" {
        outln!("{}", summary(&recorded, &name));
    }
    Ok(())
}

/// Every row the conversion needs, over `[start, end]`.
async fn read_rows(
    db: &sqlx::AnyPool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<Recording> {
    let what = "read the history store";
    Ok(Recording {
        pool_samples: read::record_pool_samples(db, start, end)
            .await
            .context(what)?,
        templates: read::record_pool_templates(db).await.context(what)?,
        shapes: read::record_member_shapes(db, start, end)
            .await
            .context(what)?,
        boots: read::record_boot_delays(db, start, end)
            .await
            .context(what)?,
        kills: read::record_kills(db, start, end).await.context(what)?,
        claims: read::record_claims(db, start, end).await.context(what)?,
    })
}

fn write(args: &RecordArgs, text: &str) -> anyhow::Result<()> {
    if args.out.as_os_str() == "-" {
        out!("{text}");
        return Ok(());
    }
    std::fs::write(&args.out, text).with_context(|| format!("cannot write {}", args.out.display()))
}

/// One line: what was recorded and where it went.
fn summary(r: &record::Recorded, out: &str) -> String {
    let s = &r.scenario;
    let pools: Vec<&str> = r
        .templates
        .values()
        .flat_map(|n| n.pools.iter().map(String::as_str))
        .collect();
    let points: usize = s.load.iter().map(|l| l.points.len()).sum();
    let saturated = r.saturated.values().filter(|v| !v.is_empty()).count();
    format!(
        "recorded {} of pools {} ({} templates, {points} demand points, {} saturated curves, {} crashes, {} job curves) to {out}",
        s.duration.map_or_else(String::new, |d| d.to_string()),
        pools.join(", "),
        s.templates.len(),
        saturated,
        s.faults.iter().filter_map(|f| f.kill).sum::<u32>(),
        s.jobs.len(),
    )
}
