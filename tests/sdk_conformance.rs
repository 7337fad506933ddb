//! E2B's official SDKs (PyPI `e2b`, npm `e2b`) drive the emulator end to end.
//!
//! Each suite calls every method the SDK has for the sandbox API twice, with its defaults and
//! with explicit arguments, and checks the results (tests/sdk/*_conformance.*).
//!
//! The SDKs are installed by the README's test command (`scripts/test.sh`): Python into
//! `target/sdk-venv`, JS into `tests/sdk/node_modules`. A missing SDK fails these tests; they
//! never skip.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run_sdk(program: PathBuf, script: PathBuf, suite: &str) {
    assert!(
        program.exists() || program.components().count() == 1,
        "{} is missing: run scripts/test.sh, which installs E2B's SDKs",
        program.display()
    );
    let emu = common::emulator(common::options()).await;
    let out = tokio::process::Command::new(&program)
        .arg(&script)
        .current_dir(root().join("tests/sdk"))
        .env("E2B_API_URL", emu.url())
        .env("E2B_API_KEY", common::KEY)
        .env("CONFORMANCE_SUITE", suite)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_DOMAIN")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run scripts/test.sh", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    assert!(stdout.contains("all calls passed"), "{stdout}");
    // The SDK really went through the HTTP API for each call.
    let counts = emu.emulator.request_counts();
    for route in [
        "POST /v2/sandboxes",
        "GET /v2/sandboxes",
        "GET /sandboxes/{id}",
        "GET /sandboxes/{id}/metrics",
        "POST /sandboxes/{id}/timeout",
        "POST /sandboxes/{id}/pause",
        "POST /v2/sandboxes/{id}/connect",
        "DELETE /sandboxes/{id}",
    ] {
        assert!(
            counts.get(route).copied().unwrap_or(0) > 0,
            "{route} never called: {counts:?}"
        );
    }
    assert!(
        counts["GET /v2/sandboxes"] >= 8,
        "list paged and filtered: {counts:?}"
    );
    // connect with and without a timeout, on running and paused sandboxes.
    assert!(
        counts["POST /v2/sandboxes/{id}/connect"] >= 8,
        "connect called with defaults and explicit timeouts: {counts:?}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_drives_the_emulator() {
    let python = root().join("target/sdk-venv/bin/python");
    run_sdk(python, root().join("tests/sdk/python_conformance.py"), "py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_drives_the_emulator() {
    assert!(
        root()
            .join("tests/sdk/node_modules/e2b/package.json")
            .exists(),
        "npm package e2b is missing from tests/sdk/node_modules: run scripts/test.sh"
    );
    run_sdk(
        PathBuf::from("node"),
        root().join("tests/sdk/js_conformance.mjs"),
        "js",
    )
    .await;
}
