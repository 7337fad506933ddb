#!/usr/bin/env bash
# Serving claims from running idle members (hot), from paused ones (warm) or from fresh creates
# (cold): `simulate` of examples/scenarios/warm/{hot,warm,cold}.yaml on bursts.yaml (five jobs
# in ten seconds every ten minutes, holding about a minute), printed as a markdown table of
# what each pays (sandbox-seconds, and over the sandbox-seconds the jobs held) against claim
# latency. docs/pools.md shows its output. Virtual time: deterministic, seconds on a debug build.
#   scripts/measure-warm.sh
#   BIN=target/release/poolpilot scripts/measure-warm.sh    # another binary (default: debug, built)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --quiet
  BIN=target/debug/poolpilot
fi
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; }
dir=examples/scenarios/warm
echo "| serving from | sandbox-seconds | vs held | at once | resumed | after a wait | timed out | claim p50 | claim p99 |"
echo "|---|---|---|---|---|---|---|---|---|"
for variant in hot warm cold; do
  "$BIN" simulate --rules "$dir/$variant.yaml" --scenario "$dir/bursts.yaml" --json |
    jq -r --arg v "$variant" '.jobs.jobs as $j |
      "| \($v) | \(.sandbox_seconds | round) | \($j.cost_vs_held * 100 | round / 100)x | \($j.immediate) | \($j.resumed) | \($j.waited) | \($j.timed_out) | \($j.latency_p50_s * 100 | round / 100)s | \($j.latency_p99_s * 100 | round / 100)s |"'
done
