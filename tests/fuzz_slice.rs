//! The bounded CI slice of the fuzz targets (docs/fuzzing.md): every target's body from
//! `poolpilot::fuzz` runs over its seed corpus (shipped files and `fuzz/seeds/<target>/`),
//! every crash input ever found (`fuzz/regressions/<target>/`), and a fixed number of
//! deterministic mutations of those, so that a crash a campaign found once cannot come back
//! unnoticed. A failure names the target and the input file (or the mutation's seed and
//! round), and replays with the same command.
//!
//! The mutator is seeded and knows the tokens that broke poolpilot before (huge durations,
//! NaN, integer edges), so a few hundred rounds per target reach the same depths as a short
//! campaign would. It runs in a few seconds in a debug build.

use std::path::{Path, PathBuf};

use poolpilot::fuzz::{self, TARGETS, crate_path};

/// Mutations per target and per run; raise with `FUZZ_SLICE_ROUNDS` for a longer local run.
const DEFAULT_ROUNDS: usize = 300;

/// Values that stress parsers and arithmetic: spliced in where the mutator picks.
const TOKENS: &[&str] = &[
    "300000years",
    "18446744073709551616s",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "-1",
    "0",
    "0s",
    "1e308",
    "1e-300",
    "NaN",
    ".nan",
    ".inf",
    "-.inf",
    "999999999999999999999999",
    "2999-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "+262143-12-31T23:59:59Z",
    "x1000000000",
    "&a [*a, *a, *a]",
    "{{ $labels.pool }}",
    "((((((((((((((((((((((((((1))))))))))))))))))))))))))",
    "\u{0}",
    "\u{feff}",
    "\"",
    "\n  - ",
    ": ",
    "[",
    "{",
];

/// The shipped files each target is seeded with, relative to the crate root.
fn shipped_seeds(target: &str) -> Vec<PathBuf> {
    let dirs: &[&str] = match target {
        "rules" => &["rules", "tests/fixtures"],
        "rule_test" => &["rules/tests", "tests/fixtures"],
        "scenario" => &["examples/scenarios"],
        "config" => &["examples"],
        _ => &[],
    };
    let mut out = Vec::new();
    for d in dirs {
        out.extend(files_in(&crate_path(d)).into_iter().filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        }));
    }
    out
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Seeds and regression inputs of `target`, with their paths.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut paths = shipped_seeds(target);
    paths.extend(files_in(&crate_path(&format!("fuzz/seeds/{target}"))));
    paths.extend(files_in(&crate_path(&format!("fuzz/regressions/{target}"))));
    paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// One deterministic mutation of `input` (with `other` for splices).
fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(0..=out.len());
        match rng.u8(0..7) {
            0 => {
                let t = TOKENS[rng.usize(0..TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            // Weighted twice: values are where poolpilot's checks live.
            1 | 6 => {
                // Replace a YAML or JSON value (what follows a `: ` from `at` on) by a token.
                let Some(colon) = out[at..].windows(2).position(|w| w == b": ") else {
                    continue;
                };
                let start = at + colon + 2;
                let end = (start..out.len())
                    .find(|&i| b",}]\n#".contains(&out[i]))
                    .unwrap_or(out.len());
                let t = TOKENS[rng.usize(0..TOKENS.len())].as_bytes();
                out.splice(start..end, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = rng.usize(0..out.len());
                out[i] ^= 1 << rng.u8(0..8);
            }
            3 if at < out.len() => {
                let end = rng.usize(at..=out.len().min(at + 16));
                out.drain(at..end);
            }
            4 if !other.is_empty() => {
                let from = rng.usize(0..other.len());
                let to = rng.usize(from..=other.len().min(from + 64));
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => out.insert(at, rng.u8(..)),
        }
    }
    out
}

/// Runs one input, turning a panic into a message that says how to replay it.
fn run_one(target: &str, body: fn(&[u8]), input: &[u8], what: &str) -> Result<(), String> {
    std::panic::catch_unwind(|| body(input)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{target}: {what}: panicked: {msg}")
    })
}

fn rounds() -> usize {
    std::env::var("FUZZ_SLICE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

/// Every target over its corpus, then over seeded mutations of it.
fn run_target(target: &str, body: fn(&[u8])) -> Vec<String> {
    let inputs = corpus(target);
    let mut failures = Vec::new();
    for (path, bytes) in &inputs {
        failures.extend(run_one(target, body, bytes, &path.display().to_string()).err());
    }
    let seed = 0x5EED_F022_u64 ^ target.len() as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let empty = (PathBuf::new(), Vec::new());
    for round in 0..rounds() {
        let (_, a) = inputs
            .get(rng.usize(0..inputs.len().max(1)))
            .unwrap_or(&empty);
        let (_, b) = inputs
            .get(rng.usize(0..inputs.len().max(1)))
            .unwrap_or(&empty);
        let input = mutate(&mut rng, a, b);
        let what = format!("mutation seed {seed:#x} round {round}");
        failures.extend(run_one(target, body, &input, &what).err());
    }
    failures
}

macro_rules! slice {
    ($name:ident) => {
        #[test]
        fn $name() {
            let target = stringify!($name);
            let failures = run_target(target, fuzz::$name);
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        }
    };
}

slice!(expression);
slice!(rules);
slice!(rule_test);
slice!(scenario);
slice!(webhook);
slice!(state);
slice!(config);

/// Crash inputs whose fix lives on another branch (`fuzz/pending/<target>/`, each folder's
/// README says where): `cargo test --test fuzz_slice -- --ignored` after merging it, then
/// move the files to `fuzz/regressions/`.
#[test]
#[ignore = "replays crashes fixed on branches not merged yet"]
fn pending_crashes_are_fixed() {
    let mut failures = Vec::new();
    for (target, body) in TARGETS {
        for path in files_in(&crate_path(&format!("fuzz/pending/{target}"))) {
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            failures.extend(run_one(target, body, &bytes, &path.display().to_string()).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_is_in_the_slice_and_has_seeds() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "expression",
            "rules",
            "rule_test",
            "scenario",
            "webhook",
            "state",
            "config"
        ]
    );
    for (name, _) in TARGETS {
        assert!(!corpus(name).is_empty(), "{name} has no seeds");
        let path = crate_path(&format!("fuzz/fuzz_targets/{name}.rs"));
        assert!(path.exists(), "no cargo-fuzz target {}", path.display());
    }
}
