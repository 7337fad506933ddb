//! `poolpilot status`: a running agent's pools at a glance in the terminal. It asks the agent's
//! read API (`/api/v1/pools`, `/api/v1/pools/{pool}`, `/api/v1/alerts`, `/readyz`) and prints
//! one line per pool, the firing alerts and the readiness; `--json` prints what it read.
//!
//! It only reads: it never changes an agent, and never reads a configuration or a state file
//! (what it shows is what the agent answers). Colour only when stdout is a terminal and
//! `NO_COLOR` is unset.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

/// Flags of `poolpilot status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    at: super::health::Listen,
    /// The agent's base URL, instead of http://<listen>, e.g. http://10.0.0.5:9477.
    #[arg(long, env = "POOLPILOT_URL", value_name = "URL")]
    url: Option<String>,
    /// Print what the agent answered as one JSON document: readiness, pools, alerts.
    #[arg(long)]
    json: bool,
}

/// How long the agent has to answer each request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a decision's sentence is printed when stdout is not a terminal.
const SENTENCE_MAX: usize = 100;

/// `poolpilot status`: reads the agent and prints it.
pub(crate) async fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => args.at.base(),
    };
    let agent = Agent::new(&base)?;
    let snapshot = agent.snapshot().await?;
    if args.json {
        let text = serde_json::to_string_pretty(&snapshot).context("format the JSON")?;
        outln!("{text}");
        return Ok(());
    }
    let view: Snapshot = serde_json::from_value(snapshot)
        .with_context(|| format!("{base} answered, but not as a poolpilot agent does"))?;
    out!("{}", render(&view, &Style::of_stdout()));
    Ok(())
}

/// An agent's read API at a base URL.
struct Agent {
    base: String,
    client: reqwest::Client,
}

impl Agent {
    fn new(base: &str) -> anyhow::Result<Agent> {
        if url::Url::parse(base).is_err() {
            bail!("--url {base:?} is not a URL; give one like http://127.0.0.1:9477");
        }
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("build the HTTP client")?;
        Ok(Agent {
            base: base.to_string(),
            client,
        })
    }

    /// Everything `status` shows: `{"agent", "ready", "pools", "alerts"}`, each as the agent
    /// answered it; a pool gone between the list and its own page keeps its list entry.
    async fn snapshot(&self) -> anyhow::Result<Value> {
        let ready = self.get("/readyz", &[200, 503]).await?;
        let list = self.get("/api/v1/pools", &[200]).await?;
        let mut pools = Vec::new();
        for entry in list.as_array().into_iter().flatten() {
            let name = entry["name"].as_str().unwrap_or_default();
            let path = format!("/api/v1/pools/{}", path_segment(name));
            match self.get(&path, &[200, 404]).await? {
                detail if detail.get("name").is_some() => pools.push(detail),
                _ => pools.push(entry.clone()),
            }
        }
        let alerts = self.get("/api/v1/alerts", &[200]).await?;
        Ok(json!({ "agent": self.base, "ready": ready, "pools": pools, "alerts": alerts }))
    }

    /// GETs `path` and reads its JSON; an answer with a status not in `expected` is an error.
    async fn get(&self, path: &str, expected: &[u16]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let answer = self.client.get(&url).send().await.map_err(|e| {
            anyhow::anyhow!(
                "no agent answers at {}: {}; is `poolpilot run` running? give --url",
                self.base,
                innermost(&e)
            )
        })?;
        let code = answer.status().as_u16();
        if !expected.contains(&code) {
            bail!("{url} answered {code}; is {} a poolpilot agent?", self.base);
        }
        answer
            .json()
            .await
            .with_context(|| format!("{url} answered {code} without JSON"))
    }
}

/// The deepest cause of an error ("Connection refused", "timed out"), which says most.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A pool name as one URL path segment.
fn path_segment(name: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// What the text view reads of a snapshot.
#[derive(Deserialize)]
struct Snapshot {
    ready: Ready,
    pools: Vec<Pool>,
    alerts: BTreeMap<String, BTreeMap<String, Alert>>,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    reason: String,
}

/// One pool, from `/api/v1/pools/{pool}` (or its `/api/v1/pools` entry).
#[derive(Deserialize)]
struct Pool {
    name: String,
    actual: u32,
    pending_creates: u32,
    /// These come with the pool's first evaluation.
    desired: Option<u32>,
    min: Option<u32>,
    max: Option<u32>,
    summary: Option<String>,
    claims: Option<Claims>,
}

#[derive(Deserialize)]
struct Claims {
    claimed: usize,
    idle: usize,
    idle_paused: usize,
}

#[derive(Deserialize)]
struct Alert {
    phase: String,
    fired_at: Option<String>,
    value: f64,
}

/// How the text is printed: colour or not, and the line width a sentence must fit.
struct Style {
    colour: bool,
    /// The terminal's width; `None` when stdout is not a terminal.
    width: Option<usize>,
}

impl Style {
    fn of_stdout() -> Style {
        let terminal = std::io::stdout().is_terminal();
        Style {
            colour: crate::telemetry::wants_colour(terminal),
            width: terminal.then(terminal_width).flatten(),
        }
    }

    /// `text` in the ANSI colour `code` (32 green, 33 yellow, 31 red) when colour is on.
    fn paint(&self, code: u8, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The width of the terminal on stdout, if it says.
fn terminal_width() -> Option<usize> {
    #[cfg(unix)]
    {
        let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
        (size.ws_col > 0).then_some(usize::from(size.ws_col))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

const GREEN: u8 = 32;
const YELLOW: u8 = 33;
const RED: u8 = 31;

/// The whole text view: the pools' table, then the firing alerts, then the readiness.
fn render(s: &Snapshot, style: &Style) -> String {
    let mut out = pools_table(&s.pools, style);
    out.push('\n');
    out.push_str(&firing_alerts(&s.alerts, style));
    let (colour, word) = if s.ready.ready {
        (GREEN, "ready")
    } else {
        (RED, "not ready")
    };
    out.push_str(&format!(
        "{}: {}\n",
        style.paint(colour, word),
        s.ready.reason
    ));
    out
}

/// One line per pool: name, actual/desired, pending creates, min..max, claimed/idle, and the
/// last decision's sentence, shortened to the line; green at its desired size, yellow off it.
fn pools_table(pools: &[Pool], style: &Style) -> String {
    if pools.is_empty() {
        return "no pools evaluated yet\n".to_string();
    }
    let header = ["pool", "size", "pending", "min..max", "claimed/idle"];
    let rows: Vec<[String; 5]> = pools.iter().map(pool_cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |cells: &[String]| -> String {
        let mut line = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line
    };
    let head = pad(&header.map(String::from));
    let mut out = format!("{head}last decision\n");
    for (pool, cells) in pools.iter().zip(&rows) {
        let line = pad(cells);
        let room = style
            .width
            .map_or(SENTENCE_MAX, |w| w.saturating_sub(line.chars().count()));
        let sentence = shorten(pool.summary.as_deref().unwrap_or("-"), room.max(10));
        let steady = pool.desired == Some(pool.actual) && pool.pending_creates == 0;
        let name = style.paint(if steady { GREEN } else { YELLOW }, &cells[0]);
        let rest = line.strip_prefix(cells[0].as_str()).unwrap_or(&line);
        out.push_str(&format!("{name}{rest}{sentence}\n"));
    }
    out
}

/// A pool's cells, before the sentence.
fn pool_cells(p: &Pool) -> [String; 5] {
    let known = |n: Option<u32>| n.map_or("?".to_string(), |n| n.to_string());
    let claims = match &p.claims {
        Some(c) if c.idle_paused > 0 => {
            format!("{}/{} (+{} paused)", c.claimed, c.idle, c.idle_paused)
        }
        Some(c) => format!("{}/{}", c.claimed, c.idle),
        None => "-".to_string(),
    };
    [
        p.name.clone(),
        format!("{}/{}", p.actual, known(p.desired)),
        p.pending_creates.to_string(),
        format!("{}..{}", known(p.min), known(p.max)),
        claims,
    ]
}

/// `text` cut to `max` characters, its end marked with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// An RFC 3339 time to the second, as `2025-01-01T00:00:00Z`; as given when it is not one.
fn to_seconds(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at).map_or(at.to_string(), |t| {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    })
}

/// The firing alerts, one line each (alert, subject, since, value), in red; or a line saying
/// there are none.
fn firing_alerts(alerts: &BTreeMap<String, BTreeMap<String, Alert>>, style: &Style) -> String {
    let firing: Vec<String> = alerts
        .iter()
        .flat_map(|(name, by_subject)| {
            by_subject
                .iter()
                .filter(|(_, a)| a.phase == "firing")
                .map(move |(subject, a)| {
                    let since = a.fired_at.as_deref().map_or("?".to_string(), to_seconds);
                    format!("  {name}  {subject}  since {since}  value {}\n", a.value)
                })
        })
        .collect();
    if firing.is_empty() {
        return "alerts: none firing\n".to_string();
    }
    let head = style.paint(RED, &format!("alerts: {} firing", firing.len()));
    format!("{head}\n{}", firing.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        serde_json::from_value(json!({
            "agent": "http://127.0.0.1:9477",
            "ready": { "ready": false, "reason": "3 polls failed in a row" },
            "pools": [
                { "name": "w", "actual": 2, "pending_creates": 1, "desired": 3, "min": 2,
                  "max": 4, "summary": "scale up: ".to_string() + &"x".repeat(200),
                  "claims": { "claimed": 1, "idle": 1, "idle_paused": 2 } },
                { "name": "fresh", "actual": 0, "pending_creates": 0 }
            ],
            "alerts": { "hot": {
                "w": { "phase": "firing", "fired_at": "2025-01-01T00:00:00.123456Z", "value": 2.0 },
                "v": { "phase": "pending", "fired_at": null, "value": 1.0 } } }
        }))
        .unwrap()
    }

    #[test]
    fn a_pipe_gets_plain_lines_with_sentences_of_at_most_100_characters() {
        let plain = Style {
            colour: false,
            width: None,
        };
        let text = render(&snapshot(), &plain);
        assert!(!text.contains('\x1b'), "{text}");
        let w = text.lines().find(|l| l.starts_with("w ")).unwrap();
        assert!(w.contains("2/3") && w.contains("2..4") && w.contains("1/1 (+2 paused)"));
        let sentence = w.split("  ").last().unwrap();
        assert_eq!(sentence.chars().count(), 100, "{w}");
        assert!(sentence.ends_with('…'));
        let fresh = text.lines().find(|l| l.starts_with("fresh")).unwrap();
        assert!(fresh.contains("0/?") && fresh.contains("?..?"), "{fresh}");
        assert!(text.contains("alerts: 1 firing\n  hot  w  since 2025-01-01T00:00:00Z"));
        assert!(
            !text.contains("  hot  v"),
            "a pending alert is not firing: {text}"
        );
        assert!(
            text.ends_with("not ready: 3 polls failed in a row\n"),
            "{text}"
        );
    }

    #[test]
    fn a_terminal_gets_colour_and_lines_that_fit_its_width() {
        let tty = Style {
            colour: true,
            width: Some(80),
        };
        let text = render(&snapshot(), &tty);
        assert!(
            text.contains("\x1b[33mw\x1b[0m"),
            "off its desired size: {text}"
        );
        assert!(text.contains("\x1b[31mnot ready\x1b[0m"), "{text}");
        let w = text.lines().find(|l| l.contains("2..4")).unwrap();
        let visible = w.replace("\x1b[33m", "").replace("\x1b[0m", "");
        assert_eq!(visible.chars().count(), 80, "{visible}");
    }
}
