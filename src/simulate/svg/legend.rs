//! Under the panels: the legend (one key per series, drawn with its colour and dash pattern,
//! plus the scale marks and the alert shading) and the run's totals as lines of text.
//!
//! It only describes what the report holds; the figures are the same ones `simulate`'s summary
//! prints, formatted by the same helpers.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ALERT_COLOR, Chart, LEFT, esc};
use crate::simulate::{SimReport, percent, times};

/// Legend keys a row.
const PER_ROW: usize = 3;
const COLUMN_W: f64 = 310.0;
const ROW_H: f64 = 18.0;
/// A legend label longer than this is cut (the series stays whole in the chart).
const MAX_LABEL: usize = 44;

/// How a legend entry is drawn.
#[derive(Debug, Clone)]
pub(super) enum Key {
    /// A series: a line in its colour and dash pattern (empty: solid).
    Line {
        color: &'static str,
        dash: &'static str,
    },
    /// The creates (filled, up) and kills (hollow, down) of a pool, in its colour.
    Marks { color: &'static str },
    /// The alert shading.
    Shade,
}

impl Chart<'_> {
    /// The legend from `top`, three keys a row, the alert shading last when an alert fired;
    /// returns the y below it.
    pub(super) fn legend(&mut self, top: f64) -> f64 {
        if self.r.frames.iter().any(|f| !f.alerts_firing.is_empty()) {
            self.legend.push((
                Key::Shade,
                "alert firing (shaded, named at the top)".to_string(),
            ));
        }
        let keys = std::mem::take(&mut self.legend);
        for (i, (key, label)) in keys.iter().enumerate() {
            let x = LEFT + (i % PER_ROW) as f64 * COLUMN_W;
            let y = top + (i / PER_ROW) as f64 * ROW_H;
            self.key(key, x, y);
            let _ = writeln!(
                self.out,
                r##"<text x="{:.1}" y="{:.1}" fill="#222">{}</text>"##,
                x + 34.0,
                y + 4.0,
                esc(&shorten(label))
            );
        }
        top + keys.len().div_ceil(PER_ROW) as f64 * ROW_H
    }

    /// The symbol of one legend entry, 28 pixels wide, centred on `y`.
    fn key(&mut self, key: &Key, x: f64, y: f64) {
        let _ = match key {
            Key::Line { color, dash } => writeln!(
                self.out,
                r#"<line x1="{x:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{}"/>"#,
                x + 28.0,
                dash_or_none(dash)
            ),
            Key::Marks { color } => writeln!(
                self.out,
                r#"<path d="M{:.1},{:.1} l5,9 l-10,0 z" fill="{color}"/><path d="M{:.1},{:.1} l5,-9 l-10,0 z" fill="white" stroke="{color}" stroke-width="1.5"/>"#,
                x + 7.0,
                y - 5.0,
                x + 21.0,
                y + 5.0
            ),
            Key::Shade => writeln!(
                self.out,
                r#"<rect x="{x:.1}" y="{:.1}" width="28" height="12" fill="{ALERT_COLOR}" opacity="0.25"/>"#,
                y - 6.0
            ),
        };
    }

    /// The run's totals from `top`, a heading and a line each; returns the y below them.
    pub(super) fn totals(&mut self, top: f64) -> f64 {
        let _ = writeln!(
            self.out,
            r##"<text x="{LEFT}" y="{top:.1}" font-weight="bold" fill="#222">Totals</text>"##
        );
        let lines = totals_lines(self.r);
        for (i, line) in lines.iter().enumerate() {
            let _ = writeln!(
                self.out,
                r##"<text x="{LEFT}" y="{:.1}" fill="#222">{}</text>"##,
                top + 18.0 + i as f64 * 16.0,
                esc(line)
            );
        }
        top + 18.0 + lines.len() as f64 * 16.0
    }
}

/// `stroke-dasharray`'s value for a dash pattern (`none` for solid).
pub(super) fn dash_or_none(dash: &str) -> &str {
    if dash.is_empty() { "none" } else { dash }
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL {
        label.to_string()
    } else {
        label.chars().take(MAX_LABEL - 1).chain(['…']).collect()
    }
}

/// The totals as lines: cost against the floor and unmet demand, the scale actions and
/// alerts, each pool when there are several, and the claims of the scenario's jobs.
pub(crate) fn totals_lines(r: &SimReport) -> Vec<String> {
    let t = &r.total;
    let mut lines = vec![
        format!(
            "over {}: {:.0} sandbox-seconds = {} the floor of {:.0}; unmet demand {} ({:.0} of {:.0} core-seconds)",
            humantime::format_duration(Duration::from_secs_f64(r.duration_s.max(0.0))),
            t.sandbox_seconds,
            times(t.cost_vs_floor),
            t.floor_sandbox_seconds,
            percent(t.unmet_pct),
            t.unmet_core_seconds,
            t.demand_core_seconds
        ),
        actions_line(r),
    ];
    if r.pools.len() > 1 {
        lines.extend(r.pools.iter().map(|(name, p)| {
            format!(
                "pool {name}: {:.0} sandbox-seconds, peak {}, {} creates, {} kills, {} alerts fired",
                p.sandbox_seconds, p.peak_pool_size, p.creates, p.kills, p.alerts_fired
            )
        }));
    }
    lines.extend(r.jobs.iter().map(|(name, j)| {
        format!(
            "claims on {name}: {} arrived, {} served at once, {} after a wait, {} resumed, {} timed out; latency p50 {:.2}s p99 {:.2}s",
            j.arrived, j.immediate, j.waited, j.resumed, j.timed_out, j.latency_p50_s, j.latency_p99_s
        )
    }));
    lines
}

/// Creates (and refusals), kills, the peak, alerts and unmanaged sandboxes, on one line.
fn actions_line(r: &SimReport) -> String {
    let t = &r.total;
    let mut line = format!("{} creates", t.creates);
    if r.create_failures > 0 {
        line.push_str(&format!(" ({} refused)", r.create_failures));
    }
    line.push_str(&format!(
        ", {} kills, peak {} sandboxes in pools, {} alerts fired, {} resolved",
        t.kills, t.peak_pool_size, t.alerts_fired, t.alerts_resolved
    ));
    let unmanaged = r.frames.iter().map(|f| f.unmanaged).max().unwrap_or(0);
    if unmanaged > 0 {
        line.push_str(&format!(", up to {unmanaged} unmanaged"));
    }
    if r.dry_run_decisions > 0 {
        line.push_str(&format!(", {} dry-run decisions", r.dry_run_decisions));
    }
    line
}
