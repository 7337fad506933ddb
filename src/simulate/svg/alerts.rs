//! The alert spans of a chart: when each alert rule was firing, shaded across both panels and
//! named at the top of its span (truncated to the span's width, whole in a hover `<title>`).
//!
//! It reads only the frames' `alerts_firing`; it never decides what counts as firing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::axis::duration_label;
use super::{ALERT_COLOR, Chart, PANEL_H, TOP1, TOP2, esc};
use crate::simulate::Frame;

/// Alert names stack in this many rows at the top of the panel, then start over.
const LANES: usize = 4;
/// Height of one row of alert names.
const LANE_H: f64 = 13.0;
/// The width of one character of a name, roughly, at its font size (11).
const CHAR_W: f64 = 6.3;

/// One alert rule firing from `from` to `to` (seconds from the start), on label row `lane`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub name: String,
    pub from: f64,
    pub to: f64,
    pub lane: usize,
}

/// The spans of every alert rule, in order of start; a span still open at the end closes at
/// `t_max`. Each name keeps one label row, given in order of first firing.
pub(crate) fn spans(frames: &[Frame], t_max: f64) -> Vec<Span> {
    let mut open: BTreeMap<&str, f64> = BTreeMap::new();
    let mut done: Vec<(String, f64, f64)> = Vec::new();
    for f in frames {
        let ended: Vec<&str> = open
            .keys()
            .filter(|name| !f.alerts_firing.iter().any(|a| a == *name))
            .copied()
            .collect();
        for name in ended {
            if let Some(from) = open.remove(name) {
                done.push((name.to_string(), from, f.t_s));
            }
        }
        for name in &f.alerts_firing {
            open.entry(name.as_str()).or_insert(f.t_s);
        }
    }
    done.extend(
        open.into_iter()
            .map(|(n, from)| (n.to_string(), from, t_max)),
    );
    done.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    with_lanes(done)
}

/// Gives each alert name its label row, in order of first firing.
fn with_lanes(spans: Vec<(String, f64, f64)>) -> Vec<Span> {
    let mut lanes: BTreeMap<String, usize> = BTreeMap::new();
    spans
        .into_iter()
        .map(|(name, from, to)| {
            let next = lanes.len() % LANES;
            let lane = *lanes.entry(name.clone()).or_insert(next);
            Span {
                name,
                from,
                to,
                lane,
            }
        })
        .collect()
}

/// `name` cut to fit `width` pixels, with an ellipsis; `None` when not even two characters fit.
pub(crate) fn fit(name: &str, width: f64) -> Option<String> {
    let room = (width / CHAR_W).floor() as usize;
    let len = name.chars().count();
    if len <= room {
        Some(name.to_string())
    } else if room >= 3 {
        Some(name.chars().take(room - 1).chain(['…']).collect())
    } else {
        None
    }
}

impl Chart<'_> {
    /// A shaded band across both panels for each span, named at the top of the upper panel.
    pub(super) fn alert_spans(&mut self) {
        for s in spans(&self.r.frames, self.t_max) {
            self.shade(&s);
        }
    }

    fn shade(&mut self, s: &Span) {
        let (x0, x1) = (self.x(s.from), self.x(s.to));
        let width = (x1 - x0).max(1.0);
        let title = format!(
            "alert {} firing from {} to {}",
            s.name,
            duration_label(s.from.round() as u64),
            duration_label(s.to.round() as u64)
        );
        let _ = writeln!(
            self.out,
            r#"<rect x="{x0:.1}" y="{TOP1}" width="{width:.1}" height="{:.1}" fill="{ALERT_COLOR}" opacity="0.12"><title>{}</title></rect>"#,
            TOP2 + PANEL_H - TOP1,
            esc(&title)
        );
        if let Some(label) = fit(&s.name, width - 4.0) {
            let _ = writeln!(
                self.out,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#8a3200" stroke="white" stroke-width="3" paint-order="stroke"><title>{}</title>{}</text>"##,
                x0 + 2.0,
                TOP1 + 11.0 + s.lane as f64 * LANE_H,
                esc(&title),
                esc(&label)
            );
        }
    }
}
