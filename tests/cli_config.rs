//! `poolpilot config print` and the help text, as a user meets them: the real binary, its
//! environment, its exit codes. Settings come from a flag, then `POOLPILOT_*`, then the file,
//! then E2B's variables, then defaults; secrets are never shown.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A key that `run` would accept: `config print` fails, as `run` does, without one.
const KEY: &str = "e2b_0123456789abcdef0123456789abcdef01234567";

/// The binary with an API key in E2B_API_KEY and a webhook secret (a test's `env` may
/// replace them).
fn poolpilot(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut with_key = vec![
        ("E2B_API_KEY", KEY),
        ("POOLPILOT_WEBHOOK_SECRET", "whsec-for-tests"),
    ];
    with_key.extend_from_slice(env);
    poolpilot_bare(dir, args, &with_key)
}

/// The binary with only the variables `env` gives.
fn poolpilot_bare(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_poolpilot"));
    c.args(args).current_dir(dir).env("POOLPILOT_LOG", "warn");
    // Only what each test sets: no variable of the machine running the tests leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("POOLPILOT_") || k.starts_with("E2B_") || k == "CREDENTIALS_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    c.output().expect("run poolpilot")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The line of `config print` that sets `key`.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workdir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("poolpilot-cfg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::write(
        d.join("rules/pool.yaml"),
        "pools:\n  - { name: w, min: 1, max: 2 }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("poolpilot.yaml"),
        "api: { url: \"http://file.example\" }\nrules: [rules/]\nstate_dir: state\nlisten: 127.0.0.1:7000\npoll: { metrics: 7s }\n",
    )
    .unwrap();
    Dir(d)
}

#[test]
fn flags_beat_variables_beat_the_file_beats_defaults() {
    let d = workdir("order");
    let o = poolpilot(
        &d.0,
        &[
            "config",
            "print",
            "--config",
            "poolpilot.yaml",
            "--listen",
            "127.0.0.1:7002",
        ],
        &[
            ("POOLPILOT_LISTEN", "127.0.0.1:7001"),
            ("POOLPILOT_POLL_METRICS", "3s"),
            ("POOLPILOT_DRY_RUN", "true"),
            ("E2B_API_URL", "http://e2b-variable.example"),
        ],
    );
    let p = out(&o);
    assert!(o.status.success(), "{p}");
    assert!(
        line(&p, "listen").contains("\"127.0.0.1:7002\"")
            && line(&p, "listen").contains("# flag --listen"),
        "{p}"
    );
    assert!(
        line(&p, "metrics").contains("\"3s\"")
            && line(&p, "metrics").contains("# env POOLPILOT_POLL_METRICS"),
        "{p}"
    );
    assert!(
        line(&p, "events").contains("\"10s\"") && line(&p, "events").contains("# default"),
        "{p}"
    );
    assert!(
        line(&p, "dry_run").contains("true")
            && line(&p, "dry_run").contains("env POOLPILOT_DRY_RUN"),
        "{p}"
    );
    // The file's api.url wins over E2B's own variable...
    assert!(
        line(&p, "url").contains("http://file.example") && line(&p, "url").contains("# file"),
        "{p}"
    );
    let state = d.0.join("state");
    assert!(
        line(&p, "state_dir").contains(&format!("{:?}", state.display().to_string())),
        "paths are absolute: {p}"
    );

    // ... which is used when nothing else sets it; POOLPILOT_API_URL beats both.
    std::fs::write(d.0.join("bare.yaml"), "rules: [rules/]\nstate_dir: state\n").unwrap();
    let p = out(&poolpilot(
        &d.0,
        &["config", "print", "--config", "bare.yaml"],
        &[("E2B_API_URL", "http://e2b-variable.example")],
    ));
    assert!(
        line(&p, "url").contains("http://e2b-variable.example")
            && line(&p, "url").contains("# env E2B_API_URL"),
        "{p}"
    );
    let p = out(&poolpilot(
        &d.0,
        &["config", "print", "--config", "bare.yaml"],
        &[
            ("E2B_API_URL", "http://e2b-variable.example"),
            ("POOLPILOT_API_URL", "http://poolpilot-variable.example"),
        ],
    ));
    assert!(
        line(&p, "url").contains("http://poolpilot-variable.example")
            && line(&p, "url").contains("# env POOLPILOT_API_URL"),
        "{p}"
    );
    let p = out(&poolpilot(
        &d.0,
        &["config", "print", "--config", "bare.yaml"],
        &[],
    ));
    assert!(
        line(&p, "url").contains("https://api.e2b.app") && line(&p, "url").contains("# default"),
        "{p}"
    );
}

#[test]
fn no_file_is_needed_when_variables_say_everything() {
    let d = workdir("env-only");
    let o = poolpilot(
        &d.0,
        &["config", "print"],
        &[
            ("POOLPILOT_RULES", "rules/pool.yaml,rules"),
            ("POOLPILOT_STATE_DIR", "/var/lib/poolpilot"),
            (
                "POOLPILOT_WEBHOOK_PUBLIC_URL",
                "https://agent.example/webhooks/e2b",
            ),
        ],
    );
    let p = out(&o);
    assert!(o.status.success(), "{p}");
    assert!(
        p.contains(&format!(
            "  - {:?}",
            d.0.join("rules/pool.yaml").display().to_string()
        )),
        "{p}"
    );
    assert!(
        line(&p, "webhook").contains("on, implied by env POOLPILOT_WEBHOOK_PUBLIC_URL"),
        "{p}"
    );
    assert!(line(&p, "name").contains("\"poolpilot\""), "{p}");

    // Without rules or a state dir, the error says what is missing and where to give it.
    let o = poolpilot(&d.0, &["config", "print"], &[("POOLPILOT_STATE_DIR", "s")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("error: `rules` is required: name at least one rule file or directory in the config file (`rules:`), by --rules, or by POOLPILOT_RULES"), "{}", out(&o));
    let o = poolpilot(&d.0, &["config", "print", "--rules", "rules"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("`state_dir` is required"), "{}", out(&o));
    let o = poolpilot(
        &d.0,
        &[
            "config",
            "print",
            "--rules",
            "rules",
            "--state-dir",
            "s",
            "--create-rate",
            "0",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("error: --create-rate: `api.create_rate` must be from 0.01 to 1000"),
        "{}",
        out(&o)
    );
    let o = poolpilot(
        &d.0,
        &[
            "config",
            "print",
            "--rules",
            "rules",
            "--state-dir",
            "s",
            "--poll-metrics",
            "soon",
        ],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a value that does not parse is a usage error"
    );
    assert!(out(&o).contains("invalid duration \"soon\""), "{}", out(&o));
}

#[test]
fn secrets_are_never_printed_only_where_they_come_from() {
    let d = workdir("secrets");
    let key = KEY;
    let hook = "whsec-very-secret-value";
    let o = poolpilot(
        &d.0,
        &["config", "print", "--config", "poolpilot.yaml", "--webhook"],
        &[("E2B_API_KEY", key), ("POOLPILOT_WEBHOOK_SECRET", hook)],
    );
    let p = out(&o);
    assert!(o.status.success(), "{p}");
    assert!(
        !p.contains(key) && !p.contains(&key[4..20]) && !p.contains(hook),
        "{p}"
    );
    assert!(
        line(&p, "key_file")
            .contains("the API key is read from the environment variable E2B_API_KEY"),
        "{p}"
    );
    assert!(
        line(&p, "secret_file")
            .contains("read from the environment variable POOLPILOT_WEBHOOK_SECRET"),
        "{p}"
    );
    assert!(line(&p, "webhook").contains("flag --webhook"), "{p}");

    // A systemd credential is found and named; a missing secret is said to be missing.
    std::fs::create_dir_all(d.0.join("creds")).unwrap();
    std::fs::write(d.0.join("creds/e2b-api-key"), key).unwrap();
    let creds = d.0.join("creds");
    let o = poolpilot_bare(
        &d.0,
        &["config", "print", "--config", "poolpilot.yaml", "--webhook"],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    let p = out(&o);
    assert_eq!(o.status.code(), Some(1), "run would not start: {p}");
    assert!(!p.contains(key), "{p}");
    assert!(
        line(&p, "key_file").contains(&format!(
            "read from the file {}",
            creds.join("e2b-api-key").display()
        )),
        "{p}"
    );
    assert!(line(&p, "secret_file").contains("NOT SET"), "{p}");
}

#[test]
fn the_printed_config_loads_back_to_the_same_config() {
    let d = workdir("roundtrip");
    let args = [
        "config",
        "print",
        "--config",
        "poolpilot.yaml",
        "--webhook-public-url",
        "https://a.example/hook",
        "--create-rate",
        "2.5",
    ];
    let first = poolpilot(&d.0, &args, &[("POOLPILOT_POLL_EVENTS", "1m")]);
    assert!(first.status.success(), "{}", out(&first));
    let printed = String::from_utf8(first.stdout).unwrap();
    std::fs::create_dir_all(d.0.join("elsewhere")).unwrap();
    std::fs::write(d.0.join("elsewhere/saved.yaml"), &printed).unwrap();
    let again = poolpilot(
        &d.0.join("elsewhere"),
        &["config", "print", "--config", "saved.yaml"],
        &[],
    );
    assert!(again.status.success(), "{}", out(&again));
    let values = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split("  #").next().unwrap().trim_end().to_string())
            .collect()
    };
    assert_eq!(
        values(&printed),
        values(&String::from_utf8(again.stdout).unwrap())
    );
}

#[test]
fn every_command_and_flag_has_help_and_help_exits_0() {
    let d = workdir("help");
    let o = poolpilot(&d.0, &["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let top = out(&o);
    let commands = [
        "run",
        "config",
        "demo",
        "health",
        "status",
        "events",
        "emulator",
        "check",
        "test",
        "simulate",
        "tune",
        "record",
        "completions",
        "man",
    ];
    for c in commands {
        assert!(top.contains(&format!("  {c} ")), "{c} is listed: {top}");
    }
    assert!(
        top.contains("Exit codes"),
        "exit codes are in the help: {top}"
    );
    for c in commands
        .iter()
        .map(|c| vec![*c])
        .chain([vec!["config", "print"], vec!["events", "report"]])
    {
        let mut args = c.clone();
        args.push("-h"); // one line per option: name, then its description
        let o = poolpilot(&d.0, &args, &[]);
        let h = out(&o);
        assert_eq!(o.status.code(), Some(0), "{c:?}: {h}");
        assert!(h.contains("Usage: poolpilot"), "{c:?}: {h}");
        // Every option's line carries a description after its name.
        for l in h.lines().filter(|l| l.trim_start().starts_with("--")) {
            let after = l
                .trim_start()
                .split_once("  ")
                .map(|(_, d)| d.trim())
                .unwrap_or("");
            assert!(!after.is_empty(), "{c:?}: no help for {l:?}:\n{h}");
        }
    }
    // Usage errors exit 2; failures exit 1.
    assert_eq!(
        poolpilot(&d.0, &["no-such-command"], &[]).status.code(),
        Some(2)
    );
    assert_eq!(
        poolpilot(&d.0, &["run", "--no-such-flag"], &[])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        poolpilot(&d.0, &["check", "missing.yaml"], &[])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn a_variable_can_turn_off_what_the_file_turns_on() {
    let d = workdir("bools");
    std::fs::write(
        d.0.join("on.yaml"),
        "rules: [rules/]\nstate_dir: s\ndry_run: true\nwebhook: { name: hook }\n",
    )
    .unwrap();
    for (value, want) in [
        ("false", "false"),
        ("0", "false"),
        ("off", "false"),
        ("yes", "true"),
    ] {
        let p = out(&poolpilot(
            &d.0,
            &["config", "print", "--config", "on.yaml"],
            &[("POOLPILOT_DRY_RUN", value), ("POOLPILOT_WEBHOOK", value)],
        ));
        assert!(
            line(&p, "dry_run").starts_with(&format!("dry_run: {want} ")),
            "{value}: {p}"
        );
        assert_eq!(
            line(&p, "webhook").starts_with("webhook: null"),
            want == "false",
            "{value}: {p}"
        );
    }
    // A bare flag means true and beats the variable.
    let p = out(&poolpilot(
        &d.0,
        &["config", "print", "--config", "on.yaml", "--dry-run"],
        &[("POOLPILOT_DRY_RUN", "false")],
    ));
    assert!(
        line(&p, "dry_run").contains("true") && line(&p, "dry_run").contains("flag --dry-run"),
        "{p}"
    );
}

/// A setting out of range as one source gives it: flags, variables, the file's extra lines,
/// and the start of the expected error.
type Case = (
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
    &'static str,
    &'static str,
);

fn out_of_range_cases() -> Vec<Case> {
    vec![
        (
            vec!["--create-rate", "1e-300"],
            vec![],
            "",
            "error: --create-rate: `api.create_rate` must be from 0.01 to 1000 creates per second",
        ),
        (
            vec![],
            vec![("POOLPILOT_CREATE_RATE", "1e300")],
            "",
            "error: POOLPILOT_CREATE_RATE: `api.create_rate` must be from 0.01 to 1000",
        ),
        (
            vec![],
            vec![],
            "api:\n  create_rate: 1e-300\n",
            "error: bounds.yaml:4:16: `api.create_rate` must be from 0.01 to 1000",
        ),
        (
            vec!["--poll-metrics", "300000years"],
            vec![],
            "",
            "error: --poll-metrics: `poll.metrics` must be from 100ms to 1h",
        ),
        (
            vec![],
            vec![("POOLPILOT_POLL_EVENTS", "0s")],
            "",
            "error: POOLPILOT_POLL_EVENTS: `poll.events` must be from 1s to 1h",
        ),
        (
            vec![],
            vec![],
            "poll: { metrics: 0s }\n",
            "error: bounds.yaml:3:18: `poll.metrics` must be from 100ms to 1h",
        ),
        (
            vec!["--listen", "127.0.0.1:99999"],
            vec![],
            "",
            "error: --listen: `listen` must be HOST:PORT with a port from 0 to 65535",
        ),
        (
            vec![],
            vec![("POOLPILOT_LISTEN", "nohost")],
            "",
            "error: POOLPILOT_LISTEN: `listen` must be HOST:PORT",
        ),
        (
            vec![],
            vec![],
            "listen: \"bad host:1\"\n",
            "error: bounds.yaml:3:9: `listen` must be HOST:PORT",
        ),
        (
            vec![],
            vec![("POOLPILOT_API_URL", "api.e2b.app")],
            "",
            "error: POOLPILOT_API_URL: `api.url` must be an http or https URL",
        ),
        (
            vec![],
            vec![("E2B_API_URL", "ftp://x")],
            "",
            "error: E2B_API_URL: `api.url` must be an http or https URL",
        ),
    ]
}

#[test]
fn every_numeric_setting_is_bounded_and_errors_name_their_source() {
    let d = workdir("bounds");
    for (args, env, extra, want) in out_of_range_cases() {
        std::fs::write(
            d.0.join("bounds.yaml"),
            format!("rules: [rules/]\nstate_dir: state\n{extra}"),
        )
        .unwrap();
        for command in [&["config", "print"][..], &["run"][..]] {
            let mut a: Vec<&str> = command.to_vec();
            a.extend(["--config", "bounds.yaml"]);
            a.extend(args.iter().copied());
            let o = poolpilot(&d.0, &a, &env);
            let p = out(&o);
            assert_eq!(o.status.code(), Some(1), "{a:?} {env:?}: {p}");
            assert!(p.contains(want), "{a:?} {env:?}: want {want:?} in:\n{p}");
            assert!(!p.contains("panicked"), "{p}");
        }
    }
    // Every problem is reported at once, each blamed on its own source.
    std::fs::write(
        d.0.join("bounds.yaml"),
        "rules: [rules/]\nstate_dir: state\npoll: { metrics: 2h }\n",
    )
    .unwrap();
    let o = poolpilot(
        &d.0,
        &[
            "config",
            "print",
            "--config",
            "bounds.yaml",
            "--create-rate",
            "0",
        ],
        &[("POOLPILOT_LISTEN", "x")],
    );
    let p = out(&o);
    for want in [
        "error: --create-rate: ",
        "error: POOLPILOT_LISTEN: ",
        "error: bounds.yaml:3:18: `poll.metrics`",
    ] {
        assert!(p.contains(want), "{want}: {p}");
    }
    // A value that does not parse is a usage error, blamed on the variable that gave it.
    let o = poolpilot(
        &d.0,
        &["config", "print", "--config", "bounds.yaml"],
        &[
            ("POOLPILOT_POLL_METRICS", "soon"),
            ("POOLPILOT_DRY_RUN", "maybe"),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("error: POOLPILOT_POLL_METRICS: invalid duration \"soon\"")
            && !out(&o).contains("--poll-metrics"),
        "{}",
        out(&o)
    );
}

#[test]
fn config_print_fails_as_run_does_when_the_api_key_is_missing() {
    let d = workdir("nokey");
    let print = poolpilot_bare(
        &d.0,
        &["config", "print", "--config", "poolpilot.yaml"],
        &[],
    );
    let run = poolpilot_bare(&d.0, &["run", "--config", "poolpilot.yaml"], &[]);
    assert_eq!(print.status.code(), Some(1), "{}", out(&print));
    assert_eq!(run.status.code(), Some(1), "{}", out(&run));
    let said = String::from_utf8_lossy(&print.stderr);
    assert!(said.contains("E2B_API_KEY is not set"), "{said}");
    assert_eq!(
        said,
        String::from_utf8_lossy(&run.stderr),
        "the same message"
    );
    // What can be printed still is, the secret as NOT SET.
    let printed = String::from_utf8_lossy(&print.stdout);
    assert!(line(&printed, "key_file").contains("NOT SET"), "{printed}");
    assert!(
        line(&printed, "listen").contains("127.0.0.1:7000"),
        "{printed}"
    );
}

#[test]
fn other_commands_refuse_numbers_out_of_range_as_usage_errors() {
    let d = workdir("flags");
    let root = env!("CARGO_MANIFEST_DIR");
    let rules = format!("{root}/rules/guide-pool.yaml");
    let scenario = format!("{root}/examples/scenarios/workers-spike.yaml");
    let sim = ["simulate", "--rules", &rules, "--scenario", &scenario];
    for (extra, want) in [
        (
            &["--metrics-interval", "300000years"][..],
            "--metrics-interval",
        ),
        (&["--tick", "0s"][..], "must be from 100ms to 1h"),
        (
            &["--create-rate", "1e-300"][..],
            "0 (unlimited), or from 0.001",
        ),
        (
            &["--max-concurrent", "99999999999"][..],
            "from 1 to 1000000",
        ),
    ] {
        let mut a = sim.to_vec();
        a.extend_from_slice(extra);
        let o = poolpilot(&d.0, &a, &[]);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", out(&o));
        assert!(out(&o).contains(want), "{extra:?}: {}", out(&o));
    }
    for a in [
        &["demo", "--speed", "1e-300"][..],
        &["emulator", "--webhook-backoff", "300000years"][..],
        &["emulator", "--status-every", "300000years"][..],
        &["emulator", "--webhook-attempts", "0"][..],
        &["emulator", "--metrics-interval", "0s"][..],
    ] {
        let o = poolpilot(&d.0, a, &[]);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", out(&o));
    }
}

#[test]
fn the_demo_view_shows_each_decision_once_and_its_log_goes_to_a_file() {
    let d = workdir("demo");
    let tmp = d.0.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let o = poolpilot(
        &d.0,
        &["demo", "--speed", "600"],
        &[("TMPDIR", tmp.to_str().unwrap()), ("POOLPILOT_LOG", "info")],
    );
    let (view, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{view}{err}");
    // A terminal shows stdout and stderr together: nothing but the view may reach it.
    assert!(err.is_empty(), "log lines leak into the live view:\n{err}");
    let first = "raised to min 2: 0 -> 2";
    assert_eq!(view.matches(first).count(), 1, "{view}");
    let log_line = view
        .lines()
        .find_map(|l| l.strip_prefix("the agent's log: "))
        .unwrap_or_else(|| panic!("the view names its log file:\n{view}"));
    assert!(Path::new(log_line).starts_with(&tmp), "{log_line}");
    let log = std::fs::read_to_string(log_line).unwrap();
    assert!(log.contains(first), "{log}");
}

#[test]
fn text_logs_carry_no_colour_codes_outside_a_terminal() {
    let d = workdir("ansi");
    let o = poolpilot(
        &d.0,
        &[
            "--log-format",
            "text",
            "--log-level",
            "nonsense=[",
            "check",
            "rules",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid log level"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in a pipe: {err:?}");
}

#[test]
fn config_file_errors_say_the_position_once_and_name_the_setting() {
    // Found by trying it: the config file's errors kept issue 9's rule-file defects (a doubled
    // position, serde-saphyr's `DuplicateKeyPolicy`, a bare `invalid u64`, no line for limits).
    let d = workdir("file-errors");
    let cases = [
        (
            "rules: [rules]\nstate_dir: s\napi: {}\napi: {}\n",
            "c.yaml:4:1: key `api` is defined twice in the same mapping (first at line 3); keep one",
        ),
        (
            "rules: [rules]\nstate_dir: s\nlimits:\n  seen_ids: 99999999999999999999\n",
            "c.yaml:4:13: `seen_ids`: 99999999999999999999 is not a number this setting can hold",
        ),
        (
            "rules: [rules]\nstate_dir: s\nlimits:\n  max_connections: 4294967295\n",
            "c.yaml:4:20: `limits.max_connections` must be from 1 to 1000000",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(d.0.join("c.yaml"), text).unwrap();
        let o = poolpilot(
            &d.0,
            &["config", "print", "--config", "c.yaml"],
            &[("E2B_API_KEY", "e2b_test")],
        );
        let said = out(&o);
        assert_eq!(o.status.code(), Some(1), "{said}");
        assert!(said.contains(want), "want {want:?} in: {said}");
        assert!(!said.contains("line 4 column"), "{said}");
        assert!(!said.contains("DuplicateKeyPolicy"), "{said}");
    }
}
