//! The README and every docs/*.md, run as a new user would: each command block that can run
//! here is run, and its output is compared with what the docs show, so that docs and program
//! cannot drift apart.
//!
//! What counts as a block, and how it is read:
//! - A fenced block marked `sh`, `bash`, `console` or `shell`, or an unmarked one with a line
//!   starting with `$ `.
//! - In a block with `$ ` lines, each such line is a command (a trailing `\` continues it on the
//!   next line), and the lines after it, up to the next blank line or `$ ` line, are its
//!   expected output (stdout and stderr together, as a terminal shows them). In expected
//!   output, a line `...` matches any number of lines, and `<…>` (or `<...>`, or `<…what…>`)
//!   within a line matches any text. A command must exit 0.
//! - A block without `$ ` lines is one script, run with `set -e`; its output is not compared.
//! - `cargo run [-q] [--release] --` and a leading `poolpilot` run the debug binary. Each block
//!   runs in its own temporary folder that links `rules/`, `examples/`, `docs/` and `tests/`
//!   from the repository, with no `POOLPILOT_*` or `E2B_*` variable of the machine.
//! - A block that cannot run here (systemd, docker, root, network, a long-running server) is
//!   marked by the line `<!-- docs-test: skip (why) -->` right before its fence. Skipped blocks
//!   are counted and printed with their reasons; a block that is not marked and fails, fails
//!   the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one command may take before it counts as hung.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// One fenced block of a markdown file.
struct Block {
    /// `file:line` of the opening fence.
    at: String,
    info: String,
    lines: Vec<String>,
    /// The reason from a `<!-- docs-test: skip (reason) -->` marker before the fence.
    skip: Option<String>,
}

/// The fenced blocks of a markdown text, each with the skip marker before it, if any.
fn blocks(file: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut last_text_line = "";
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                last_text_line = trimmed;
            }
            continue;
        };
        let indent = line.len() - trimmed.len();
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push(l.get(indent..).unwrap_or(l.trim_start()).to_string());
        }
        let skip = last_text_line
            .strip_prefix("<!-- docs-test: skip")
            .and_then(|r| r.strip_suffix("-->"))
            .map(|r| {
                r.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string()
            });
        out.push(Block {
            at: format!("{file}:{}", n + 1),
            info: info.trim().to_string(),
            lines: body,
            skip,
        });
        last_text_line = "";
    }
    out
}

/// Whether a block holds commands to run.
fn is_command_block(b: &Block) -> bool {
    matches!(b.info.as_str(), "sh" | "bash" | "console" | "shell")
        || (b.info.is_empty() && b.lines.iter().any(|l| l.starts_with("$ ")))
}

/// A command of a `$ ` block and the output the docs show for it.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The `$ ` commands of a block, with their expected output.
fn steps(lines: &[String]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(first) = lines[i].strip_prefix("$ ") else {
            i += 1;
            continue;
        };
        let mut command = first.to_string();
        while command.ends_with('\\') && i + 1 < lines.len() {
            command.pop();
            i += 1;
            command.push(' ');
            command.push_str(lines[i].trim());
        }
        i += 1;
        let mut expected = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && !lines[i].starts_with("$ ") {
            expected.push(lines[i].trim_end().to_string());
            i += 1;
        }
        out.push(Step { command, expected });
    }
    out
}

/// The command as it runs here: `cargo run ... --` becomes the debug binary.
fn substitute(command: &str) -> String {
    let mut c = command.to_string();
    for form in [
        "cargo run -q --release --",
        "cargo run --release -q --",
        "cargo run --release --",
        "cargo run -q --",
        "cargo run --",
    ] {
        c = c.replace(form, "poolpilot");
    }
    c
}

/// Whether one expected line matches one actual line: `<…>` spans match any text.
fn line_matches(expected: &str, actual: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = expected;
    while let Some(start) = rest.find("<…").or_else(|| rest.find("<...")) {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        parts.push(&rest[..start]);
        rest = &rest[start + len + 1..];
    }
    parts.push(rest);
    let actual = actual.trim_end();
    if parts.len() == 1 {
        return parts[0].trim_end() == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1].trim_end());
    let Some(mut middle) = actual.strip_prefix(first) else {
        return false;
    };
    for p in &parts[1..parts.len() - 1] {
        match middle.find(p) {
            Some(at) => middle = &middle[at + p.len()..],
            None => return false,
        }
    }
    middle.ends_with(last)
}

/// Whether the actual lines match the expected ones; a `...` line matches any lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e.trim() == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((e, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(e, a) && lines_match(rest, more)),
    }
}

/// A temporary folder linking the repository's folders, with the binary on PATH.
struct Sandbox {
    dir: PathBuf,
    path: String,
}

impl Sandbox {
    fn new(n: usize) -> Sandbox {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("poolpilot-docs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".bin")).expect("temp dir");
        for d in ["rules", "examples", "docs", "tests"] {
            std::os::unix::fs::symlink(root.join(d), dir.join(d)).expect("link");
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_poolpilot"), dir.join(".bin/poolpilot"))
            .expect("link the binary");
        let path = format!(
            "{}:{}",
            dir.join(".bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Sandbox { dir, path }
    }

    /// Runs a shell script; Ok(output) when it exits 0 within the deadline.
    fn run(&self, script: &str) -> Result<String, String> {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("set -e -o pipefail\nexec 2>&1\n{script}"))
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("POOLPILOT_") || k.starts_with("E2B_") || k == "CREDENTIALS_DIRECTORY"
            {
                c.env_remove(k);
            }
        }
        let mut child = c.spawn().map_err(|e| format!("cannot start bash: {e}"))?;
        let started = Instant::now();
        // Polls the child: a bound on a hang, not a guess at how long a command takes.
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if started.elapsed() > COMMAND_DEADLINE {
                let _ = child.kill();
                return Err(format!("still running after {COMMAND_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("exited with {}:\n{text}", out.status))
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs one block; Err says what differed.
fn run_block(b: &Block, n: usize) -> Result<(), String> {
    let sandbox = Sandbox::new(n);
    let steps = steps(&b.lines);
    if steps.is_empty() {
        let script: Vec<String> = b.lines.iter().map(|l| substitute(l)).collect();
        return sandbox.run(&script.join("\n")).map(|_| ());
    }
    for s in steps {
        let command = substitute(&s.command);
        let output = sandbox
            .run(&command)
            .map_err(|e| format!("$ {}\n{e}", s.command))?;
        let actual: Vec<&str> = output.lines().collect();
        if !s.expected.is_empty() && !lines_match(&s.expected, &actual) {
            return Err(format!(
                "$ {}\n--- the docs show:\n{}\n--- the program printed:\n{}",
                s.command,
                s.expected.join("\n"),
                output.trim_end()
            ));
        }
    }
    Ok(())
}

/// README.md and docs/*.md, as paths relative to the repository.
fn markdown_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_command_in_the_docs_runs_and_prints_what_the_docs_show() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut ran, mut skipped, mut failures) = (0, Vec::new(), Vec::new());
    for file in markdown_files() {
        let text = std::fs::read_to_string(root.join(&file)).expect("read markdown");
        for b in blocks(&file, &text).iter().filter(|b| is_command_block(b)) {
            if let Some(why) = &b.skip {
                skipped.push(format!("{}: {why}", b.at));
                continue;
            }
            ran += 1;
            if let Err(e) = run_block(b, ran) {
                failures.push(format!("{}:\n{e}", b.at));
            }
        }
    }
    println!("{ran} blocks ran, {} skipped:", skipped.len());
    for s in &skipped {
        println!("  skipped {s}");
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} blocks disagree with the program:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn placeholders_match_what_varies_and_nothing_else() {
    assert!(line_matches(
        "next <…date…> (<…>)",
        "next Fri 2026-11-27 08:00 CET (2026-11-27T07:00:00Z)"
    ));
    assert!(line_matches("a <...> c", "a b c"));
    assert!(!line_matches("a <…> c", "a b d"));
    assert!(!line_matches("exact", "exact but more"));
    let e = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(lines_match(&e(&["a", "...", "z"]), &["a", "b", "c", "z"]));
    assert!(lines_match(&e(&["a", "...", "z"]), &["a", "z"]));
    assert!(!lines_match(&e(&["a", "z"]), &["a", "b", "z"]));
    let s = steps(&e(&["$ one \\", "    two", "out", "", "$ three"]));
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].command, "one  two");
    assert_eq!(s[0].expected, e(&["out"]));
}
