//! What poolpilot writes for a terminal and for a pipe, as a user meets it: colour codes only
//! on a terminal and never with `NO_COLOR`, the log filter from `--log-level`, `POOLPILOT_LOG`
//! or `RUST_LOG`.
//! A terminal is a pseudo-terminal from util-linux's `script`, which every Debian has.

use std::process::{Command, Output};

/// A URL where nothing listens: `health` fails at once, logging its connection at debug level.
const NOBODY: &str = "http://127.0.0.1:1";

/// The binary with only the variables `env` gives, none of the machine's logging or colour
/// variables.
fn poolpilot(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_poolpilot"));
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("POOLPILOT_")
            || k.starts_with("E2B_")
            || k == "RUST_LOG"
            || k == "NO_COLOR"
        {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    c.output().expect("run poolpilot")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a terminal shows when `args` run on one (stdout and stderr together), with `env`.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut line = shell_quote(env!("CARGO_BIN_EXE_poolpilot"));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    let o = c
        .output()
        .expect("util-linux `script` runs (apt-get install util-linux)");
    stdout(&o)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn text_logs_in_a_pipe_carry_no_colour_codes() {
    let o = poolpilot(
        &[
            "--log-format",
            "text",
            "--log-level",
            "debug",
            "health",
            "--url",
            NOBODY,
        ],
        &[],
    );
    let err = stderr(&o);
    assert!(err.contains("DEBUG"), "debug lines are logged: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes in a pipe: {err:?}");
}

#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let args = [
        "--log-format",
        "text",
        "--log-level",
        "debug",
        "health",
        "--url",
        NOBODY,
    ];
    let coloured = on_a_terminal(&args, &[]);
    assert!(coloured.contains("DEBUG"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(plain.contains("DEBUG"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "NO_COLOR=1 still coloured: {plain:?}"
    );
    let empty = on_a_terminal(&args, &[("NO_COLOR", "")]);
    assert!(
        empty.contains('\u{1b}'),
        "an empty NO_COLOR changes nothing: {empty:?}"
    );
}

#[test]
fn rust_log_sets_the_level_unless_poolpilot_log_or_the_flag_does() {
    let debug_lines = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--log-format", "text"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["health", "--url", NOBODY]);
        stderr(&poolpilot(&all, env)).contains("DEBUG")
    };
    assert!(!debug_lines(&[], &[]), "info by default");
    assert!(debug_lines(&[], &[("RUST_LOG", "debug")]), "RUST_LOG alone");
    assert!(
        !debug_lines(&[], &[("RUST_LOG", "debug"), ("POOLPILOT_LOG", "warn")]),
        "POOLPILOT_LOG wins over RUST_LOG"
    );
    assert!(
        !debug_lines(&["--log-level", "warn"], &[("RUST_LOG", "debug")]),
        "the flag wins over RUST_LOG"
    );
    assert!(
        debug_lines(&["--log-level", "debug"], &[("POOLPILOT_LOG", "warn")]),
        "the flag wins over POOLPILOT_LOG"
    );
}
