//! Loader tests: a valid file with every section, and every class of error with its place.

use std::time::Duration;

use super::*;
use crate::e2b::EventType;
use crate::rules::TriggerAction;

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
            "defined twice",
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

fn one_error(text: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{text}\n{errs:#?}");
    errs[0].clone()
}

#[test]
fn every_duration_is_bounded_with_the_field_value_and_range() {
    let pool = |scale: &str| format!("pools:\n  - {{ name: p, min: 0, max: 1, {scale} }}\n");
    let cases: Vec<(String, &str)> = vec![
        (pool("scale: { interval: 300000years }"), "`scale.interval` is 300000years; it must be from 1s to 1day"),
        (pool("scale: { interval: 0s }"), "`scale.interval` is 0s; it must be from 1s to 1day"),
        (pool("scale: { stale_after: 300000years }"), "`scale.stale_after` is 300000years"),
        (pool("scale: { cooldown: { up: 2days } }"), "`scale.cooldown.up` is 2days; it must be from 0s to 1day"),
        (pool("scale: { cooldown: { down: 2days } }"), "`scale.cooldown.down`"),
        (pool("scale: { stabilization: { up: 2days } }"), "`scale.stabilization.up`"),
        (pool("scale: { stabilization: { down: 300000years } }"), "`scale.stabilization.down`"),
        (pool("scale_in: { min_age: 300000years }"), "`scale_in.min_age`"),
        (pool("sandbox: { timeout: 25h }"), "`sandbox.timeout` is 1day 1h; it must be from 1s to 1day"),
        (pool("scale: { interval: 18446744073709551616s }"), "invalid duration \"18446744073709551616s\""),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1, for: 300000years }\n".into(),
            "r.yaml:2:53: alert \"a\": `for` is 300000years; it must be from 0s to 7days",
        ),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1, keep_firing_for: 8days }\n".into(),
            "`keep_firing_for` is 8days",
        ),
        (
            "alerts:\n  - { name: a, scope: team, when: running > 1, repeat_interval: 0s }\n".into(),
            "`repeat_interval` is 0s; it must be from 1s to 30days",
        ),
        (
            "pools: [{ name: p, min: 0, max: 1 }]\ntriggers:\n  - { name: t, on: killed, pool: p, action: set_timeout, timeout: 2days }\n".into(),
            "trigger \"t\": `timeout` is 2days; it must be from 1s to 1day",
        ),
    ];
    for (text, want) in &cases {
        let e = one_error(text);
        assert!(e.contains(want), "{text}\nwanted {want:?} in {e}");
    }
    // The largest loadable values load.
    let ok = "pools:\n  - name: p\n    min: 0\n    max: 1\n    sandbox: { timeout: 24h }\n    scale: { interval: 1day, stale_after: 1day, cooldown: { up: 1day, down: 1day }, stabilization: { up: 1day, down: 1day } }\n    scale_in: { min_age: 1day }\n";
    assert!(load_str(&[("r.yaml", ok)]).is_ok());
}

#[test]
fn counts_name_the_field_and_the_range() {
    for (text, want) in [
        (
            "pools:\n  - { name: p, min: -1, max: 1 }\n",
            "r.yaml:2:21: pool \"p\": `min` is -1; it must be a whole number from 0 to 100000",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 99999999999 }\n",
            "`max` is 99999999999; it must be a whole number from 1 to 100000",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 0 }\n",
            "`max` is 0; it must be a whole number from 1 to 100000",
        ),
        (
            "pools:\n  - { name: p, min: 1.5, max: 3 }\n",
            "`min` is 1.5",
        ),
        (
            "pools:\n  - { name: p, min: lots, max: 3 }\n",
            "`min` is \"lots\"",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, scale: { max_step: { up: -3 } } }\n",
            "`scale.max_step.up` is -3; it must be a whole number from 1 to 100000",
        ),
        (
            "pools:\n  - { name: p, min: 0, max: 1, scale: { steps: [{ when: size > 1, add: 0 }] } }\n",
            "scale.steps[0]: `add` is 0; it must be a whole number from 1",
        ),
    ] {
        let e = one_error(text);
        assert!(e.contains(want), "{text}\nwanted {want:?} in {e}");
    }
}

#[test]
fn yaml_errors_say_the_position_once_and_speak_to_rule_authors() {
    let e = one_error("pools:\n  - { name: p, min: 0, max: 1, colour: red }\n");
    assert!(e.starts_with("r.yaml:2:32: unknown field `colour`"), "{e}");
    assert!(!e.contains("line 2"), "{e}");
    let e = one_error("pools:\n  - { name: p, min: 0, max: 1 }\npools: []\n");
    assert_eq!(
        e,
        "r.yaml:3:1: key `pools` is defined twice in the same mapping (first at line 1); keep one"
    );
    assert!(!e.contains("DuplicateKeyPolicy"));
}

#[test]
fn a_url_is_never_printed() {
    let secret = "hooks.slack.com/services/T0/B0/SECRET";
    let e = one_error(&format!(
        "notifiers:\n  - {{ name: s, kind: slack, url: {secret} }}\n"
    ));
    assert!(
        !e.contains("SECRET") && e.contains("not an http(s) URL"),
        "{e}"
    );
    let e = one_error("notifiers:\n  - { name: s, kind: webhook, url: \"https//SECRET\" }\n");
    assert!(!e.contains("SECRET"), "{e}");
}

#[test]
fn a_severity_label_wins_over_the_default() {
    let text = "notifiers: [{ name: n, kind: log }]\nalerts:\n  - { name: a, scope: team, when: running > 1, notify: [n], labels: { severity: critical } }\n";
    let set = load_str(&[("r.yaml", text)]).unwrap();
    assert_eq!(set.alerts[0].severity, "critical");
    assert_eq!(set.alerts[0].labels["severity"], "critical");
    let clash = text.replace("notify: [n],", "notify: [n], severity: info,");
    assert!(one_error(&clash).contains("disagree"));
    let reserved = text.replace("severity: critical", "alertname: x");
    assert!(one_error(&reserved).contains("label `alertname` is set by poolpilot"));
}

#[test]
fn prometheus_placeholders_are_a_warning_with_the_right_spelling() {
    let text = "notifiers: [{ name: n, kind: log }]\nalerts:\n  - name: a\n    scope: pool\n    when: size > 1\n    notify: [n]\n    message: \"{{ $labels.pool }} is big\"\n";
    let set = load_str(&[("r.yaml", text)]).unwrap();
    let w: Vec<String> = set.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "r.yaml:7:14: warning: alert \"a\": message uses Prometheus' `{{ $labels.pool }}`"
        ) && w[0].contains("write {pool}"),
        "{w:?}"
    );
}

#[test]
fn diagnostics_sort_by_line_as_a_number() {
    let mut text = String::from("pools:\n");
    for i in 0..12 {
        text.push_str(&format!("  - {{ name: p{i}, min: 0, max: 1 }}\n"));
    }
    text.push_str("  - { name: bad, min: 3, max: 1 }\n");
    text = text.replacen("name: p2, min: 0", "name: p2, min: 5", 1);
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("r.yaml:4:"), "{errs:?}");
    assert!(errs[1].starts_with("r.yaml:14:"), "{errs:?}");
}

fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("poolpilot-rules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const POOL_A: &str = "pools:\n  - { name: a, min: 0, max: 1 }\n";

#[cfg(unix)]
#[test]
fn symlink_loops_end_and_each_real_file_loads_once() {
    use std::os::unix::fs::symlink;
    let d = scratch_dir("loop");
    std::fs::write(d.join("a.yaml"), POOL_A).unwrap();
    symlink(".", d.join("self1")).unwrap();
    symlink(".", d.join("self2")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    symlink("..", d.join("sub/up")).unwrap();
    let files = rule_files_in(&d).unwrap();
    assert_eq!(files, vec![d.join("a.yaml")]);
    assert!(load_paths(std::slice::from_ref(&d)).is_ok());
    std::fs::remove_dir_all(&d).ok();
}

#[cfg(unix)]
#[test]
fn a_kubernetes_configmap_mount_loads() {
    use std::os::unix::fs::symlink;
    let d = scratch_dir("configmap");
    let real = d.join("..2026_11_27_05_00_00.123");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("a.yaml"), POOL_A).unwrap();
    std::fs::write(real.join("b.yaml"), "alerts: []\n").unwrap();
    symlink("..2026_11_27_05_00_00.123", d.join("..data")).unwrap();
    symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
    symlink("..data/b.yaml", d.join("b.yaml")).unwrap();
    std::fs::write(d.join(".a.yaml.swp"), "not: [yaml").unwrap();
    let files = rule_files_in(&d).unwrap();
    assert_eq!(files, vec![d.join("a.yaml"), d.join("b.yaml")]);
    let set = load_paths(std::slice::from_ref(&d)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(set.pools.len(), 1);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_fifo_named_yaml_in_a_rule_directory_is_an_error_not_a_hang() {
    // Found by trying it: `mkfifo rules/zz.yaml` froze the agent's reload (and so its loop)
    // and `check`, waiting for a writer.
    let d = scratch_dir("fifo");
    std::fs::write(d.join("a.yaml"), POOL_A).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(d.join("zz.yaml"))
        .status()
        .unwrap();
    assert!(made.success());
    let e = load_paths(std::slice::from_ref(&d)).unwrap_err();
    assert!(
        e.iter()
            .any(|d| d.to_string().contains("not a regular file (it is a FIFO)")),
        "{e:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_agent_config_in_a_rule_directory_is_skipped_with_a_note() {
    let d = scratch_dir("agentcfg");
    std::fs::write(d.join("a.yaml"), POOL_A).unwrap();
    std::fs::write(
        d.join("poolpilot.yaml"),
        "rules: [./]\nstate_dir: /var/lib/poolpilot\nlisten: 127.0.0.1:9477\n",
    )
    .unwrap();
    let set = load_paths(std::slice::from_ref(&d)).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(set.pools.len(), 1);
    let note = set.warnings[0].to_string();
    assert!(
        note.ends_with("poolpilot.yaml: warning: skipped: this is poolpilot's agent config (`poolpilot run --config`), not a rule file; its `rules` list names the rule files"),
        "{note}"
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn rate_policies_and_saturation_are_checked_with_the_field_and_what_is_valid() {
    let pool =
        |scale: &str| format!("pools:\n  - {{ name: p, min: 0, max: 1, scale: {{ {scale} }} }}\n");
    let eleven = ["{ pods: 1, per: 1s }"; 11].join(", ");
    let cases: Vec<(String, &str)> = vec![
        (
            pool("policies: { up: { rules: [] } }"),
            "r.yaml:2:66: pool \"p\": `scale.policies.up.rules` has 0 policies; give 1 to 10, such as [{ pods: 4, per: 15s }, { percent: 100, per: 15s }]",
        ),
        (
            pool(&format!("policies: {{ up: {{ rules: [{eleven}] }} }}")),
            "`scale.policies.up.rules` has 11 policies; give 1 to 10",
        ),
        (
            pool("policies: { up: { rules: [{ pods: 0, per: 15s }] } }"),
            "r.yaml:2:75: pool \"p\": scale.policies.up.rules[0]: `pods` is 0; it must be a whole number from 1 to 100000",
        ),
        (
            pool("policies: { up: { rules: [{ percent: -5, per: 15s }] } }"),
            "scale.policies.up.rules[0]: `percent` is -5; it must be a whole number from 1 to 1000",
        ),
        (
            pool("policies: { up: { rules: [{ percent: 5000, per: 15s }] } }"),
            "`percent` is 5000; it must be a whole number from 1 to 1000",
        ),
        (
            pool("policies: { down: { rules: [{ percent: 150, per: 15s }] } }"),
            "scale.policies.down.rules[0]: `percent` is 150; it must be a whole number from 1 to 100",
        ),
        (
            pool("policies: { up: { rules: [{ pods: 4, per: 0s }] } }"),
            "r.yaml:2:83: pool \"p\": scale.policies.up.rules[0]: `per` is 0s; it must be from 1s to 30m",
        ),
        (
            pool("policies: { up: { rules: [{ pods: 4, per: 2h }] } }"),
            "`per` is 2h; it must be from 1s to 30m",
        ),
        (
            pool("policies: { up: { rules: [{ pods: 4, percent: 10, per: 15s }] } }"),
            "scale.policies.up.rules[0]: give exactly one of `pods: N` or `percent: P` beside `per`",
        ),
        (
            pool("policies: { up: { rules: [{ per: 15s }] } }"),
            "give exactly one of `pods: N` or `percent: P`",
        ),
        (
            pool("policies: { up: { rules: [{ pods: 4 }] } }"),
            "r.yaml:2:69: missing field `per`",
        ),
        (
            pool("policies: { up: { rules: [{ pod: 4, per: 15s }] } }"),
            "r.yaml:2:69: unknown field `pod`, expected one of pods, percent, per",
        ),
        (
            pool("policies: { up: { select: most, rules: [{ pods: 4, per: 15s }] } }"),
            "r.yaml:2:67: unknown variant `most`, expected one of max, min",
        ),
        (
            pool("policies: { sideways: { rules: [{ pods: 4, per: 15s }] } }"),
            "unknown field `sideways`, expected one of up, down",
        ),
        (
            pool("target: { metric: size, value: 1, saturated_when: size + 1 }"),
            "r.yaml:2:91: pool \"p\": scale.target.saturated_when: \"size + 1\" is a number, but a boolean condition is needed here",
        ),
    ];
    for (text, want) in &cases {
        let e = one_error(text);
        assert!(e.contains(want), "{text}\nwanted {want:?} in {e}");
    }
    // Every problem of every policy is reported, not only the first.
    let two = pool(
        "policies: { up: { rules: [{ pods: 0, per: 15s }] }, down: { rules: [{ percent: 0, per: 1h }] } }",
    );
    assert_eq!(errors(&two).len(), 3, "{:#?}", errors(&two));
    // The largest loadable values load.
    let ok = pool(
        "policies: { up: { select: min, rules: [{ pods: 100000, per: 30m }, { percent: 1000, per: 1s }] }, down: { rules: [{ percent: 100, per: 30m }] } }",
    );
    let set = load_str(&[("r.yaml", &ok)]).unwrap();
    use crate::rules::{RateLimit, RatePolicy, Select};
    let p = &set.pools[0].policies;
    let up = p.up.as_ref().unwrap();
    assert_eq!(up.select, Select::Min);
    assert_eq!(
        up.rules[1],
        RatePolicy {
            limit: RateLimit::Percent(1000),
            per: std::time::Duration::from_secs(1)
        }
    );
    // `select` is `max` unless written, as HPA's `selectPolicy`.
    assert_eq!(p.down.as_ref().unwrap().select, Select::Max);
}

#[test]
fn predict_is_bounded_with_the_field_and_what_is_valid() {
    let target = "target: { metric: avg_cpu_used_pct, value: 70 }";
    let pool = |predict: &str| {
        format!(
            "pools:\n  - {{ name: p, min: 0, max: 1, scale: {{ {target}, predict: {predict} }} }}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "pools:\n  - { name: p, min: 0, max: 1, scale: { predict: { horizon: 2m } } }\n".into(),
            "r.yaml:2:50: pool \"p\": scale.predict forecasts the target's demand, and this pool has no `scale.target`; add one",
        ),
        (
            pool("{ lookback: 30s }"),
            "r.yaml:2:111: pool \"p\": scale.predict: `lookback` is 30s; it must be from 1m to 7days",
        ),
        (
            pool("{ horizon: 2h }"),
            "pool \"p\": scale.predict: `horizon` is 2h; it must be from 5s to 1h",
        ),
        (
            pool("{ method: seasonal }"),
            "r.yaml:2:109: pool \"p\": scale.predict: `method: seasonal` needs a `season`, such as `season: 24h`",
        ),
        (
            pool("{ method: seasonal, season: 1m, horizon: 2m }"),
            "scale.predict: `season` 1m must be longer than `horizon` 2m",
        ),
        (
            pool("{ method: seasonal, season: 30d }"),
            "scale.predict: `season` is 30days; it must be from 1m to 7days",
        ),
        (
            pool("{ season: 24h }"),
            "scale.predict: `season` is for `method: seasonal`; remove it, or set `method: seasonal`",
        ),
        (
            pool("{ method: arima }"),
            "unknown variant `arima`, expected one of trend, seasonal",
        ),
        (
            pool("{ mode: scale }"),
            "unknown variant `scale`, expected one of forecast_only, forecast_and_scale",
        ),
        (pool("{ window: 1h }"), "unknown field `window`"),
    ];
    for (text, want) in &cases {
        let e = one_error(text);
        assert!(e.contains(want), "{text}\nwanted {want:?} in {e}");
    }
    use crate::rules::{Predict, PredictMethod, PredictMode};
    use std::time::Duration;
    // Defaults: a trend over 1h, 2m ahead, forecast only (AWS's safe first mode).
    let set = load_str(&[("r.yaml", &pool("{}"))]).unwrap();
    assert_eq!(
        set.pools[0].predict,
        Some(Predict {
            method: PredictMethod::Trend,
            lookback: Duration::from_secs(3600),
            horizon: Duration::from_secs(120),
            season: None,
            mode: PredictMode::ForecastOnly,
        })
    );
    let text = pool(
        "{ method: seasonal, season: 7d, lookback: 7d, horizon: 1h, mode: forecast_and_scale }",
    );
    let set = load_str(&[("r.yaml", &text)]).unwrap();
    let p = set.pools[0].predict.unwrap();
    assert_eq!(p.season, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(p.mode, PredictMode::ForecastAndScale);
}

const SERVICE: &str = r#"
pools:
  - name: jobs
    min: 0
    max: 20
    idle: { min: 2, max: 5 }
    claims: { on_release: return, lease: 5m, max_lease: 2h }
    keepalive: { enabled: true, extend_to: 15m, before: 3m }
    max_age: 23h
    warm: { paused: 4, after: 1m }
  - name: plain
    min: 1
    max: 3
    keepalive: false
    sandbox: { timeout: 1h }
"#;

#[test]
fn loads_the_service_fields() {
    let set = load_str(&[("s.yaml", SERVICE)]).unwrap();
    let j = set.pool("jobs").unwrap();
    assert_eq!(j.idle, Some(crate::rules::IdleBand { min: 2, max: 5 }));
    assert_eq!(j.claims.on_release, crate::rules::OnRelease::Return);
    assert_eq!(j.claims.lease, Duration::from_secs(300));
    assert_eq!(j.claims.max_lease, Duration::from_secs(7200));
    assert!(j.keepalive.enabled);
    assert_eq!(j.keepalive.extend_to, Duration::from_secs(900));
    assert_eq!(j.keepalive.before, Duration::from_secs(180));
    assert_eq!(j.max_age, Some(Duration::from_secs(23 * 3600)));
    let w = j.warm.unwrap();
    assert_eq!((w.paused, w.after), (4, Duration::from_secs(60)));
    let p = set.pool("plain").unwrap();
    assert!(!p.keepalive.enabled);
    assert_eq!(p.idle, None);
    assert_eq!(p.claims, crate::rules::ClaimSettings::default());
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

#[test]
fn service_field_defaults() {
    let set = load_str(&[(
        "s.yaml",
        "pools:\n  - { name: p, min: 0, max: 3, keepalive: { extend_to: 2m } }\n",
    )])
    .unwrap();
    let p = set.pool("p").unwrap();
    // `before` defaults to 2m, or half of `extend_to` when that is shorter.
    assert_eq!(p.keepalive.before, Duration::from_secs(60));
    assert_eq!(
        p.keepalive,
        crate::rules::KeepAlive {
            enabled: true,
            extend_to: Duration::from_secs(120),
            before: Duration::from_secs(60)
        }
    );
    assert_eq!(p.max_age, None);
    assert_eq!(p.warm, None);
    // A max_lease shorter than the default lease shortens the default lease.
    let set = load_str(&[(
        "s.yaml",
        "pools:\n  - { name: p, min: 0, max: 3, claims: { max_lease: 1m } }\n",
    )])
    .unwrap();
    assert_eq!(set.pool("p").unwrap().claims.lease, Duration::from_secs(60));
}

#[test]
fn service_field_errors_name_the_place_and_what_is_valid() {
    let cases: &[(&str, &str)] = &[
        (
            "idle: { min: 5, max: 2 }",
            "r.yaml:5:18: pool \"p\": `idle.min` 5 is greater than `idle.max` 2",
        ),
        (
            "idle: { min: 1, max: 9 }",
            "r.yaml:5:26: pool \"p\": `idle.max` 9 is greater than the pool's `max` 8",
        ),
        (
            "idle: { min: -1, max: 2 }",
            "`idle.min` is -1; it must be a whole number from 0 to 100000",
        ),
        (
            "claims: { lease: 3h, max_lease: 2h }",
            "`claims.lease` is 3h; it must be from 1s to 2h",
        ),
        (
            "claims: { max_lease: 8d }",
            "`claims.max_lease` is 8days; it must be from 1s to 7days",
        ),
        (
            "claims: { on_release: keep }",
            "r.yaml:5:27: unknown variant `keep`, expected one of kill, return",
        ),
        (
            "keepalive: { extend_to: 10s }",
            "`keepalive.extend_to` is 10s; it must be from 1m to 1day",
        ),
        (
            "keepalive: { extend_to: 5m, before: 5m }",
            "`keepalive.before` 5m must be shorter than `keepalive.extend_to` 5m",
        ),
        (
            "keepalive: { before: 10s }",
            "`keepalive.before` 10s must be longer than `scale.interval` 15s",
        ),
        ("keepalive: { enabled: yes please }", "r.yaml:5:"),
        (
            "max_age: 5m",
            "`max_age` is 5m; it must be from 10m to 1day",
        ),
        (
            "max_age: 2d",
            "`max_age` is 2days; it must be from 10m to 1day",
        ),
        (
            "warm: { paused: 2 }",
            "r.yaml:5:11: pool \"p\": `warm` parks idle members beyond `idle.min`, and this pool has no `idle`",
        ),
        (
            "idle: { min: 0, max: 2 }\n    warm: { paused: 0 }",
            "`warm.paused` is 0; it must be a whole number from 1 to 100000",
        ),
        (
            "idle: { min: 0, max: 2 }\n    warm: { paused: 1, after: 2h }",
            "`warm.after` is 2h; it must be from 0s to 1h",
        ),
    ];
    for (field, want) in cases {
        let text = format!("pools:\n  - name: p\n    min: 0\n    max: 8\n    {field}\n");
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{field}: wanted {want:?} in {errs:?}"
        );
    }
}

#[test]
fn check_warns_when_members_would_die_at_the_default_timeout() {
    let set = load_str(&[(
        "w.yaml",
        "pools:\n  - name: p\n    min: 0\n    max: 3\n    keepalive: false\n",
    )])
    .unwrap();
    let w: Vec<String> = set.warnings.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        [
            "w.yaml:5:16: warning: pool \"p\": keep-alive is off and `sandbox.timeout` is not set: members will die at E2B's default 5 min timeout; set `sandbox.timeout`, or remove `keepalive: false`"
        ],
    );
    // The same with a timeout, or with keep-alive on: no warning.
    for text in [
        "pools:\n  - { name: p, min: 0, max: 3, keepalive: false, sandbox: { timeout: 1h } }\n",
        "pools:\n  - { name: p, min: 0, max: 3 }\n",
    ] {
        assert!(load_str(&[("w.yaml", text)]).unwrap().warnings.is_empty());
    }
    // The default keep-alive on a pool evaluated less often than it looks ahead: a warning.
    let set = load_str(&[(
        "w.yaml",
        "pools:\n  - { name: p, min: 0, max: 3, scale: { interval: 5m } }\n",
    )])
    .unwrap();
    assert!(
        set.warnings[0]
            .to_string()
            .contains("keep-alive looks 2m ahead but the pool is evaluated every 5m"),
        "{:?}",
        set.warnings
    );
}
