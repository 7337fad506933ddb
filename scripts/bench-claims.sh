#!/usr/bin/env bash
# Claim latency and throughput of the REAL agent on loopback: `poolpilot run` against a local
# `poolpilot emulator`, driven by examples/claims_load.rs, an open-loop generator that sends
# claim + release at RATE claims/s for SECONDS and reports client-side claim latency (p50,
# p90, p99, max), claims/s sustained, and whether any sandbox was held by two claims at once
# (it exits 1 if so). Bounded: one run; everything it starts is stopped on exit.
#   [BIN=target/release/poolpilot LOAD=target/release/examples/claims_load] [POOL_SIZE=50] \
#     [HOLD_MS=0] scripts/bench-claims.sh [RATE=500] [SECONDS=20]
# Without BIN it builds both in release mode first and says how long that took.
# Each claim asks ?wait=0s, so what is timed is the hand-out of a ready member (E2B excluded:
# the emulator answers the claim's background set_timeout). The claims API runs behind a
# token, as in production. The pool releases with `claims: { on_release: return }`, so
# members are handed out again and POOL_SIZE members carry any rate.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-500}; seconds=${2:-20}
hold_ms=${HOLD_MS:-0}; pool_size=${POOL_SIZE:-50}
bin=${BIN:-target/release/poolpilot}
load=${LOAD:-target/release/examples/claims_load}
if [ -z "${BIN:-}" ]; then
  t0=$(date +%s)
  cargo build --release --quiet --bin poolpilot --example claims_load
  echo "release build: $(( $(date +%s) - t0 ))s"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
emu_port=$(free_port); port=$(free_port)

# The pool: released members come back (return), so POOL_SIZE members carry any rate.
mkdir -p "$work/rules"
on_release=return
printf 'pools:\n  - { name: bench, min: %s, max: %s, claims: { on_release: return } }\n' \
  "$pool_size" "$pool_size" > "$work/rules/pool.yaml"
echo "pool: $pool_size members, on_release: $on_release; load: $rate claims/s for ${seconds}s, held ${hold_ms} ms"

"$bin" emulator --listen 127.0.0.1:$emu_port --create-rate 0 \
  --max-concurrent $(( pool_size * 2 + 100 )) --log-level warn > "$work/emu.log" 2>&1 &
pids+=($!)
printf 'bench-token' > "$work/token"
cat > "$work/poolpilot.yaml" <<YAML
api: { url: "http://127.0.0.1:$emu_port" }
rules: [rules/]
state_dir: state
listen: 127.0.0.1:$port
token_file: token
YAML
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$emu_port/health && break; sleep 0.1; done
E2B_API_KEY=e2b_bench POOLPILOT_LOG=warn "$bin" run --config "$work/poolpilot.yaml" > "$work/agent.log" 2>&1 &
pids+=($!)

# Ready: every member idle, as the agent's own gauge says (creates take a while for big pools).
idle=""
for _ in $(seq 1 1200); do
  idle=$(curl -s http://127.0.0.1:$port/metrics | sed -n 's/^poolpilot_pool_idle_sandboxes{pool="bench"} //p' || true)
  [ "$idle" = "$pool_size" ] && break
  sleep 0.25
done
[ "$idle" = "$pool_size" ] || { echo "the pool never had $pool_size idle members (last: ${idle:-none})" >&2; tail -20 "$work/agent.log" >&2; exit 1; }

status=0
POOLPILOT_API_TOKEN=bench-token "$load" "http://127.0.0.1:$port" bench "$rate" "$seconds" "$hold_ms" || status=$?
echo "agent's view:"
curl -s http://127.0.0.1:$port/metrics | grep -E '^poolpilot_claims_total\{pool="bench",result="(ok|timed_out)"\}|^poolpilot_claim_duration_seconds_(bucket\{pool="bench",le="(0.001|0.005)"\}|count)' || true
if grep -qE '"level":"ERROR"|panicked' "$work/agent.log"; then
  echo "agent errors:"; grep -E '"level":"ERROR"|panicked' "$work/agent.log" | tail -5
fi
exit $status
