#!/usr/bin/env bash
# Agent memory with N tracked sandboxes: an emulator with N running sandboxes of one pool, the
# agent polling it every 5 s (N/100 batch-metric requests and N/100 list pages per poll), and the
# agent's resident memory read from /proc after a few polls. Loopback only; stops by itself.
#   scripts/measure-agent-rss.sh [N=10000] [POLLS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}; polls=${2:-6}
cargo build --release --quiet
work=$(mktemp -d); trap 'kill $emu $agent 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/scenario.yaml" <<YAML
initial:
  - { template: base, count: $n, metadata: { poolpilot_pool: workers } }
load:
  - { template: base, points: [[0s, $((n / 2))]] }
YAML
mkdir -p "$work/rules"
cat > "$work/rules/pool.yaml" <<YAML
pools:
  - name: workers
    min: 1
    max: $((n * 2))
    scale:
      steps:
        - { when: busy_ratio > 0.9, add: 1 }
        - { when: busy_ratio < 0.01, remove: 1 }
alerts:
  - { name: hot, scope: sandbox, pool: workers, when: cpu_used_pct > 99, for: 1m }
YAML
cat > "$work/poolpilot.yaml" <<YAML
api: { url: "http://127.0.0.1:3301" }
rules: [rules/]
state_dir: state
listen: 127.0.0.1:9478
poll: { metrics: 5s, events: 10s }
YAML
./target/release/poolpilot emulator --listen 127.0.0.1:3301 --scenario "$work/scenario.yaml" --max-concurrent $((n * 3)) > "$work/emu.log" 2>&1 &
emu=$!
sleep 2
E2B_API_KEY=e2b_measure POOLPILOT_LOG=warn ./target/release/poolpilot run --config "$work/poolpilot.yaml" > "$work/agent.log" 2>&1 &
agent=$!
for _ in $(seq 1 $((polls * 5))); do sleep 1; done
ticks=$(curl -s http://127.0.0.1:9478/metrics | awk '/^poolpilot_ticks_total\{result="ok"\}/ {print $2}')
actual=$(curl -s http://127.0.0.1:9478/metrics | awk '/^poolpilot_pool_actual_sandboxes/ {print $2}')
echo "sandboxes tracked: $actual, polls done: $ticks, mean poll $(curl -s http://127.0.0.1:9478/metrics | awk '/^poolpilot_loop_turn_duration_seconds_sum/ {s=$2} /^poolpilot_loop_turn_duration_seconds_count/ {n=$2} END {if (n) print s / n}') s"
grep -E "VmRSS|VmHWM" /proc/$agent/status
