//! The page's inline SVG: a pool's size against its demand over the last hour, and a member's
//! sparkline. Pure functions of numbers to SVG text; colours come from the page's stylesheet
//! through classes, so one chart suits the light and the dark scheme.
//!
//! Every label is escaped; nothing here reads the agent or the store.

use chrono::{DateTime, TimeDelta, Utc};

use super::render::esc;
use crate::store::PoolSample;

const W: f64 = 320.0;
const H: f64 = 96.0;
/// Room on the left for the axis labels, and below for the time labels.
const LEFT: f64 = 24.0;
const BOTTOM: f64 = 14.0;

/// One line of a chart: its class (colour), its name, its points (time, value).
struct Series<'a> {
    class: &'a str,
    name: &'a str,
    points: Vec<(DateTime<Utc>, f64)>,
}

/// A pool's actual and desired size against its demand over the hour before `now` (or
/// since its first sample, when younger; see [`window`]): the
/// demand is claimed plus waiting when the pool had claims in that hour, otherwise busy
/// cores. Steps, because sizes change at once.
pub(crate) fn pool_chart(name: &str, samples: &[PoolSample], now: DateTime<Utc>) -> String {
    let claims = samples.iter().any(|s| s.claimed + s.waiting > 0);
    let (demand_name, demand): (&str, Vec<(DateTime<Utc>, f64)>) = if claims {
        let v = samples
            .iter()
            .map(|s| (s.at, f64::from(s.claimed + s.waiting)))
            .collect();
        ("demand (claimed + waiting)", v)
    } else {
        let v = samples.iter().map(|s| (s.at, s.busy_cores)).collect();
        ("demand (busy cores)", v)
    };
    let series = [
        Series {
            class: "s-demand",
            name: demand_name,
            points: demand,
        },
        Series {
            class: "s-desired",
            name: "desired",
            points: samples
                .iter()
                .filter_map(|s| Some((s.at, f64::from(s.desired?))))
                .collect(),
        },
        Series {
            class: "s-actual",
            name: "actual",
            points: samples
                .iter()
                .map(|s| (s.at, f64::from(s.actual)))
                .collect(),
        },
    ];
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        .ceil();
    let label = format!(
        "{}: size against {} over the last hour at most",
        esc(name),
        demand_name
    );
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{label}\">\
         <title>{label}</title>"
    );
    let from = window(samples, now);
    svg.push_str(&axes(top, now - from));
    for s in &series {
        svg.push_str(&step_line(s, from, now, top));
    }
    svg.push_str("</svg>");
    svg.push_str(&legend(&series));
    svg
}

/// The frame, the top and zero labels, and the time labels (the window's start and now).
fn axes(top: f64, window: TimeDelta) -> String {
    let (x0, y0) = (LEFT, H - BOTTOM);
    let back = if window >= TimeDelta::minutes(2) {
        format!("-{}m", window.num_minutes())
    } else {
        format!("-{}s", window.num_seconds())
    };
    format!(
        "<g class=\"axis\"><line x1=\"{x0}\" y1=\"2\" x2=\"{x0}\" y2=\"{y0}\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{W}\" y2=\"{y0}\"/>\
         <text x=\"{tx}\" y=\"10\">{top}</text><text x=\"{tx}\" y=\"{y0}\">0</text>\
         <text class=\"start\" x=\"{x0}\" y=\"{H}\">{back}</text>\
         <text x=\"{W}\" y=\"{H}\">now</text></g>",
        tx = x0 - 4.0,
    )
}

/// The chart's window: the last hour, or since the first sample when the history is
/// shorter (at least a minute), so that a young agent's chart is not a sliver.
fn window(samples: &[PoolSample], now: DateTime<Utc>) -> DateTime<Utc> {
    let hour_ago = now - TimeDelta::hours(1);
    let first = samples.first().map_or(hour_ago, |s| s.at);
    first.max(hour_ago).min(now - TimeDelta::minutes(1))
}

/// One series as a step line between `from` and `to`, held to the right edge.
fn step_line(s: &Series<'_>, from: DateTime<Utc>, to: DateTime<Utc>, top: f64) -> String {
    if s.points.is_empty() {
        return String::new();
    }
    let span = (to - from).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        let f = ((t - from).num_milliseconds() as f64 / span).clamp(0.0, 1.0);
        LEFT + f * (W - LEFT)
    };
    let y = |v: f64| 2.0 + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - BOTTOM - 2.0);
    let mut d = String::new();
    let mut last = None;
    for (t, v) in &s.points {
        let (px, py) = (x(*t), y(*v));
        match last {
            None => d.push_str(&format!("M{px:.1},{py:.1}")),
            Some(_) => d.push_str(&format!("H{px:.1}V{py:.1}")),
        }
        last = Some(py);
    }
    d.push_str(&format!("H{W:.1}"));
    format!(
        "<path class=\"{}\" d=\"{d}\"><title>{}</title></path>",
        s.class,
        esc(s.name)
    )
}

/// The names of the series, each with its colour.
fn legend(series: &[Series<'_>]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    for s in series {
        out.push_str(&format!(
            "<li><svg viewBox=\"0 0 12 4\" aria-hidden=\"true\"><path class=\"{}\" d=\"M0,2H12\"/></svg>{}</li>",
            s.class,
            esc(s.name)
        ));
    }
    out.push_str("</ul>");
    out
}

/// A sparkline of `values` between 0 and 100 (percent), with the last value as text; a dash
/// when there are none. `what` names it for screen readers.
pub(crate) fn sparkline(what: &str, values: &[f64]) -> String {
    let Some(last) = values.last() else {
        return "<span class=\"muted\">–</span>".to_string();
    };
    let (w, h) = (72.0, 18.0);
    // One value is drawn as a level line.
    let values: Vec<f64> = if values.len() == 1 {
        vec![*last, *last]
    } else {
        values.to_vec()
    };
    let n = values.len() - 1;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * w / n as f64;
            let y = 1.0 + (1.0 - (v / 100.0).clamp(0.0, 1.0)) * (h - 2.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let label = format!("{} {last:.0}% now", esc(what));
    format!(
        "<span class=\"spark\"><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\">\
         <polyline points=\"{}\"/></svg><span class=\"num\">{last:.0}%</span></span>",
        points.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_name_is_escaped_in_the_chart() {
        let svg = pool_chart("<b>\"x\"", &[], Utc::now());
        assert!(svg.contains("&lt;b&gt;&quot;x&quot;"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
    }

    #[test]
    fn a_sparkline_shows_its_last_value() {
        let s = sparkline("cpu", &[10.0, 55.4]);
        assert!(s.contains(">55%<"), "{s}");
        assert_eq!(sparkline("cpu", &[]), "<span class=\"muted\">–</span>");
    }
}
