//! The chart of a simulation as a standalone SVG: demand and capacity in cores (top), pool
//! sizes with their creates and kills, and unmanaged sandboxes (bottom), each alert's firing
//! span shaded and named across both, then a legend and the run's totals.
//!
//! The file is self-contained (no fonts, scripts or links) and valid XML: every name from the
//! rules or the scenario goes through [`esc`]. Series are told apart by colour (Okabe-Ito,
//! safe for colour-blind readers) and by dash pattern. It draws the report; it never changes
//! or recomputes it.
//!
//! - [`axis`]: round ticks for counts and durations;
//! - [`alerts`]: the alert spans and their names;
//! - [`legend`]: the legend and the totals block.

mod alerts;
pub(crate) mod axis;
mod legend;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Frame, SimReport};
use legend::{Key, dash_or_none};

const W: f64 = 1000.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 200.0;
const TOP1: f64 = 50.0;
const TOP2: f64 = TOP1 + PANEL_H + 60.0;
/// Where the legend starts: under the bottom panel's time labels.
const LEGEND_TOP: f64 = TOP2 + PANEL_H + 40.0;
/// Okabe-Ito's colours for series, vermillion kept for alerts and yellow left out (too pale
/// on white).
const PALETTE: [&str; 6] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#000000",
];
/// Dash patterns, taken in turn within a panel (empty: solid).
const DASHES: [&str; 4] = ["", "7 4", "2 3", "9 3 2 3"];
/// Okabe-Ito's vermillion: the alert shading.
const ALERT_COLOR: &str = "#D55E00";
/// At most one more than this many intervals on a y axis, and this many on the time axis.
const Y_TICKS: usize = 5;
const X_TICKS: usize = 12;

/// `s` as XML text or attribute value: markup characters escaped, and the control characters
/// XML 1.0 cannot hold dropped.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The scales of one chart: where a time, a core count and a pool size land.
struct Chart<'r> {
    r: &'r SimReport,
    t_max: f64,
    /// The ticks of each y axis; the last is the axis' top.
    core_ticks: Vec<f64>,
    size_ticks: Vec<f64>,
    out: String,
    /// Each series drawn, in order, for the legend.
    legend: Vec<(Key, String)>,
    /// Series drawn so far: the next one takes the next colour.
    series: usize,
}

/// Renders the report as SVG text: the steps below, in drawing order (later ones on top),
/// inside a root element sized to what was drawn.
pub fn render(r: &SimReport, title: &str) -> String {
    let mut c = Chart::new(r);
    c.alert_spans();
    c.axes();
    c.time_ticks();
    c.demand_and_capacity();
    c.pool_sizes();
    c.unmanaged();
    let below_legend = c.legend(LEGEND_TOP);
    let height = c.totals(below_legend + 14.0) + 10.0;
    let mut svg = header(r, title, height);
    svg.push_str(&c.out);
    svg.push_str("</svg>\n");
    svg
}

/// The root element, its accessible title and description, the background and the heading.
fn header(r: &SimReport, title: &str, height: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="12" role="img" aria-labelledby="chart-title chart-desc">"#
    );
    let _ = writeln!(s, r#"<title id="chart-title">{}</title>"#, esc(title));
    let _ = writeln!(
        s,
        r#"<desc id="chart-desc">Demand and capacity in cores per template (top) and pool sizes with creates and kills (bottom) over time, alert spans shaded. {}</desc>"#,
        esc(&legend::totals_lines(r).join(". "))
    );
    let _ = writeln!(
        s,
        r#"<rect width="{W}" height="{height:.0}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    s
}

impl<'r> Chart<'r> {
    /// Round y axes just over the highest core count and the largest pool or unmanaged count.
    fn new(r: &'r SimReport) -> Self {
        let core_max = r
            .frames
            .iter()
            .flat_map(|f| f.demand.values().chain(f.capacity.values()))
            .fold(1.0f64, |a, b| a.max(*b));
        let size_max = r
            .frames
            .iter()
            .flat_map(|f| f.pool_size.values().chain([&f.unmanaged]))
            .fold(1u32, |a, b| a.max(*b));
        Chart {
            r,
            t_max: r.duration_s.max(1.0),
            core_ticks: axis::count_ticks(core_max * 1.05, Y_TICKS),
            size_ticks: axis::count_ticks(f64::from(size_max) * 1.05, Y_TICKS),
            out: String::new(),
            legend: Vec::new(),
            series: 0,
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * t / self.t_max
    }

    /// The top panel's y for a number of cores.
    fn y1(&self, v: f64) -> f64 {
        TOP1 + PANEL_H - PANEL_H * v / top_of(&self.core_ticks)
    }

    /// The bottom panel's y for a pool size.
    fn y2(&self, v: f64) -> f64 {
        TOP2 + PANEL_H - PANEL_H * v / top_of(&self.size_ticks)
    }

    /// The next series' colour, and its dash pattern as the `nth` series of its panel.
    fn style(&mut self, nth: usize) -> (&'static str, &'static str) {
        let color = PALETTE[self.series % PALETTE.len()];
        self.series += 1;
        (color, DASHES[nth % DASHES.len()])
    }

    /// Both panels' frames and names, and a grid line and label at each round tick.
    fn axes(&mut self) {
        let panels = [
            (TOP1, "cores", self.core_ticks.clone()),
            (TOP2, "sandboxes", self.size_ticks.clone()),
        ];
        for (top, label, ticks) in panels {
            let _ = writeln!(
                self.out,
                r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
                W - LEFT - RIGHT
            );
            let _ = writeln!(
                self.out,
                r##"<text x="10" y="{:.1}" fill="#333">{label}</text>"##,
                top - 8.0
            );
            let axis_top = top_of(&ticks);
            for v in ticks {
                let yy = top + PANEL_H - PANEL_H * v / axis_top;
                let _ = writeln!(
                    self.out,
                    r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
                    W - RIGHT,
                    LEFT - 6.0,
                    yy + 4.0,
                    axis::count_label(v)
                );
            }
        }
    }

    /// Round durations under each panel, with a grid line through it.
    fn time_ticks(&mut self) {
        for t in axis::time_ticks(self.t_max, X_TICKS) {
            let xx = self.x(t as f64);
            let label = axis::duration_label(t);
            for top in [TOP1, TOP2] {
                let _ = writeln!(
                    self.out,
                    r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{:.1}" stroke="#f0f0f0"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#444">{label}</text>"##,
                    top + PANEL_H,
                    top + PANEL_H + 16.0
                );
            }
        }
    }

    /// The top panel: demand and capacity of each template, a series each.
    fn demand_and_capacity(&mut self) {
        let templates: BTreeSet<String> = self
            .r
            .frames
            .iter()
            .flat_map(|f| f.demand.keys().cloned())
            .collect();
        let mut nth = 0;
        for t in &templates {
            let demand = self.polyline_points(|f| f.demand.get(t).copied());
            self.series_line(&demand, nth, format!("demand {t} (cores)"));
            let capacity = self.polyline_points(|f| f.capacity.get(t).copied());
            self.series_line(&capacity, nth + 1, format!("capacity {t} (cores)"));
            nth += 2;
        }
    }

    /// Draws one series (points already placed in their panel) in the next style and gives it a
    /// legend entry; returns its colour.
    fn series_line(&mut self, points: &str, nth: usize, label: String) -> &'static str {
        let (color, dash) = self.style(nth);
        let _ = writeln!(
            self.out,
            r#"<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{}"><title>{}</title></polyline>"#,
            dash_or_none(dash),
            esc(&label)
        );
        self.legend.push((Key::Line { color, dash }, label));
        color
    }

    /// Points of a top-panel series, skipping frames without a value.
    fn polyline_points(&self, get: impl Fn(&Frame) -> Option<f64>) -> String {
        self.r
            .frames
            .iter()
            .filter_map(|f| get(f).map(|v| format!("{:.1},{:.1}", self.x(f.t_s), self.y1(v))))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The bottom panel: each pool's size as steps, with its creates and kills marked.
    fn pool_sizes(&mut self) {
        let pools: Vec<String> = self.r.pools.keys().cloned().collect();
        for (nth, p) in pools.iter().enumerate() {
            let pts = self.size_steps(|f| f.pool_size.get(p).copied().unwrap_or(0));
            let color = self.series_line(&pts, nth, format!("pool {p} size"));
            if self.r.marks.iter().any(|m| m.pool == *p) {
                self.action_marks(p, color);
                self.legend
                    .push((Key::Marks { color }, format!("pool {p}: ▲ create ▽ kill")));
            }
        }
    }

    /// Running sandboxes of no pool, as their own series when there were any.
    fn unmanaged(&mut self) {
        if self.r.frames.iter().all(|f| f.unmanaged == 0) {
            return;
        }
        let pts = self.size_steps(|f| f.unmanaged);
        self.series_line(&pts, self.r.pools.len(), "unmanaged (no pool)".to_string());
    }

    /// A count as a step line in the bottom panel: each change a vertical jump at its frame.
    fn size_steps(&self, count: impl Fn(&Frame) -> u32) -> String {
        let mut pts = Vec::new();
        let mut prev: Option<f64> = None;
        for f in &self.r.frames {
            let v = f64::from(count(f));
            if let Some(pv) = prev {
                pts.push(format!("{:.1},{:.1}", self.x(f.t_s), self.y2(pv)));
            }
            pts.push(format!("{:.1},{:.1}", self.x(f.t_s), self.y2(v)));
            prev = Some(v);
        }
        pts.join(" ")
    }

    /// A filled triangle above the line for each create, a hollow one below for each kill, in
    /// the pool's colour.
    fn action_marks(&mut self, pool: &str, color: &str) {
        for m in self.r.marks.iter().filter(|m| m.pool == pool) {
            let size = self
                .r
                .frames
                .iter()
                .find(|f| f.t_s >= m.t_s)
                .and_then(|f| f.pool_size.get(pool))
                .copied()
                .unwrap_or(0);
            let (xx, yy) = (self.x(m.t_s), self.y2(f64::from(size)));
            let when = axis::duration_label(m.t_s.round() as u64);
            let _ = if m.change > 0 {
                writeln!(
                    self.out,
                    r#"<path d="M{xx:.1},{:.1} l5,9 l-10,0 z" fill="{color}"><title>{} +{} at {when}</title></path>"#,
                    yy - 14.0,
                    esc(pool),
                    m.change
                )
            } else {
                writeln!(
                    self.out,
                    r#"<path d="M{xx:.1},{:.1} l5,-9 l-10,0 z" fill="white" stroke="{color}" stroke-width="1.5"><title>{} {} at {when}</title></path>"#,
                    yy + 14.0,
                    esc(pool),
                    m.change
                )
            };
        }
    }
}

/// The top of an axis: its last tick (1 without ticks, so nothing divides by 0).
fn top_of(ticks: &[f64]) -> f64 {
    ticks.last().copied().filter(|t| *t > 0.0).unwrap_or(1.0)
}
