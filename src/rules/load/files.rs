//! Which files are rule files: a path's YAML files, walked the way a Kubernetes ConfigMap mount
//! or an editor's folder needs, and which of them are rule test files.
//!
//! The walk must end on any tree (link loops, deep nesting) and must list each real file once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// True for rule test files: `*.test.yaml` / `*.test.yml`.
pub(crate) fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// Deepest directory nesting walked below a rule directory.
const MAX_DIR_DEPTH: usize = 32;

/// The YAML files a path names: the file itself, or every YAML file below a directory, sorted.
///
/// Inside a directory, entries whose name starts with `.` are skipped (editors' swap files,
/// Kubernetes' `..data` and `..2026_...` ConfigMap folders), symbolic links are followed but a
/// directory already visited (a link loop) is not walked again, and a file reached by two paths
/// (`a.yaml -> ..data/a.yaml`) is listed once, under the first of its names.
pub(crate) fn rule_files_in(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found: Vec<PathBuf> = Vec::new();
    let mut visited_dirs: HashSet<PathBuf> = HashSet::new();
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > MAX_DIR_DEPTH || !visited_dirs.insert(std::fs::canonicalize(&dir)?) {
            continue;
        }
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
            {
                continue;
            }
            if p.is_dir() {
                stack.push((p, depth + 1));
            } else if is_yaml(&p) {
                found.push(p);
            }
        }
    }
    found.sort();
    let mut seen_files: HashSet<PathBuf> = HashSet::new();
    // A dangling link cannot be canonicalized: keep it, so that reading it reports the problem.
    found.retain(|f| seen_files.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(found)
}
