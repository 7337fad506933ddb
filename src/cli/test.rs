//! `poolpilot test`: runs rule unit tests (`*.test.yaml`) and prints one line per case. It
//! only reads the files it is given; a rule test never reaches E2B or the emulator.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::rules;
use crate::ruletest as testing;

/// Flags of `poolpilot test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Rule test files (*.test.yaml) or directories holding them.
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
}

/// `poolpilot test`: Ok(true) when every case passes.
pub(crate) fn run(args: &TestArgs) -> anyhow::Result<bool> {
    let files = test_files(&args.files)?;
    let (mut passed, mut failed) = (0usize, 0usize);
    for f in &files {
        let (p, fl) = run_file(f);
        passed += p;
        failed += fl;
    }
    outln!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// The files to run: each file named, and the test files in each directory named.
fn test_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let found = rules::rule_files_in(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        files.extend(
            found
                .into_iter()
                .filter(|f| !p.is_dir() || rules::is_test_file(f)),
        );
    }
    if files.is_empty() {
        anyhow::bail!("no rule test files (*.test.yaml) found");
    }
    Ok(files)
}

/// Runs one test file's cases, printing each: (passed, failed). A file that does not load
/// counts as one failure.
fn run_file(f: &Path) -> (usize, usize) {
    let tf = match testing::load_test_file(f) {
        Ok(tf) => tf,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return (0, 1);
        }
    };
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &tf.cases {
        match testing::run_case(&tf.rules, case) {
            Ok(()) => {
                passed += 1;
                outln!("ok    {}: {}", f.display(), case.name);
            }
            Err(diff) => {
                failed += 1;
                outln!("FAIL  {}: {}\n{diff}", f.display(), case.name);
            }
        }
    }
    (passed, failed)
}
