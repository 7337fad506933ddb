//! The chart of a simulation as a standalone SVG: demand and capacity in cores (top), pool
//! sizes with scale actions (bottom), and alert firing spans shaded across both.

use std::fmt::Write as _;

use super::SimReport;

const W: f64 = 1000.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 200.0;
const TOP1: f64 = 50.0;
const TOP2: f64 = TOP1 + PANEL_H + 60.0;
const H: f64 = TOP2 + PANEL_H + 80.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The scales of one chart: where a time, a core count and a pool size land.
struct Chart<'r> {
    r: &'r SimReport,
    t_max: f64,
    core_max: f64,
    size_max: f64,
    out: String,
    /// (colour, label) of each series drawn, in order, for the legend.
    legend: Vec<(String, String)>,
}

/// Renders the report as SVG text: the steps below, in drawing order (later ones on top).
pub fn render(r: &SimReport, title: &str) -> String {
    let mut c = Chart::new(r);
    c.header(title);
    c.alert_spans();
    c.axes();
    c.time_ticks();
    c.demand_and_capacity();
    c.pool_sizes();
    c.legend();
    c.out.push_str("</svg>\n");
    c.out
}

impl<'r> Chart<'r> {
    /// Scales with 10% headroom over the highest core count and 15% over the largest pool.
    fn new(r: &'r SimReport) -> Self {
        let core_max = r
            .frames
            .iter()
            .flat_map(|f| f.demand.values().chain(f.capacity.values()))
            .fold(1.0f64, |a, b| a.max(*b))
            * 1.1;
        let size_max = r
            .frames
            .iter()
            .flat_map(|f| f.pool_size.values())
            .fold(1u32, |a, b| a.max(*b)) as f64
            * 1.15;
        Chart {
            r,
            t_max: r.duration_s.max(1.0),
            core_max,
            size_max,
            out: String::new(),
            legend: Vec::new(),
        }
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * t / self.t_max
    }

    /// The top panel's y for a number of cores.
    fn y1(&self, v: f64) -> f64 {
        TOP1 + PANEL_H - PANEL_H * v / self.core_max
    }

    /// The bottom panel's y for a pool size.
    fn y2(&self, v: f64) -> f64 {
        TOP2 + PANEL_H - PANEL_H * v / self.size_max
    }

    fn header(&mut self, title: &str) {
        let s = &mut self.out;
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            esc(title)
        );
    }

    /// A shaded band across both panels for each span with an alert firing.
    fn alert_spans(&mut self) {
        let mut span_start: Option<f64> = None;
        for f in &self.r.frames {
            match (f.alerts_firing > 0, span_start) {
                (true, None) => span_start = Some(f.t_s),
                (false, Some(a)) => {
                    self.shade(a, f.t_s);
                    span_start = None;
                }
                _ => {}
            }
        }
        if let Some(a) = span_start {
            self.shade(a, self.t_max);
        }
    }

    fn shade(&mut self, from: f64, to: f64) {
        let (x0, x1) = (self.x(from), self.x(to));
        let _ = writeln!(
            self.out,
            r##"<rect x="{:.1}" y="{TOP1}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.12"/>"##,
            x0,
            (x1 - x0).max(1.0),
            TOP2 + PANEL_H - TOP1
        );
    }

    /// Both panels' frames, labels and five grid lines each.
    fn axes(&mut self) {
        let s = &mut self.out;
        for (top, label, max) in [
            (TOP1, "cores", self.core_max),
            (TOP2, "sandboxes", self.size_max),
        ] {
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_H}" fill="none" stroke="#999"/>"##,
                W - LEFT - RIGHT
            );
            let _ = writeln!(
                s,
                r##"<text x="10" y="{:.1}" fill="#333">{label}</text>"##,
                top - 8.0
            );
            for i in 0..=4 {
                let v = max * i as f64 / 4.0;
                let yy = top + PANEL_H - PANEL_H * i as f64 / 4.0;
                let _ = writeln!(
                    s,
                    r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{:.0}</text>"##,
                    W - RIGHT,
                    LEFT - 6.0,
                    yy + 4.0,
                    v
                );
            }
        }
    }

    /// Minute labels under the bottom panel, at most about a dozen.
    fn time_ticks(&mut self) {
        let minutes = (self.t_max / 60.0).ceil() as u64;
        let every = [1u64, 2, 5, 10, 15, 30, 60, 120]
            .into_iter()
            .find(|e| minutes / e <= 12)
            .unwrap_or(240);
        for m in (0..=minutes).step_by(every as usize) {
            let xx = self.x(m as f64 * 60.0);
            let _ = writeln!(
                self.out,
                r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{m}m</text>"##,
                TOP2 + PANEL_H + 16.0
            );
        }
    }

    /// The top panel: demand (solid) and capacity (dashed) per template.
    fn demand_and_capacity(&mut self) {
        let templates: Vec<String> = self
            .r
            .frames
            .iter()
            .flat_map(|f| f.demand.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for (i, t) in templates.iter().enumerate() {
            let demand = self.polyline_points(|f| f.demand.get(t).copied());
            let capacity = self.polyline_points(|f| f.capacity.get(t).copied());
            let c = COLORS[i % COLORS.len()];
            let _ = writeln!(
                self.out,
                r##"<polyline points="{demand}" fill="none" stroke="#ff7f0e" stroke-width="2"/>"##
            );
            let _ = writeln!(
                self.out,
                r#"<polyline points="{capacity}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="6 3"/>"#
            );
            self.legend
                .push(("#ff7f0e".to_string(), format!("demand {t} (cores)")));
            self.legend
                .push((c.to_string(), format!("capacity {t} (cores, dashed)")));
        }
    }

    /// Points of a top-panel series, skipping frames without a value.
    fn polyline_points(&self, get: impl Fn(&super::Frame) -> Option<f64>) -> String {
        self.r
            .frames
            .iter()
            .filter_map(|f| get(f).map(|v| format!("{:.1},{:.1}", self.x(f.t_s), self.y1(v))))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The bottom panel: each pool's size as steps, with its scale actions marked.
    fn pool_sizes(&mut self) {
        let pools: Vec<String> = self.r.pools.keys().cloned().collect();
        for (i, p) in pools.iter().enumerate() {
            let c = COLORS[(i + 1) % COLORS.len()];
            let pts = self.size_steps(p);
            let _ = writeln!(
                self.out,
                r#"<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>"#
            );
            self.legend.push((c.to_string(), format!("pool {p} size")));
            self.action_marks(p);
        }
    }

    /// A pool's size as a step line: each change is a vertical jump at its frame.
    fn size_steps(&self, pool: &str) -> String {
        let mut pts = Vec::new();
        let mut prev: Option<f64> = None;
        for f in &self.r.frames {
            let v = *f.pool_size.get(pool).unwrap_or(&0) as f64;
            if let Some(pv) = prev {
                pts.push(format!("{:.1},{:.1}", self.x(f.t_s), self.y2(pv)));
            }
            pts.push(format!("{:.1},{:.1}", self.x(f.t_s), self.y2(v)));
            prev = Some(v);
        }
        pts.join(" ")
    }

    /// A green triangle above the line for each create, a red one below for each kill.
    fn action_marks(&mut self, pool: &str) {
        for m in self.r.marks.iter().filter(|m| m.pool == pool) {
            let size = self
                .r
                .frames
                .iter()
                .find(|f| f.t_s >= m.t_s)
                .and_then(|f| f.pool_size.get(pool))
                .copied()
                .unwrap_or(0) as f64;
            let (xx, yy) = (self.x(m.t_s), self.y2(size));
            let _ = if m.change > 0 {
                writeln!(
                    self.out,
                    r##"<path d="M{:.1},{:.1} l5,9 l-10,0 z" fill="#2ca02c"><title>+{} at {:.0}s</title></path>"##,
                    xx,
                    yy - 14.0,
                    m.change,
                    m.t_s
                )
            } else {
                writeln!(
                    self.out,
                    r##"<path d="M{:.1},{:.1} l5,-9 l-10,0 z" fill="#d62728"><title>{} at {:.0}s</title></path>"##,
                    xx,
                    yy + 14.0,
                    m.change,
                    m.t_s
                )
            };
        }
    }

    /// Three legend entries a row under the bottom panel.
    fn legend(&mut self) {
        self.legend.push((
            "#d62728".to_string(),
            "alert firing (shaded); ▲ create ▼ kill".to_string(),
        ));
        for (i, (c, label)) in self.legend.iter().enumerate() {
            let (lx, ly) = (
                LEFT + (i % 3) as f64 * 300.0,
                TOP2 + PANEL_H + 40.0 + (i / 3) as f64 * 16.0,
            );
            let _ = writeln!(
                self.out,
                r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="4" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="#333">{}</text>"##,
                ly - 4.0,
                lx + 16.0,
                ly,
                esc(label)
            );
        }
    }
}
