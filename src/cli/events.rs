//! `poolpilot events report`: the guide's Pattern 3 (historical event analysis), per template
//! and pool. With `--from-api` it reads E2B's events API directly, newest first, page by page
//! until `--since`, so no agent is needed; the figures come from [`crate::report`]. A table on
//! stdout, or the report's JSON with `--json`.
//!
//! Without `--from-api` it reads the agent's history store (`history.db` in the state dir,
//! found from `--state-dir` or `--config`), which keeps events as long as `history.retention`
//! (30 days by default), read-only and beside a running agent.
//!
//! It only reads: it never creates, kills or changes a sandbox, and never prints the key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::agent::config::{self, settings::API_KEY};
use crate::e2b::{self, ClientConfig, E2bApi, EventQuery, HttpClient, LifecycleEvent, PAGE_MAX};
use crate::report::{self, Group, Report, Window};

/// `poolpilot events ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Per template and pool: creates, lifetimes, kill reasons, crash rate, pauses, busiest hours.
    Report(ReportArgs),
}

/// Flags of `poolpilot events report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// How far back the report looks, from 1m to 3650d (E2B's events API keeps 7 days; the
    /// history store, `history.retention`).
    #[arg(long, default_value = "7d", value_parser = since, value_name = "DURATION")]
    since: Duration,
    /// Only this pool (its `poolpilot_pool` metadata); `-` for sandboxes poolpilot does not own.
    #[arg(long, value_name = "POOL")]
    pool: Option<String>,
    /// Print the report as JSON (docs/operations.md, "Events report").
    #[arg(long)]
    json: bool,
    /// Read E2B's events API directly (needs only the API key, no agent).
    #[arg(long, conflicts_with_all = ["state_dir", "config"])]
    from_api: bool,
    /// The agent's state dir, whose history store (history.db) the report reads.
    #[arg(long, env = "POOLPILOT_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The agent's config file, whose `state_dir` holds the history store.
    #[arg(
        long,
        env = "POOLPILOT_CONFIG",
        value_name = "FILE",
        conflicts_with = "state_dir"
    )]
    config: Option<PathBuf>,
    /// E2B's API base URL.
    #[arg(long, env = "E2B_API_URL", default_value = e2b::client::DEFAULT_API_URL,
          value_parser = api_url, value_name = "URL")]
    api_url: String,
    /// File holding the API key [default: the credential e2b-api-key, else E2B_API_KEY].
    #[arg(long, env = "POOLPILOT_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<PathBuf>,
}

/// The shortest and longest `--since`.
const SINCE_MIN: Duration = Duration::from_secs(60);
const SINCE_MAX: Duration = Duration::from_secs(3650 * 86_400);

/// Runs an `events` subcommand.
pub(crate) async fn run(command: &EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Report(args) => report(args).await,
    }
}

/// `poolpilot events report`: fetches the window, builds the report and prints it.
async fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let until = Utc::now();
    let since = until - chrono::Duration::from_std(args.since).context("--since")?;
    let events = if args.from_api {
        fetch_since(&client(args)?, since).await?
    } else {
        let dir = state_dir(args)?;
        let pool = crate::store::open_reader(&dir).await?;
        crate::store::read::events_since(&pool, since, None)
            .await
            .context("read the history store")?
    };
    let window = Window {
        since,
        until,
        pool: args.pool.clone(),
    };
    let report = report::build(&events, &window);
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("format the JSON")?;
        outln!("{text}");
    } else {
        out!("{}", render(&report));
    }
    Ok(())
}

/// The state dir whose history store the report reads: `--state-dir`, or the config's.
fn state_dir(args: &ReportArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.state_dir {
        return Ok(d.clone());
    }
    let Some(path) = &args.config else {
        bail!(
            "no history store to read: give the agent's --state-dir or --config, \
             or add --from-api to read E2B's events API directly (the last 7 days)"
        );
    };
    let cfg = config::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(cfg.state_dir)
}

/// The E2B client, with the key read as `run` reads it.
fn client(args: &ReportArgs) -> anyhow::Result<HttpClient> {
    let key = config::secret(
        args.api_key_file.as_deref(),
        API_KEY.credential,
        API_KEY.env,
    )?;
    HttpClient::new(ClientConfig::new(&args.api_url, key)).context("build the E2B client")
}

/// The team's events at or after `since`: newest first, page by page, until a page ends
/// before `since` or is empty. Each id once (a page may repeat one when events arrive).
async fn fetch_since(
    api: &dyn E2bApi,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<LifecycleEvent>> {
    let mut query = EventQuery {
        limit: PAGE_MAX,
        ..EventQuery::default()
    };
    let mut by_id = BTreeMap::new();
    loop {
        let page = api
            .events_page(None, &query)
            .await
            .context("read E2B's events API")?;
        let Some(oldest) = page.iter().map(|e| e.timestamp).min() else {
            break;
        };
        query.offset += page.len() as u64;
        for e in page {
            by_id.entry(e.id.clone()).or_insert(e);
        }
        if oldest < since {
            break;
        }
    }
    Ok(by_id.into_values().collect())
}

/// `--since`: a humantime duration from 1m to 30d.
fn since(raw: &str) -> Result<Duration, String> {
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if (SINCE_MIN..=SINCE_MAX).contains(&d) => Ok(d),
        Ok(_) => Err(format!(
            "{raw:?} is out of range: expected a duration from 1m to 3650d, such as 7d or 12h"
        )),
        Err(e) => Err(format!(
            "invalid duration {raw:?} ({e}): expected a duration from 1m to 3650d, such as 7d or 12h"
        )),
    }
}

/// `--api-url`: http or https with a host.
fn api_url(raw: &str) -> Result<String, String> {
    config::check_url(raw).map(|()| raw.to_string())
}

/// The report as a table: a heading line, one row per template and pool, aligned.
fn render(r: &Report) -> String {
    let mut text = format!(
        "events from {} to {} (UTC){}: {} events\n",
        r.since.format("%Y-%m-%d %H:%M"),
        r.until.format("%Y-%m-%d %H:%M"),
        r.pool
            .as_ref()
            .map(|p| format!(", pool {p}"))
            .unwrap_or_default(),
        r.events
    );
    if r.groups.is_empty() {
        text.push_str("no sandbox events in this window\n");
        return text;
    }
    let mut rows = vec![HEADER.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    rows.extend(r.groups.iter().map(row));
    text.push_str(&align(&rows));
    text
}

const HEADER: [&str; 13] = [
    "TEMPLATE",
    "POOL",
    "CREATED",
    "P50",
    "P90",
    "P99",
    "KILLED",
    "CRASH",
    "PAUSED",
    "RESUMED",
    "CREATES/H",
    "BUSIEST (UTC)",
    "KILL REASONS",
];

/// One group's cells, in [`HEADER`]'s order.
fn row(g: &Group) -> Vec<String> {
    let life = |p: Option<f64>| p.map_or("-".to_string(), lifetime);
    let busiest: Vec<String> = g
        .busiest_hours_utc
        .iter()
        .map(|h| format!("{:02}:00({})", h.hour, h.creates))
        .collect();
    let reasons: Vec<String> = g
        .kill_reasons
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    vec![
        g.template.clone(),
        g.pool.clone(),
        g.created.to_string(),
        life(g.lifetime_seconds.p50),
        life(g.lifetime_seconds.p90),
        life(g.lifetime_seconds.p99),
        g.killed.to_string(),
        g.crash_rate
            .map_or("-".to_string(), |c| format!("{:.1}%", c * 100.0)),
        g.paused.to_string(),
        g.resumed.to_string(),
        format!("{:.2}", g.creates_per_hour),
        or_dash(busiest.join(" ")),
        or_dash(reasons.join(" ")),
    ]
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// A lifetime to the second, as `1h2m3s`, `4m5s` or `6s`.
fn lifetime(secs: f64) -> String {
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces.
fn align(rows: &[Vec<String>]) -> String {
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..HEADER.len()).map(width).collect();
    let mut text = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_bounded_and_says_what_is_valid() {
        assert_eq!(since("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(since("12h"), Ok(Duration::from_secs(12 * 3600)));
        for bad in ["30s", "3651d", "soon", "-1h"] {
            let e = since(bad).expect_err(bad);
            assert!(e.contains("from 1m to 3650d"), "{bad}: {e}");
        }
    }

    #[test]
    fn lifetimes_read_as_hours_minutes_seconds() {
        assert_eq!(lifetime(6.4), "6s");
        assert_eq!(lifetime(245.0), "4m5s");
        assert_eq!(lifetime(3723.0), "1h2m3s");
    }

    #[test]
    fn an_empty_window_says_so() {
        let at = Utc::now();
        let r = report::build(
            &[],
            &Window {
                since: at,
                until: at,
                pool: None,
            },
        );
        assert!(render(&r).ends_with("no sandbox events in this window\n"));
    }
}
