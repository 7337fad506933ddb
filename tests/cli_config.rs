//! `poolpilot config print` and the help text, as a user meets them: the real binary, its
//! environment, its exit codes. Settings come from a flag, then `POOLPILOT_*`, then the file,
//! then E2B's variables, then defaults; secrets are never shown.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn poolpilot(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
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
    assert!(out(&o).contains("`rules` must name at least one file or directory (in the config file, by --rules, or POOLPILOT_RULES)"), "{}", out(&o));
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
        out(&o).contains("`api.create_rate` must be a positive number"),
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
    let key = "e2b_0123456789abcdef0123456789abcdef01234567";
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
    let p = out(&poolpilot(
        &d.0,
        &["config", "print", "--config", "poolpilot.yaml", "--webhook"],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    ));
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
        "run", "config", "demo", "health", "emulator", "check", "test", "simulate",
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
        .chain([vec!["config", "print"]])
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
