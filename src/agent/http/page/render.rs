//! The status page as HTML, from a [`Snapshot`] (or a sandbox's [`Timeline`]): one function per
//! section, each returning its markup. Every string that came from a user or a server (pool
//! and alert names, messages, holders, sandbox ids, event types) goes through [`esc`]; ids
//! in links are also percent-encoded.
//!
//! Sections that change between turns carry `data-live` and a stable `id`: the live script
//! swaps exactly those. The events filter form sits outside them, so typing in it survives
//! an update. Nothing here reads the agent or the store.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::chart::{pool_chart, sparkline};
use super::{Firing, MemberRow, PoolCard, Snapshot, assets};
use crate::agent::control::LoggedDecision;
use crate::engine::ClampKind;
use crate::store::read::{AlertEpisode, StoredEvent, Timeline};

/// `s` safe in HTML text and in a quoted attribute.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table's opening up to its body, with a column header (`scope="col"`) per name.
fn table_head(columns: &[&str]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for c in columns {
        let _ = write!(out, "<th scope=\"col\">{c}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    out
}

/// A live section's opening: its landmark, labelled by its heading.
fn live_section(id: &str, title: &str) -> String {
    format!(
        "<section id=\"{id}\" aria-labelledby=\"{id}-h\" data-live><h2 id=\"{id}-h\">{title}</h2>"
    )
}

/// `s` as one path segment or query value.
fn url(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// The document around `main`: the stylesheet and the live script, both under `nonce`.
fn shell(nonce: &str, title: &str, header: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title}</title><style nonce=\"{nonce}\">{css}</style></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><p class=\"brand\"><a href=\"/\">poolpilot</a></p>{header}\
         <p class=\"live\" id=\"live-state\" aria-live=\"polite\">static page</p></header>\
         <main id=\"main\">{main}</main>\
         <footer><p>Read-only. JSON: <a href=\"/api/v1/pools\">/api/v1/pools</a> · \
         <a href=\"/api/v1/events\">/api/v1/events</a> · <a href=\"/metrics\">/metrics</a></p></footer>\
         <script nonce=\"{nonce}\">{js}</script></body></html>\n",
        title = esc(title),
        css = assets::CSS,
        js = assets::JS,
    )
}

/// A page that says what is wrong (a bad parameter, an unknown sandbox).
pub(crate) fn problem(nonce: &str, message: &str) -> String {
    let main = format!(
        "<h1>Not shown</h1><p class=\"problem\" role=\"alert\">{}</p><p><a href=\"/\">Back to the status page</a></p>",
        esc(message)
    );
    shell(nonce, "poolpilot: not shown", "", &main)
}

/// `GET /`.
pub(crate) fn index(nonce: &str, s: &Snapshot) -> String {
    let header = agent_line(s);
    let mut main = String::from("<h1 class=\"sr-only\">poolpilot status</h1>");
    main.push_str(&pools(s));
    main.push_str("<div class=\"cols\">");
    main.push_str(&alerts(s));
    main.push_str(&decisions(&s.decisions, s.now));
    main.push_str("</div>");
    main.push_str(&members(&s.members, s.now));
    main.push_str(&events(s));
    shell(nonce, "poolpilot status", &header, &main)
}

/// The agent in one line: ready or not and why, dry run, ticks, the time.
fn agent_line(s: &Snapshot) -> String {
    let (class, word) = if s.ready {
        ("ok", "ready")
    } else {
        ("bad", "not ready")
    };
    let dry = if s.dry_run {
        " · <strong>dry run</strong>"
    } else {
        ""
    };
    format!(
        "<p class=\"agent\" id=\"agent\" data-live><span class=\"badge {class}\">{word}</span> \
         <span class=\"muted\">{reason}</span>{dry} · {ticks} ticks · as of {at}</p>",
        reason = esc(&s.reason),
        ticks = s.ticks,
        at = time(s.now),
    )
}

/// The pools, one card each.
fn pools(s: &Snapshot) -> String {
    let mut out = String::from(
        "<section id=\"pools\" aria-labelledby=\"pools-h\" data-live aria-live=\"polite\">\
         <h2 id=\"pools-h\">Pools</h2>",
    );
    if s.pools.is_empty() {
        out.push_str("<p class=\"muted\">No pool evaluated yet.</p>");
    }
    out.push_str("<div class=\"cards\">");
    for (i, p) in s.pools.iter().enumerate() {
        out.push_str(&pool_card(i, p, s.now));
    }
    out.push_str("</div></section>");
    out
}

/// One pool: its counts, its last decision's sentence, its holds, its chart.
fn pool_card(i: usize, p: &PoolCard, now: DateTime<Utc>) -> String {
    let status = p.state.status.as_ref();
    let num = |v: Option<u32>| v.map_or("–".to_string(), |v| v.to_string());
    let counts = [
        ("desired", num(status.map(|s| s.desired))),
        ("actual", p.actual.to_string()),
        ("pending", p.pending.to_string()),
        ("claimed", p.claimed.to_string()),
        ("idle", p.idle.to_string()),
        ("paused", p.paused.to_string()),
        ("min", num(status.map(|s| s.min))),
        ("max", num(status.map(|s| s.max))),
    ];
    let mut dl = String::from("<dl class=\"counts\">");
    for (name, v) in counts {
        let _ = write!(
            dl,
            "<div data-count=\"{name}\"><dt>{name}</dt><dd>{v}</dd></div>"
        );
    }
    dl.push_str("</dl>");
    let summary = status.map_or("Not evaluated yet.".to_string(), |s| esc(&s.summary));
    format!(
        "<article class=\"pool\" aria-labelledby=\"pool-{i}\" data-pool=\"{name}\">\
         <h3 id=\"pool-{i}\"><a href=\"/?pool={q}#events\">{name}</a></h3>{dl}\
         <p class=\"summary\">{summary}</p>{holds}{chart}</article>",
        name = esc(&p.name),
        q = url(&p.name),
        holds = holds(p, now),
        chart = pool_chart(&p.name, &p.history, now),
    )
}

/// The limits holding a pool back that end at a known time: clamps with `until`, and
/// cooldowns still running.
fn holds(p: &PoolCard, now: DateTime<Utc>) -> String {
    let mut items = Vec::new();
    if let Some(status) = &p.state.status {
        for c in status
            .clamps
            .iter()
            .filter(|c| c.until.is_some_and(|u| u > now))
        {
            let until = c.until.map(time).unwrap_or_default();
            items.push(format!(
                "{} ({} → {}) until {until}",
                esc(clamp_name(c.kind)),
                c.from,
                c.to
            ));
        }
    }
    let cooldowns = [
        ("scale-up cooldown", p.state.cooldown_up_until),
        ("scale-down cooldown", p.state.cooldown_down_until),
    ];
    for (name, until) in cooldowns {
        if let Some(u) = until.filter(|u| *u > now)
            && !items.iter().any(|i| i.contains("cooldown"))
        {
            items.push(format!("{name} until {}", time(u)));
        }
    }
    if items.is_empty() {
        return String::new();
    }
    format!(
        "<ul class=\"holds\" aria-label=\"holds\"><li>{}</li></ul>",
        items.join("</li><li>")
    )
}

fn clamp_name(kind: ClampKind) -> &'static str {
    match kind {
        ClampKind::MissingData => "missing data",
        ClampKind::Stabilization => "stabilization",
        ClampKind::MaxStep => "max step",
        ClampKind::Policy => "rate policy",
        ClampKind::Cooldown => "cooldown",
        ClampKind::Min => "min",
        ClampKind::Max => "max",
        _ => "limit",
    }
}

/// Alerts firing now, and the episodes of the last 24 h.
fn alerts(s: &Snapshot) -> String {
    let mut out = String::from(
        "<section id=\"alerts\" aria-labelledby=\"alerts-h\" data-live aria-live=\"polite\">\
         <h2 id=\"alerts-h\">Alerts</h2><h3>Firing now</h3>",
    );
    if s.firing.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-firing\">Nothing is firing.</p>");
    } else {
        out.push_str("<ul class=\"firing\">");
        for f in &s.firing {
            out.push_str(&firing_item(f, s.now));
        }
        out.push_str("</ul>");
    }
    out.push_str("<h3>Last 24 hours</h3>");
    match &s.episodes {
        None => out.push_str("<p class=\"muted\">No history store.</p>"),
        Some(e) if e.is_empty() => out.push_str("<p class=\"muted\">No alerts.</p>"),
        Some(e) => out.push_str(&episodes(e, s.now)),
    }
    out.push_str("</section>");
    out
}

fn firing_item(f: &Firing, now: DateTime<Utc>) -> String {
    let since = f
        .since
        .map(|t| format!(" for {}", span(now - t)))
        .unwrap_or_default();
    format!(
        "<li class=\"alert\" data-alert=\"{a}\"><strong>{a}</strong> on {s}{since}<br>{m}</li>",
        a = esc(&f.alert),
        s = esc(&f.subject),
        m = f.message.as_deref().map(esc).unwrap_or_default(),
    )
}

fn episodes(list: &[AlertEpisode], now: DateTime<Utc>) -> String {
    let mut out = table_head(&["alert", "subject", "state", "from", "lasted", "message"]);
    for e in list.iter().take(50) {
        let lasted = span(e.resolved_at.unwrap_or(now) - e.started_at);
        let _ = write!(
            out,
            "<tr data-episode=\"{a}\" data-state=\"{st}\"><td>{a}</td><td>{s}</td><td><span class=\"badge {c}\">{st}</span></td>\
             <td>{from}</td><td>{lasted}</td><td>{m}</td></tr>",
            a = esc(&e.alert),
            s = esc(&e.subject),
            st = e.state,
            c = if e.state == "firing" { "bad" } else { "ok" },
            from = time(e.started_at),
            m = esc(&e.message),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The newest decisions, each with its cause and outcome.
fn decisions(list: &[LoggedDecision], now: DateTime<Utc>) -> String {
    let mut out = live_section("decisions", "Recent decisions");
    if list.is_empty() {
        out.push_str("<p class=\"muted\">No decision yet.</p></section>");
        return out;
    }
    out.push_str(&table_head(&["when", "rule", "cause", "outcome"]));
    for d in list {
        let dry = if d.decision.dry_run { " (dry run)" } else { "" };
        let _ = write!(
            out,
            "<tr class=\"decision\"><td class=\"when\">{ago}</td><td class=\"rule\">{rule}</td><td>{cause}</td>\
             <td><span class=\"kind\">{kind}</span> {outcome}{dry}</td></tr>",
            ago = ago(d.decision.at, now),
            rule = esc(&d.decision.rule),
            cause = esc(&d.decision.cause.summary),
            kind = crate::agent::act::kind(&d.decision.action),
            outcome = esc(&d.outcome),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The members table: CPU and memory sparklines, age, time left, holder.
fn members(rows: &[MemberRow], now: DateTime<Utc>) -> String {
    let mut out = live_section("members", "Members");
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">No member observed.</p></section>");
        return out;
    }
    out.push_str(&table_head(&[
        "sandbox",
        "pool",
        "state",
        "CPU (1 h)",
        "memory (1 h)",
        "age",
        "time left",
        "holder",
    ]));
    for m in rows {
        let cpu: Vec<f64> = m.samples.iter().map(|s| s.cpu_pct).collect();
        let mem: Vec<f64> = m
            .samples
            .iter()
            .filter(|s| s.mem_total > 0)
            .map(|s| s.mem_used as f64 * 100.0 / s.mem_total as f64)
            .collect();
        let sb = &m.sandbox;
        let _ = write!(
            out,
            "<tr class=\"member\" data-sandbox=\"{id}\"><th scope=\"row\"><a href=\"/sandboxes/{u}\">{id}</a></th>\
             <td>{pool}</td><td>{state}</td><td>{cpu}</td><td>{mem}</td><td>{age}</td><td>{left}</td><td>{holder}</td></tr>",
            id = esc(&sb.id),
            u = url(&sb.id),
            pool = esc(&m.pool),
            state = sb.state.as_str(),
            cpu = sparkline("CPU", &cpu),
            mem = sparkline("memory", &mem),
            age = span(now - sb.started_at),
            left = span(sb.end_at - now),
            holder = m
                .holder
                .as_deref()
                .map_or("<span class=\"muted\">–</span>".into(), esc),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The events timeline: the filter form (outside the live part), then the events.
fn events(s: &Snapshot) -> String {
    let mut options = String::from("<option value=\"\">all pools</option>");
    for p in &s.pools {
        let selected = if s.filter.pool.as_deref() == Some(&p.name) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            "<option value=\"{n}\"{selected}>{n}</option>",
            n = esc(&p.name)
        );
    }
    let sandbox = s.filter.sandbox.as_deref().map(esc).unwrap_or_default();
    let mut out = format!(
        "<section id=\"events\" aria-labelledby=\"events-h\"><h2 id=\"events-h\">Events</h2>\
         <form class=\"filter\" method=\"get\" action=\"/#events\">\
         <label for=\"f-pool\">Pool</label><select id=\"f-pool\" name=\"pool\">{options}</select>\
         <label for=\"f-sandbox\">Sandbox</label><input id=\"f-sandbox\" name=\"sandbox\" value=\"{sandbox}\" placeholder=\"any sandbox id\">\
         <button type=\"submit\">Filter</button> <a href=\"/#events\">Clear</a></form>\
         <div id=\"events-list\" data-live>"
    );
    match &s.events {
        None => out.push_str("<p class=\"muted\">No history store.</p>"),
        Some(list) if list.is_empty() => out.push_str("<p class=\"muted\">No events.</p>"),
        Some(list) => out.push_str(&event_table(list, s.now)),
    }
    out.push_str("</div></section>");
    out
}

fn event_table(list: &[StoredEvent], now: DateTime<Utc>) -> String {
    let mut out = table_head(&["when", "event", "sandbox", "pool", "from"]);
    for e in list {
        let ev = &e.event;
        let reason = ev
            .kill_reason()
            .map(|r| format!(" ({})", esc(r)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"event\"><td>{ago}</td><td>{ty}{reason}</td>\
             <td><a href=\"/sandboxes/{u}\">{id}</a></td><td>{pool}</td><td>{src}</td></tr>",
            ago = ago(ev.timestamp, now),
            ty = esc(short_type(ev.event_type.as_str())),
            u = url(&ev.sandbox_id),
            id = esc(&ev.sandbox_id),
            pool = e.pool.as_deref().map(esc).unwrap_or_default(),
            src = esc(&e.source),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// `sandbox.lifecycle.killed` as `killed`.
fn short_type(t: &str) -> &str {
    t.strip_prefix("sandbox.lifecycle.").unwrap_or(t)
}

/// `GET /sandboxes/{id}`: Pattern 1, one sandbox from first to last.
pub(crate) fn timeline(nonce: &str, t: &Timeline, now: DateTime<Utc>) -> String {
    let cpu: Vec<f64> = t.samples.iter().map(|s| s.cpu_pct).collect();
    let mem: Vec<f64> = t
        .samples
        .iter()
        .filter(|s| s.mem_total > 0)
        .map(|s| s.mem_used as f64 * 100.0 / s.mem_total as f64)
        .collect();
    let pool = t
        .pool
        .as_deref()
        .map(|p| {
            format!(
                " in pool <a href=\"/?pool={}#events\">{}</a>",
                url(p),
                esc(p)
            )
        })
        .unwrap_or_default();
    let mut main = format!(
        "<h1>Sandbox <code>{id}</code></h1><p>{pool}</p>\
         {section}<p class=\"metrics\">CPU {cpu} · memory {mem} · {n} samples</p>{head}",
        section = live_section("timeline", "Timeline"),
        head = table_head(&["when", "kind", "what"]),
        id = esc(&t.sandbox_id),
        cpu = sparkline("CPU", &cpu),
        mem = sparkline("memory", &mem),
        n = t.samples.len(),
    );
    for e in &t.entries {
        let _ = write!(
            main,
            "<tr class=\"entry\" data-kind=\"{k}\"><td>{at} <span class=\"muted\">({ago})</span></td>\
             <td>{k}</td><td>{what}</td></tr>",
            at = time(e.at),
            ago = ago(e.at, now),
            k = e.kind,
            what = esc(&e.what),
        );
    }
    main.push_str("</tbody></table></section>");
    let title = format!("poolpilot: sandbox {}", t.sandbox_id);
    shell(nonce, &title, "", &main)
}

/// A time as `<time>`, shown as `HH:MM:SS` (UTC).
fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339(),
        t.format("%H:%M:%S")
    )
}

/// How long before `now`, as `<time>`.
fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{} ago</time>",
        t.to_rfc3339(),
        t.format("%Y-%m-%d %H:%M:%S UTC"),
        span(now - t)
    )
}

/// A span as `2h 5m`, `4m 10s`, `12s`; a negative one as `–`.
fn span(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds();
    if s < 0 {
        return "–".to_string();
    }
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_from_users_is_escaped() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        assert_eq!(url("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn spans_read_at_a_glance() {
        let d = chrono::TimeDelta::seconds;
        assert_eq!(span(d(12)), "12s");
        assert_eq!(span(d(250)), "4m 10s");
        assert_eq!(span(d(7500)), "2h 5m");
        assert_eq!(span(d(-3)), "–");
    }
}
