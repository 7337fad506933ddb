//! `poolpilot check`: validates rule files and rule test files, printing every error as
//! `file:line:col`, then a summary and when each schedule fires next. It reads files only:
//! it never runs a rule test, never reaches E2B, and reports every problem, not the first.
//!
//! The check is four steps: [`find`] the files, [`load`] them (collecting every diagnostic),
//! then either [`print_errors`] or [`print_summary`] and [`print_schedules`].

use std::path::PathBuf;

use clap::Args;

use crate::rules::{self, Diagnostic, RuleSet};
use crate::ruletest as testing;

/// Flags of `poolpilot check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Rule files, rule test files, or directories (every *.yaml / *.yml below them).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
}

/// The files a check found below its paths, and what could not be read.
#[derive(Default)]
struct Found {
    rule_files: Vec<PathBuf>,
    test_files: Vec<PathBuf>,
    diags: Vec<Diagnostic>,
}

/// `poolpilot check`: true when every file is valid.
pub(crate) fn run(args: &CheckArgs) -> bool {
    let mut found = find(&args.paths);
    let set = load(&mut found);
    if found.rule_files.is_empty() && found.test_files.is_empty() && found.diags.is_empty() {
        eprintln!("no rule files found (*.yaml or *.yml)");
        eprintln!("1 error found");
        return false;
    }
    if !found.diags.is_empty() {
        print_errors(found.diags);
        return false;
    }
    let set = set.unwrap_or_default();
    print_summary(&found, &set);
    print_schedules(&set, chrono::Utc::now());
    true
}

/// Every rule file and rule test file below `paths`; a path that cannot be read is a
/// diagnostic.
fn find(paths: &[PathBuf]) -> Found {
    let mut found = Found::default();
    for path in paths {
        match rules::rule_files_in(path) {
            Ok(files) => {
                for f in files {
                    if rules::is_test_file(&f) {
                        found.test_files.push(f);
                    } else {
                        found.rule_files.push(f);
                    }
                }
            }
            Err(e) => found.diags.push(Diagnostic {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    found
}

/// Loads the rule files as one set and each test file, adding every diagnostic to `found`.
fn load(found: &mut Found) -> Option<RuleSet> {
    let set = if found.rule_files.is_empty() {
        None
    } else {
        match rules::load_paths(&found.rule_files) {
            Ok(set) => Some(set),
            Err(d) => {
                found.diags.extend(d);
                None
            }
        }
    };
    for t in &found.test_files {
        if let Err(d) = testing::load_test_file(t) {
            found.diags.extend(d);
        }
    }
    set
}

/// Prints each diagnostic once, by file, then line and column as numbers (line 7 before
/// line 12), then the count.
fn print_errors(mut diags: Vec<Diagnostic>) {
    diags.sort();
    diags.dedup();
    for d in &diags {
        eprintln!("{d}");
    }
    eprintln!(
        "{} error{} found",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
}

/// Prints the set's warnings, then one line counting files and rules.
fn print_summary(found: &Found, set: &RuleSet) {
    for w in &set.warnings {
        eprintln!("{w}");
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    outln!(
        "ok: {} rule file{}, {} test file{}: {} pools, {} alerts, {} triggers, {} notifiers",
        found.rule_files.len(),
        plural(found.rule_files.len()),
        found.test_files.len(),
        plural(found.test_files.len()),
        set.pools.len(),
        set.alerts.len(),
        set.triggers.len(),
        set.notifiers.len()
    );
}

/// Prints when each pool schedule fires next after `now`, in its own time zone and in UTC.
fn print_schedules(set: &RuleSet, now: chrono::DateTime<chrono::Utc>) {
    for pool in &set.pools {
        for s in &pool.schedules {
            match s.cron.next(now) {
                Some(next) => outln!(
                    "  schedule {}/{} ({:?} {}): next {} ({})",
                    pool.name,
                    s.name,
                    s.cron.text,
                    s.cron.tz,
                    next.with_timezone(&s.cron.tz)
                        .format("%a %Y-%m-%d %H:%M %Z"),
                    next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => outln!("  schedule {}/{}: never fires again", pool.name, s.name),
            }
        }
    }
}
