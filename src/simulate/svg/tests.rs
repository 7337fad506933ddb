//! The chart's tests: round ticks, alert spans and their names, and whole charts checked as
//! well-formed XML (by the small checker below: the crate has no XML parser, and a chart needs
//! only elements, attributes, text and entities) carrying their names, legend and totals.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::alerts::{Span, fit, spans};
use super::axis::{count_ticks, duration_label, time_ticks};
use super::render;
use crate::emulator::Scenario;
use crate::simulate::jobs::JobsReport;
use crate::simulate::{Frame, Mark, SimOptions, SimReport, Totals, simulate};

#[test]
fn count_ticks_step_by_one_two_or_five_times_a_power_of_ten() {
    assert_eq!(count_ticks(22.0, 5), [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]);
    assert_eq!(count_ticks(137.0, 5), [0.0, 50.0, 100.0, 150.0]);
    assert_eq!(count_ticks(10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(count_ticks(0.3, 5), [0.0, 1.0]);
    assert_eq!(count_ticks(0.0, 5), [0.0, 1.0]);
    assert_eq!(count_ticks(f64::NAN, 5), [0.0, 1.0]);
    assert_eq!(count_ticks(1100.0, 5).last(), Some(&1200.0));
}

#[test]
fn count_ticks_are_whole_cover_the_maximum_and_stay_few() {
    for tenths in 0..5000u32 {
        let max = f64::from(tenths) / 10.0 + 0.05;
        let ticks = count_ticks(max, 5);
        let step = ticks[1] - ticks[0];
        assert!(ticks.iter().all(|t| t.fract() == 0.0), "{max}: {ticks:?}");
        assert!(
            ticks.last().is_some_and(|top| *top >= max),
            "{max}: {ticks:?}"
        );
        assert!((2..=7).contains(&ticks.len()), "{max}: {ticks:?}");
        let mantissa = step / 10f64.powf(step.log10().floor());
        assert!([1.0, 2.0, 5.0].contains(&mantissa.round()), "{max}: {step}");
    }
}

#[test]
fn time_ticks_fall_on_round_durations() {
    let minutes = |v: Vec<u64>| v.into_iter().map(|s| s / 60).collect::<Vec<_>>();
    assert_eq!(minutes(time_ticks(1800.0, 12)), [0, 5, 10, 15, 20, 25, 30]);
    assert_eq!(
        minutes(time_ticks(2400.0, 12)),
        [0, 5, 10, 15, 20, 25, 30, 35, 40]
    );
    assert_eq!(
        time_ticks(90.0, 12),
        [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    );
    assert_eq!(
        minutes(time_ticks(7200.0, 12)),
        (0..=120).step_by(10).collect::<Vec<_>>()
    );
    assert_eq!(
        minutes(time_ticks(7260.0, 12)),
        (0..=120).step_by(15).collect::<Vec<_>>()
    );
    assert_eq!(time_ticks(86_400.0 * 3.0, 12).get(1), Some(&21_600));
    assert_eq!(time_ticks(0.0, 12), [0]);
}

#[test]
fn durations_are_labelled_as_a_person_writes_them() {
    let labels: Vec<String> = [0, 30, 60, 90, 300, 3600, 4500, 108_000]
        .into_iter()
        .map(duration_label)
        .collect();
    assert_eq!(
        labels,
        ["0", "30s", "1m", "1m30s", "5m", "1h", "1h15m", "1d6h"]
    );
}

#[test]
fn names_are_cut_to_their_span() {
    assert_eq!(fit("high-cpu", 200.0).as_deref(), Some("high-cpu"));
    assert_eq!(fit("pool-saturated", 40.0).as_deref(), Some("pool-…"));
    assert_eq!(fit("pool-saturated", 12.0), None);
}

fn frame(t_s: f64, alerts: &[&str], size: u32, unmanaged: u32) -> Frame {
    Frame {
        t_s,
        demand: BTreeMap::from([("base".to_string(), 1.5 + f64::from(size))]),
        capacity: BTreeMap::from([("base".to_string(), 2.0 * f64::from(size))]),
        pool_size: BTreeMap::from([("workers".to_string(), size)]),
        unmanaged,
        alerts_firing: alerts.iter().map(|a| a.to_string()).collect(),
    }
}

#[test]
fn each_alert_has_its_own_spans_and_label_row() {
    let frames = [
        frame(0.0, &[], 1, 0),
        frame(10.0, &["a"], 1, 0),
        frame(20.0, &["a", "b"], 1, 0),
        frame(30.0, &["b"], 1, 0),
        frame(40.0, &["a", "b"], 1, 0),
    ];
    let span = |name: &str, from: f64, to: f64, lane: usize| Span {
        name: name.into(),
        from,
        to,
        lane,
    };
    assert_eq!(
        spans(&frames, 50.0),
        [
            span("a", 10.0, 30.0, 0),
            span("b", 20.0, 50.0, 1),
            span("a", 40.0, 50.0, 0)
        ]
    );
}

/// A report by hand: one pool, one template, an alert whose name needs escaping, unmanaged
/// sandboxes, scale marks and jobs.
fn report() -> SimReport {
    let alert = "cpu<90> & \"hot\"";
    let frames: Vec<Frame> = (0..=360)
        .map(|k| {
            let t = f64::from(k) * 5.0;
            let firing: &[&str] = if (600.0..900.0).contains(&t) {
                &[alert]
            } else {
                &[]
            };
            let size = if (300.0..1200.0).contains(&t) { 9 } else { 2 };
            frame(t, firing, size, 3)
        })
        .collect();
    let total = Totals {
        sandbox_seconds: 9060.0,
        floor_sandbox_seconds: 5786.0,
        cost_vs_floor: Some(9060.0 / 5786.0),
        demand_core_seconds: 10380.0,
        unmet_core_seconds: 107.0,
        unmet_pct: Some(107.0 / 10380.0 * 100.0),
        peak_pool_size: 9,
        creates: 11,
        kills: 8,
        alerts_fired: 1,
        alerts_resolved: 1,
    };
    let jobs = JobsReport {
        arrived: 40,
        immediate: 30,
        waited: 8,
        timed_out: 2,
        latency_p99_s: 1.5,
        ..JobsReport::default()
    };
    SimReport {
        duration_s: 1800.0,
        tick_s: 5.0,
        total: total.clone(),
        pools: BTreeMap::from([("workers".to_string(), total)]),
        create_failures: 2,
        dry_run_decisions: 0,
        jobs: BTreeMap::from([("workers".to_string(), jobs)]),
        frames,
        marks: vec![
            Mark {
                t_s: 300.0,
                pool: "workers".into(),
                change: 7,
            },
            Mark {
                t_s: 1200.0,
                pool: "workers".into(),
                change: -7,
            },
        ],
        decisions: Vec::new(),
    }
}

#[test]
fn the_chart_is_well_formed_xml_with_names_legend_and_totals() {
    let svg = render(&report(), "run <1> & co");
    check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    for want in [
        "<title id=\"chart-title\">run &lt;1&gt; &amp; co</title>",
        "<desc id=\"chart-desc\">",
        // The alert's name, escaped, on its span.
        ">cpu&lt;90&gt; &amp; &quot;hot&quot;</text>",
        "alert cpu&lt;90&gt; &amp; &quot;hot&quot; firing from 10m to 15m",
        // Legend entries.
        ">demand base (cores)</text>",
        ">capacity base (cores)</text>",
        ">pool workers size</text>",
        ">unmanaged (no pool)</text>",
        ">alert firing (shaded, named at the top)</text>",
        // Totals.
        "9060 sandbox-seconds = 1.57x the floor of 5786; unmet demand 1.0% (107 of 10380 core-seconds)",
        "11 creates (2 refused), 8 kills, peak 9 sandboxes in pools, 1 alerts fired, 1 resolved, up to 3 unmanaged",
        "claims on workers: 40 arrived, 30 served at once, 8 after a wait, 0 resumed, 2 timed out",
        // Round ticks: sandboxes up to 10, time in minutes.
        ">10</text>",
        ">15m</text>",
    ] {
        assert!(svg.contains(want), "missing {want:?} in\n{svg}");
    }
    assert!(!svg.contains("5.5<"), "{svg}");
}

#[test]
fn series_differ_in_colour_and_within_a_panel_in_dash() {
    let svg = render(&report(), "t");
    let styles: Vec<(String, String)> = svg
        .lines()
        .filter(|l| l.starts_with("<polyline"))
        .map(|l| (attr(l, "stroke"), attr(l, "stroke-dasharray")))
        .collect();
    assert_eq!(styles.len(), 4, "{svg}");
    let colours: std::collections::BTreeSet<&String> = styles.iter().map(|s| &s.0).collect();
    assert_eq!(colours.len(), 4, "{styles:?}");
    // Top panel: demand, capacity; bottom: the pool, unmanaged.
    assert_ne!(styles[0].1, styles[1].1, "{styles:?}");
    assert_ne!(styles[2].1, styles[3].1, "{styles:?}");
}

fn attr(line: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    line.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

#[test]
fn a_real_run_counts_unmanaged_sandboxes_and_names_its_alert() {
    let rules = crate::rules::load_str(&[(
        "r.yaml",
        "pools:\n  - { name: w, template: base, min: 2, max: 4 }\nalerts:\n  - { name: w-at-min, scope: pool, pool: w, when: size <= min, for: 0s, message: \"{pool} at its min\" }\n",
    )])
    .unwrap_or_else(|d| panic!("{d:?}"));
    let scenario = Scenario::parse(
        "s.yaml",
        "duration: 2m\ntemplates:\n  base: { cpu_count: 2, boot: 1s }\ninitial:\n  - { template: base, count: 3, metadata: { app: other } }\nload:\n  - { template: base, points: [[0s, 0.5]] }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = simulate(Arc::new(rules), &scenario, &SimOptions::default());
    assert!(r.frames.iter().all(|f| f.unmanaged == 3), "{:?}", r.frames);
    assert!(
        r.frames.iter().any(|f| f.alerts_firing == ["w-at-min"]),
        "{:?}",
        r.frames
    );
    let svg = render(&r, "real");
    check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    assert!(svg.contains(">w-at-min</text>"), "{svg}");
    assert!(svg.contains(", up to 3 unmanaged"), "{svg}");
}

/// Checks that `xml` is one well-formed element: tags nest and close, attributes are quoted,
/// and `&` and `<` appear only as markup or in entities XML knows.
fn check_xml(xml: &str) -> Result<(), String> {
    let mut open: Vec<String> = Vec::new();
    let mut rest = xml.trim_start();
    let mut roots = 0;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            check_text(rest)?;
            break;
        };
        check_text(&rest[..lt])?;
        if open.is_empty() && !rest[..lt].trim().is_empty() {
            return Err(format!("text outside the root: {:?}", &rest[..lt]));
        }
        let gt = rest[lt..]
            .find('>')
            .ok_or_else(|| format!("unclosed tag at {:?}", &rest[lt..]))?;
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == name.trim() => {}
                o => return Err(format!("</{name}> closes {o:?}")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let (name, attrs) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:".contains(c))
        {
            return Err(format!("bad tag name in <{tag}>"));
        }
        check_attrs(attrs).map_err(|e| format!("<{name}>: {e}"))?;
        if open.is_empty() {
            roots += 1;
        }
        if !self_closing {
            open.push(name.to_string());
        }
    }
    match (open.is_empty(), roots) {
        (true, 1) => Ok(()),
        (false, _) => Err(format!("never closed: {open:?}")),
        (_, n) => Err(format!("{n} root elements")),
    }
}

/// `name="value"` pairs, each value well-formed text without `"`.
fn check_attrs(mut attrs: &str) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return Ok(());
        }
        let (name, after) = attrs
            .split_once("=\"")
            .ok_or_else(|| format!("attribute without a quoted value: {attrs:?}"))?;
        if !seen.insert(name.to_string()) || name.contains(char::is_whitespace) {
            return Err(format!("bad or repeated attribute {name:?}"));
        }
        let (value, next) = after
            .split_once('"')
            .ok_or_else(|| format!("unterminated value of {name}"))?;
        check_text(value)?;
        attrs = next;
    }
}

/// Text without `<` and with every `&` starting a known entity or a character reference.
fn check_text(text: &str) -> Result<(), String> {
    if text.contains('<') {
        return Err(format!("raw < in {text:?}"));
    }
    for (i, _) in text.match_indices('&') {
        let entity = text[i + 1..].split(';').next().unwrap_or("");
        let known = ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
            || entity.strip_prefix('#').is_some_and(|n| {
                n.parse::<u32>().is_ok()
                    || n.strip_prefix('x')
                        .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            });
        if !known || !text[i + 1..].contains(';') {
            return Err(format!("raw & in {text:?}"));
        }
    }
    if text
        .chars()
        .any(|c| c.is_control() && !"\t\n\r".contains(c))
    {
        return Err(format!("control character in {text:?}"));
    }
    Ok(())
}

#[test]
fn the_checker_refuses_what_is_not_xml() {
    assert!(check_xml("<a><b/></a>").is_ok());
    assert!(check_xml("<a x=\"1 &amp; 2\">t &lt; u</a>").is_ok());
    assert!(check_xml("<a><b></a>").is_err());
    assert!(check_xml("<a>x & y</a>").is_err());
    assert!(check_xml("<a x=1/>").is_err());
    assert!(check_xml("<a/><b/>").is_err());
    assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
}
