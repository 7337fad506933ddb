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

/// Renders the report as SVG text.
pub fn render(r: &SimReport, title: &str) -> String {
    let t_max = r.duration_s.max(1.0);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / t_max;
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
    let y1 = |v: f64| TOP1 + PANEL_H - PANEL_H * v / core_max;
    let y2 = |v: f64| TOP2 + PANEL_H - PANEL_H * v / size_max;
    let mut s = String::new();
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
    // Alert spans.
    let mut span_start: Option<f64> = None;
    for f in &r.frames {
        match (f.alerts_firing > 0, span_start) {
            (true, None) => span_start = Some(f.t_s),
            (false, Some(a)) => {
                let _ = writeln!(
                    s,
                    r##"<rect x="{:.1}" y="{TOP1}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.12"/>"##,
                    x(a),
                    (x(f.t_s) - x(a)).max(1.0),
                    TOP2 + PANEL_H - TOP1
                );
                span_start = None;
            }
            _ => {}
        }
    }
    if let Some(a) = span_start {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{TOP1}" width="{:.1}" height="{:.1}" fill="#d62728" opacity="0.12"/>"##,
            x(a),
            (x(t_max) - x(a)).max(1.0),
            TOP2 + PANEL_H - TOP1
        );
    }
    // Axes and grid.
    for (top, label, max) in [(TOP1, "cores", core_max), (TOP2, "sandboxes", size_max)] {
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
    let minutes = (t_max / 60.0).ceil() as u64;
    let every = [1u64, 2, 5, 10, 15, 30, 60, 120]
        .into_iter()
        .find(|e| minutes / e <= 12)
        .unwrap_or(240);
    for m in (0..=minutes).step_by(every as usize) {
        let xx = x(m as f64 * 60.0);
        let _ = writeln!(
            s,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{m}m</text>"##,
            TOP2 + PANEL_H + 16.0
        );
    }
    // Demand and capacity per template.
    let templates: Vec<String> = r
        .frames
        .iter()
        .flat_map(|f| f.demand.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut legend = Vec::new();
    for (i, t) in templates.iter().enumerate() {
        let line = |get: &dyn Fn(&super::Frame) -> Option<f64>| {
            r.frames
                .iter()
                .filter_map(|f| get(f).map(|v| format!("{:.1},{:.1}", x(f.t_s), y1(v))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let demand = line(&|f| f.demand.get(t).copied());
        let capacity = line(&|f| f.capacity.get(t).copied());
        let c = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r##"<polyline points="{demand}" fill="none" stroke="#ff7f0e" stroke-width="2"/>"##
        );
        let _ = writeln!(
            s,
            r#"<polyline points="{capacity}" fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="6 3"/>"#
        );
        legend.push(("#ff7f0e".to_string(), format!("demand {t} (cores)")));
        legend.push((c.to_string(), format!("capacity {t} (cores, dashed)")));
    }
    // Pool sizes as steps, with action markers.
    let pools: Vec<String> = r.pools.keys().cloned().collect();
    for (i, p) in pools.iter().enumerate() {
        let c = COLORS[(i + 1) % COLORS.len()];
        let mut pts = Vec::new();
        let mut prev: Option<(f64, f64)> = None;
        for f in &r.frames {
            let v = *f.pool_size.get(p).unwrap_or(&0) as f64;
            if let Some((_, pv)) = prev {
                pts.push(format!("{:.1},{:.1}", x(f.t_s), y2(pv)));
            }
            pts.push(format!("{:.1},{:.1}", x(f.t_s), y2(v)));
            prev = Some((f.t_s, v));
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        legend.push((c.to_string(), format!("pool {p} size")));
        for m in r.marks.iter().filter(|m| &m.pool == p) {
            let size = r
                .frames
                .iter()
                .find(|f| f.t_s >= m.t_s)
                .and_then(|f| f.pool_size.get(p))
                .copied()
                .unwrap_or(0) as f64;
            let (xx, yy) = (x(m.t_s), y2(size));
            if m.change > 0 {
                let _ = writeln!(
                    s,
                    r##"<path d="M{:.1},{:.1} l5,9 l-10,0 z" fill="#2ca02c"><title>+{} at {:.0}s</title></path>"##,
                    xx,
                    yy - 14.0,
                    m.change,
                    m.t_s
                );
            } else {
                let _ = writeln!(
                    s,
                    r##"<path d="M{:.1},{:.1} l5,-9 l-10,0 z" fill="#d62728"><title>{} at {:.0}s</title></path>"##,
                    xx,
                    yy + 14.0,
                    m.change,
                    m.t_s
                );
            }
        }
    }
    legend.push((
        "#d62728".to_string(),
        "alert firing (shaded); ▲ create ▼ kill".to_string(),
    ));
    for (i, (c, label)) in legend.iter().enumerate() {
        let (lx, ly) = (
            LEFT + (i % 3) as f64 * 300.0,
            TOP2 + PANEL_H + 40.0 + (i / 3) as f64 * 16.0,
        );
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="4" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="#333">{}</text>"##,
            ly - 4.0,
            lx + 16.0,
            ly,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}
