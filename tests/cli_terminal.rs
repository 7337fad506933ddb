//! What poolpilot writes for a terminal and for a pipe, as a user meets it: colour codes only
//! on a terminal and never with `NO_COLOR`, the log filter from `--log-level`, `POOLPILOT_LOG`
//! or `RUST_LOG`, and the completion scripts and manual pages generated from the command line.
//! A terminal is a pseudo-terminal from util-linux's `script`, which every Debian has.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A URL where nothing listens: `health` fails at once, logging its connection at debug level.
const NOBODY: &str = "http://127.0.0.1:1";

/// `health` against [`NOBODY`] with debug text logs: a command that logs at once, offline.
const DEBUG_HEALTH: [&str; 7] = [
    "--log-format",
    "text",
    "--log-level",
    "debug",
    "health",
    "--url",
    NOBODY,
];

/// Every command the top-level help lists (but `help`): the completions and the manual must
/// name each one, whatever commands are added later.
fn commands() -> Vec<String> {
    let help = stdout(&poolpilot(&["--help"], &[]));
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect();
    for c in ["run", "simulate", "completions", "man"] {
        assert!(listed.iter().any(|l| l == c), "{c} in {listed:?}:\n{help}");
    }
    listed
}

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

/// A fresh empty folder, removed when dropped.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workdir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("poolpilot-term-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
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
    let o = poolpilot(&DEBUG_HEALTH, &[]);
    let err = stderr(&o);
    assert!(err.contains("DEBUG"), "debug lines are logged: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes in a pipe: {err:?}");
}

#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let args = DEBUG_HEALTH;
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

#[test]
fn bash_completions_name_every_command_and_parse() {
    let o = poolpilot(&["completions", "bash"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let script = stdout(&o);
    for c in commands() {
        assert!(script.contains(c.as_str()), "{c} is completed:\n{script}");
    }
    assert!(script.contains("--log-level"), "flags are completed");
    let d = workdir("bash");
    let file = d.0.join("poolpilot.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n rejects the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_told_the_valid_ones() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = poolpilot(&["completions", shell], &[]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        assert!(stdout(&o).contains("simulate"), "{shell}");
    }
    let o = poolpilot(&["completions", "tcsh"], &[]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let err = stderr(&o);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
    assert!(
        err.contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{err}"
    );
}

#[test]
fn the_man_page_is_roff_and_names_every_command() {
    let o = poolpilot(&["man"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    let first_macro = page
        .lines()
        .find(|l| l.starts_with(".TH") || l.starts_with(".SH"))
        .unwrap_or_default();
    assert!(first_macro.starts_with(".TH poolpilot 1"), "{page}");
    for c in commands() {
        assert!(
            page.contains(&format!("poolpilot\\-{c}(1)")),
            "{c} is named:\n{page}"
        );
    }
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let d = workdir("man");
    let o = poolpilot(&["man", "--dir", d.0.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed = stdout(&o);
    let page = |name: &str| d.0.join(format!("{name}.1"));
    let mut expected = vec![page("poolpilot"), page("poolpilot-config-print")];
    expected.extend(commands().iter().map(|c| page(&format!("poolpilot-{c}"))));
    for p in &expected {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.contains(".TH"), "{}", p.display());
        assert!(listed.contains(&p.display().to_string()), "{listed}");
    }
    let missing = Path::new("/nonexistent/poolpilot-man");
    let o = poolpilot(&["man", "--dir", missing.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
}
