//! Loader tests: a valid file with every section, and every class of error with its place.

use super::*;

const GOOD: &str = r#"
notifiers:
  - { name: ops-slack, kind: slack, url: "https://hooks.slack.com/services/T/B/X" }
  - { name: log, kind: log }
pools:
  - name: workers
    template: base
    min: 2
    max: 10
    sandbox: { timeout: 1h, metadata: { team: ml }, auto_pause: false }
    busy: cpu_used_pct > 80
    scale:
      interval: 15s
      steps:
        - { when: busy_ratio > 0.5, add: 1 }
        - { when: busy_ratio < 0.2, remove: 1 }
      cooldown: { up: 30s, down: 2m }
      stabilization: { down: 5m }
      max_step: { up: 4, down: 1 }
      on_missing_metrics: hold
    scale_in: { victims: idle_first, min_age: 2m, protect: 'metadata.protected == "true"' }
    schedules:
      - { name: weekday mornings, cron: "0 8 * * 1-5", timezone: Europe/Paris, min: 5 }
      - { cron: "0 19 * * 1-5", timezone: Europe/Paris, min: 1 }
  - name: batch
    min: 0
    max: 50
    scale:
      target: { metric: avg_cpu_used_pct, value: 60 }
alerts:
  - name: high-cpu
    scope: sandbox
    pool: workers
    when: cpu_used_pct > 90
    for: 1m
    keep_firing_for: 2m
    severity: critical
    labels: { team: ml }
    message: "{sandbox_id} in {pool} at {cpu_used_pct}% CPU"
    notify: [ops-slack, log]
triggers:
  - name: replace-crashed
    on: killed
    pool: workers
    when: kill_reason != "request" && kill_reason != "timeout"
    action: replace
"#;

fn errors(text: &str) -> Vec<String> {
    load_str(&[("r.yaml", text)])
        .unwrap_err()
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn loads_every_section() {
    let set = load_str(&[("good.yaml", GOOD)]).unwrap();
    assert_eq!(set.pools.len(), 2);
    let w = set.pool("workers").unwrap();
    assert_eq!((w.min, w.max, w.steps.len()), (2, 10, 2));
    assert_eq!(w.steps[1].change, -1);
    assert_eq!(w.cooldown.down, Duration::from_secs(120));
    assert_eq!(w.stabilization.down, Duration::from_secs(300));
    assert_eq!(w.max_step.up, Some(4));
    assert_eq!(w.schedules[0].name, "weekday mornings");
    assert_eq!(w.schedules[1].name, "schedules[1]");
    let b = set.pool("batch").unwrap();
    assert_eq!(b.template, "base");
    assert_eq!(b.target.as_ref().unwrap().tolerance, 0.1);
    assert_eq!(
        b.busy.text(),
        "cpu_used_pct > 80",
        "the default busy predicate"
    );
    assert_eq!(set.alerts[0].notify, vec!["ops-slack", "log"]);
    assert_eq!(set.triggers[0].on, EventType::Killed);
    assert_eq!(set.triggers[0].action, TriggerAction::Replace);
    assert!(load_str(&[("empty.yaml", "")]).unwrap().pools.is_empty());
}

#[test]
fn references_resolve_across_files() {
    let a = "notifiers:\n  - { name: n, kind: log }\npools:\n  - { name: p, min: 0, max: 1 }\n";
    let b = "alerts:\n  - { name: x, scope: pool, pool: p, when: size > 0, notify: [n] }\n";
    assert!(load_str(&[("a.yaml", a), ("b.yaml", b)]).is_ok());
    let e = load_str(&[("b.yaml", b)]).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn every_error_has_file_line_column_and_the_rule() {
    let cases: &[(&str, &str)] = &[
        (
            "pools:\n  - { name: p, min: 0, max: 1, colour: red }\n",
            "r.yaml:2:",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1 }\n  - { name: p, min: 0, max: 1 }\n",
            "r.yaml:3:13: pool \"p\" is defined twice",
        ),
        (
            "pools:\n  - { name: p, min: 5, max: 1 }\n",
            "r.yaml:2:21: pool \"p\": min 5 is greater than max 1",
        ),
        ("pools:\n  - { name: p, min: -1, max: 1 }\n", "r.yaml:2:"),
        (
            "pools:\n  - { name: p, min: 0, max: 1, scale: { interval: -5s } }\n",
            "non-negative duration",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, scale: { cooldown: { up: soon } } }\n",
            "invalid duration \"soon\"",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    schedules:\n      - { cron: \"0 8 * *\", min: 1 }\n",
            "r.yaml:6:17: pool \"p\": schedules[0]: cron \"0 8 * *\" has 4 fields",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    schedules:\n      - { cron: \"0 8 * * 1\", timezone: Mars/Base, min: 1 }\n",
            "r.yaml:6:40: pool \"p\": schedules[0]: unknown time zone",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 3\n    schedules:\n      - { cron: \"0 8 * * 1\", min: 5 }\n",
            "min 5 would be greater than max 3",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, busy: cpu > 80 }\n",
            "r.yaml:2:38: pool \"p\": busy: unknown variable \"cpu\"",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, busy: \"cpu_used_pct > && 3\" }\n",
            "pool \"p\": busy: ",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, busy: cpu_used_pct + 1 }\n",
            "is a number, but a boolean condition is needed",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    scale:\n      steps:\n        - { when: busy_ratio > \"half\", add: 1 }\n",
            "r.yaml:7:19: pool \"p\": scale.steps[0].when: ",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    scale:\n      steps:\n        - { when: busy_ratio > 0.5 }\n",
            "give exactly one of `add: N` or `remove: N`",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    scale:\n      target: { metric: avg_cpu, value: 60 }\n",
            "unknown variable \"avg_cpu\"",
        ),
        (
            "pools:\n  - name: p\n    min: 0\n    max: 1\n    scale:\n      target: { metric: avg_cpu_used_pct, value: 0 }\n",
            "value must be a number above 0",
        ),
        (
            "alerts:\n  - { name: a, scope: pool, pool: nope, when: size > 1 }\n",
            "r.yaml:2:35: alert \"a\": unknown pool \"nope\"; defined pools: none",
        ),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1, notify: [pager] }\n",
            "alert \"a\": unknown notifier \"pager\"",
        ),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1, message: \"{nope}\" }\n",
            "unknown placeholder {nope}",
        ),
        (
            "alerts:\n  - { name: a, scope: galaxy, when: running > 1 }\n",
            "r.yaml:2:",
        ),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1 }\ntriggers:\n  - { name: a, on: killed, action: alert }\n",
            "rule \"a\" is defined twice",
        ),
        (
            "triggers:\n  - { name: t, on: exploded, action: alert }\n",
            "unknown event type \"exploded\"",
        ),
        (
            "triggers:\n  - { name: t, on: killed, action: kill }\n",
            "needs `pool`: poolpilot only touches sandboxes it owns",
        ),
        (
            "triggers:\n  - { name: t, on: killed, pool: p, action: set_timeout }\npools:\n  - { name: p, min: 0, max: 1 }\n",
            "set_timeout needs `timeout`",
        ),
        (
            "triggers:\n  - { name: t, on: killed, when: cpu_used_pct > 1, action: alert }\n",
            "unknown variable \"cpu_used_pct\"",
        ),
        (
            "notifiers:\n  - { name: s, kind: slack }\n",
            "`url` is required",
        ),
        (
            "notifiers:\n  - { name: s, kind: webhook, url: \"ftp://x\" }\n",
            "is not an http(s) URL",
        ),
        ("pools: 3\n", "r.yaml:1:"),
        (
            "pools:\n  - { name: p, min: 0, max: 1 }\npools: []\n",
            "duplicate",
        ),
    ];
    for (text, want) in cases {
        let errs = errors(text);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{text}\nwanted {want:?} in {errs:#?}"
        );
        assert!(errs.iter().all(|e| e.starts_with("r.yaml:")), "{errs:?}");
    }
}

#[test]
fn all_errors_are_reported_not_only_the_first() {
    let text = "pools:\n  - { name: a, min: 5, max: 1 }\n  - { name: b, min: 0, max: 1, busy: nope > 1 }\nalerts:\n  - { name: x, scope: pool, pool: zz, when: size > 0 }\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1500))]

    #[test]
    fn no_bytes_panic_the_loader(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_str(&[("fuzz.yaml", &text)]);
    }

    #[test]
    fn mutated_good_files_never_panic(cut in 0usize..1400, insert in "[ -~\n]{0,12}") {
        let mut s = GOOD.to_string();
        let at = cut.min(s.len());
        let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        s.insert_str(at, &insert);
        let _ = load_str(&[("mut.yaml", &s)]);
    }
}
