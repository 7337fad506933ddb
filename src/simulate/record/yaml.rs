//! A recorded scenario written as YAML a person can read: a header saying where it came from
//! and how demand was measured, a comment on each template saying how its fields were found,
//! the saturated spans and gaps above each curve, one point per line. What it writes loads
//! back with [`Scenario::parse`](crate::emulator::Scenario::parse) (the caller checks).
//!
//! Never reads or writes a file.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Recorded, Span, TemplateNotes};
use crate::duration::HumanDuration;

/// The scenario of `r`, recorded from `from` over `span`, as commented YAML.
pub fn render(r: &Recorded, from: &str, span: &Span) -> String {
    let s = &r.scenario;
    let mut out = header(from, span);
    let duration = s.duration.map_or(Duration::ZERO, |d| d.0);
    let _ = writeln!(out, "duration: {}\nseed: {}", time(duration), s.seed);
    out.push_str("templates:\n");
    for (name, t) in &s.templates {
        if let Some(n) = r.templates.get(name) {
            let _ = writeln!(out, "  # {}", template_note(n));
        }
        let _ = writeln!(
            out,
            "  {}: {{ cpu_count: {}, memory_mb: {}, disk_mb: {}, boot: {} }}",
            key(name),
            t.cpu_count,
            t.memory_mb,
            t.disk_mb,
            time(t.boot.0)
        );
    }
    load(&mut out, r);
    initial(&mut out, r);
    faults(&mut out, r);
    jobs(&mut out, r);
    out
}

/// Where the recording came from, and how to read its demand.
fn header(from: &str, span: &Span) -> String {
    format!(
        "# Recorded by `poolpilot record --from {from}` from {} to {}, in steps of {}.\n\
         # Replay it: poolpilot simulate --rules RULES --scenario THIS_FILE\n\
         # Demand is each pool's busy cores (the sum of cpu_used_pct x cpu_count / 100 over its\n\
         # running members) averaged per step and summed per template. Where a pool's members ran\n\
         # at their CPU ceiling (saturated), busy cores equal its capacity and the real demand was\n\
         # higher than recorded: those spans are listed above each curve.\n",
        span.start
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        span.end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        HumanDuration(span.step)
    )
}

/// How a template's fields were found, in one line.
fn template_note(n: &TemplateNotes) -> String {
    let mut parts = vec![format!("pools: {}", n.pools.join(", "))];
    if n.assumed {
        parts.push(
            "no created event named a template: `base` assumed; rename it to the pools' template"
                .into(),
        );
    }
    parts.push(if n.shape_samples == 0 {
        "no member samples: E2B's base shape assumed".into()
    } else {
        format!("shape from {} member samples", n.shape_samples)
    });
    parts.push(if n.boots_timed == 0 {
        "no create timed: boot is the default".into()
    } else if n.stamped_at_call {
        "created events stamped at the call: boot not measurable, the default; set yours".into()
    } else {
        format!(
            "boot: 10th percentile of {} creates' delays to their created event",
            n.boots_timed
        )
    });
    parts.join("; ")
}

fn load(out: &mut String, r: &Recorded) {
    if r.scenario.load.is_empty() {
        return;
    }
    out.push_str("load:\n");
    for l in &r.scenario.load {
        let _ = writeln!(out, "  - template: {}", key(&l.template));
        if let Some(spans) = r.saturated.get(&l.template).filter(|s| !s.is_empty()) {
            let _ = writeln!(
                out,
                "    # saturated (demand was likely higher): {}",
                spans_text(spans)
            );
        }
        if let Some(spans) = r.gaps.get(&l.template).filter(|s| !s.is_empty()) {
            let _ = writeln!(
                out,
                "    # no samples (the curve joins the ends): {}",
                spans_text(spans)
            );
        }
        out.push_str("    points:\n");
        for (t, v) in &l.points {
            let _ = writeln!(out, "      - [{}, {v}]", time(t.0));
        }
    }
}

fn initial(out: &mut String, r: &Recorded) {
    if r.scenario.initial.is_empty() {
        return;
    }
    out.push_str("# Each pool's running members at its first sample.\ninitial:\n");
    for i in &r.scenario.initial {
        let meta: Vec<String> = i
            .metadata
            .iter()
            .map(|(k, v)| format!("{}: {}", key(k), key(v)))
            .collect();
        let _ = writeln!(
            out,
            "  - {{ template: {}, count: {}, metadata: {{ {} }} }}",
            key(&i.template),
            i.count,
            meta.join(", ")
        );
    }
}

fn faults(out: &mut String, r: &Recorded) {
    if r.scenario.faults.is_empty() {
        return;
    }
    out.push_str("# Crashes: killed events whose kill_reason is neither request nor timeout.\n");
    out.push_str("faults:\n");
    for f in &r.scenario.faults {
        let _ = writeln!(
            out,
            "  - {{ at: {}, kill: {}, template: {}, reason: {} }}",
            time(f.at.0),
            f.kill.unwrap_or(1),
            key(f.template.as_deref().unwrap_or("base")),
            key(f.reason.as_deref().unwrap_or("unknown"))
        );
    }
}

fn jobs(out: &mut String, r: &Recorded) {
    if r.scenario.jobs.is_empty() {
        return;
    }
    out.push_str("# Claims: arrivals per second per step, and the mean hold.\njobs:\n");
    for j in &r.scenario.jobs {
        let _ = writeln!(
            out,
            "  - pool: {}\n    hold: {}\n    wait: {}\n    points:",
            key(&j.pool),
            time(j.hold.0),
            time(j.wait.0)
        );
        for (t, v) in &j.points {
            let _ = writeln!(out, "      - [{}, {v}]", time(t.0));
        }
    }
}

/// `10m30s-12m, 20m-21m`.
fn spans_text(spans: &[(f64, f64)]) -> String {
    spans
        .iter()
        .map(|(a, b)| {
            format!(
                "{}-{}",
                HumanDuration(Duration::from_secs_f64(*a)),
                HumanDuration(Duration::from_secs_f64(*b))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time as the scenario parser reads it: whole seconds, else milliseconds.
fn time(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A name plain when YAML reads it back as the same string, else double-quoted (JSON's
/// quoting is YAML's).
fn key(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !["true", "false", "yes", "no", "on", "off", "null", "y", "n"]
            .contains(&name.to_ascii_lowercase().as_str());
    if plain {
        name.to_string()
    } else {
        serde_json::to_string(name).unwrap_or_default()
    }
}
