//! `poolpilot check`, `test` and `simulate` as a user runs them: the real binary, its exit
//! codes and its output, on the shipped examples and on broken inputs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn poolpilot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolpilot"))
        .args(args)
        .current_dir(root())
        .env("POOLPILOT_LOG", "warn")
        .output()
        .expect("run poolpilot")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_rules_and_their_tests() {
    let o = poolpilot(&["check", "rules/"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.starts_with(
            "ok: 7 rule files, 7 test files: 5 pools, 2 alerts, 2 triggers, 1 notifiers"
        ),
        "{out}"
    );
    assert!(
        out.contains("schedule batch/office hours (\"0 8 * * 1-5\" Europe/Paris): next "),
        "{out}"
    );
}

#[test]
fn check_reports_every_error_with_its_place() {
    let o = poolpilot(&["check", "tests/fixtures/broken-rules.yaml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    for want in [
        "tests/fixtures/broken-rules.yaml:3:10: pool \"web\": min 5 is greater than max 2",
        "tests/fixtures/broken-rules.yaml:5:11: pool \"web\": busy: unknown variable \"cpu\"",
        "tests/fixtures/broken-rules.yaml:7:17: pool \"web\": schedules[0]: invalid cron \"0 25 * * *\"",
        "tests/fixtures/broken-rules.yaml:11:11: alert \"slow\": unknown pool \"api\"; defined pools: web",
        "tests/fixtures/broken-rules.yaml:13:14: alert \"slow\": unknown notifier \"pager\"; defined notifiers: none",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{err}"
        );
    }
    assert!(err.ends_with("5 errors found\n"), "{err}");
}

#[test]
fn test_runs_the_shipped_rule_tests() {
    let o = poolpilot(&["test", "rules/tests"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.ends_with("15 passed, 0 failed\n"), "{out}");
}

#[test]
fn a_failing_rule_test_prints_a_diff_and_exits_1() {
    let o = poolpilot(&["test", "tests/fixtures/failing.test.yaml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains(
            "FAIL  tests/fixtures/failing.test.yaml: expects a scale-up that the rules do not make"
        ),
        "{out}"
    );
    assert!(
        out.contains("decisions: expected [\"workers +1\"], got []"),
        "{out}"
    );
    assert!(out.contains("size workers: expected 4, got 3"), "{out}");
    assert!(out.contains("(last evaluation of workers: pool workers: busy_ratio < 0.2 (busy_ratio 0), -1; scale-in held until a whole stabilization window has been observed"), "{out}");
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");
}

#[test]
fn simulate_reports_json_and_draws_a_chart() {
    let dir = std::env::temp_dir().join(format!("poolpilot-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chart = dir.join("chart.svg");
    let o = poolpilot(&[
        "simulate",
        "--rules",
        "rules/guide-pool.yaml",
        "--rules",
        "rules/notifiers.yaml",
        "--rules",
        "rules/lifecycle.yaml",
        "--rules",
        "rules/high-cpu-alert.yaml",
        "--scenario",
        "examples/scenarios/workers-spike.yaml",
        "--json",
        "--out",
        chart.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for key in [
        "sandbox_seconds",
        "unmet_core_seconds",
        "peak_pool_size",
        "creates",
        "kills",
        "alerts_fired",
        "alerts_resolved",
    ] {
        assert!(v[key].is_number(), "total {key}: {v}");
        assert!(v["pools"]["workers"][key].is_number(), "pool {key}: {v}");
    }
    let w = &v["pools"]["workers"];
    // The spike makes the pool grow well past its min of 2 and come back down.
    assert!(w["peak_pool_size"].as_u64().unwrap() >= 7, "{w}");
    assert!(
        w["creates"].as_u64().unwrap() >= 5 && w["kills"].as_u64().unwrap() >= 5,
        "{w}"
    );
    assert!(w["alerts_fired"].as_u64().unwrap() >= 1, "{w}");
    // A fixed pool of 2 would leave most of 10 minutes x 10 cores unmet; the rules keep it small.
    assert!(v["unmet_core_seconds"].as_f64().unwrap() < 1000.0, "{v}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("pool workers size"),
        "{svg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn simulate_handles_a_thousand_sandboxes() {
    let dir = std::env::temp_dir().join(format!("poolpilot-sim-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("big.yaml");
    std::fs::write(&rules, "pools:\n  - name: big\n    min: 1000\n    max: 1200\n    scale:\n      steps: [{ when: busy_ratio > 0.5, add: 50 }]\n").unwrap();
    let scenario = dir.join("big-scenario.yaml");
    std::fs::write(&scenario, "duration: 30m\nload:\n  - { template: base, points: [[0s, 500], [15m, 2500], [30m, 500]] }\n").unwrap();
    let o = poolpilot(&[
        "simulate",
        "--rules",
        rules.to_str().unwrap(),
        "--scenario",
        scenario.to_str().unwrap(),
        "--json",
        "--max-concurrent",
        "5000",
        "--create-rate",
        "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["peak_pool_size"].as_u64().unwrap() >= 1000, "{v}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_demo_scales_up_and_down_and_alerts_fire_and_resolve() {
    let o = poolpilot(&["demo", "--speed", "120"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for want in [
        "▲ +1",
        "▼ -1",
        "! alert firing",
        "✓ alert resolved",
        "trigger replace-crashed-worker",
        "done: ",
        "jobs on jobs: ",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The claims phase served jobs, at least half of them at once from the pool's buffer.
    let jobs = out
        .lines()
        .find(|l| l.starts_with("jobs on jobs: "))
        .unwrap_or_default();
    let n = |after: &str| -> u64 {
        let at = jobs
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {jobs}"));
        jobs[..at]
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0)
    };
    let (claims, at_once) = (n(" claims,"), n(" served at once"));
    assert!(claims > 50 && at_once * 2 >= claims, "{jobs}");
}

#[test]
fn check_sorts_errors_by_line_number() {
    let o = poolpilot(&["check", "tests/fixtures/sorted-errors.yaml"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("tests/fixtures/sorted-errors.yaml:3:"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("tests/fixtures/sorted-errors.yaml:12:"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn check_walks_a_configmap_with_link_loops_and_notes_the_agent_config() {
    use std::os::unix::fs::symlink;
    let dir = std::env::temp_dir().join(format!("poolpilot-check-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let real = dir.join("..2026_11_27_05_00_00.1");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(
        real.join("pool.yaml"),
        "notifiers: [{ name: n, kind: log }]\npools: [{ name: p, min: 0, max: 1 }]\nalerts:\n  - { name: big, scope: pool, when: size > 0, notify: [n], message: \"{{ $labels.pool }}\" }\n",
    )
    .unwrap();
    symlink("..2026_11_27_05_00_00.1", dir.join("..data")).unwrap();
    symlink("..data/pool.yaml", dir.join("pool.yaml")).unwrap();
    symlink(".", dir.join("loop1")).unwrap();
    symlink(".", dir.join("loop2")).unwrap();
    std::fs::write(
        dir.join("poolpilot.yaml"),
        "rules: [./]\nstate_dir: /tmp/x\n",
    )
    .unwrap();
    let o = poolpilot(&["check", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("1 pools, 1 alerts"), "{out}");
    assert!(
        err.contains("poolpilot.yaml: warning: skipped: this is poolpilot's agent config"),
        "{err}"
    );
    assert!(
        err.contains("pool.yaml:4:69: warning: alert \"big\": message uses Prometheus'"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly_not_in_a_panic() {
    // `poolpilot check rules/ | head -0`: the pipe's read end is closed before anything is
    // written, so the first write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [
        vec!["check", "rules/"],
        vec!["test", "rules/tests"],
        vec![
            "simulate",
            "--rules",
            "rules/guide-pool.yaml",
            "--scenario",
            "examples/scenarios/spike.yaml",
        ],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_poolpilot"))
            .args(&args)
            .current_dir(root())
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(o.status.code(), Some(141), "{args:?}: {stderr}");
    }
}
