#!/usr/bin/env bash
# Webhook ingestion throughput and latency of the REAL agent on loopback: `poolpilot run` with
# its receiver on, against a local emulator, driven by wrk (Debian package) with N distinct,
# correctly signed deliveries generated beforehand (wrk cannot compute SHA-256). Bounded: one
# run of DURATION; everything it starts is stopped on exit.
#   [N=600000] [BIN=target/release/poolpilot] scripts/bench-webhooks.sh [DURATION=10s] [CONNECTIONS=16] [THREADS=1]
# Every delivery is a new event (all unique), timestamped at generation, for a pool the rules
# know but with no trigger, so what is measured is the receiver and the agent taking events in
# (verify, parse, deduplicate, queue, react, persist), not creates in the emulator. Keep N
# larger than DURATION x the rate, or the tail of the run measures duplicates.
# The agent runs with its default worker count (one per core). The dedup window is sized for the
# run (limits.seen_ids, limits.seen_bytes; SEEN=N by default): a window holds each id for the
# events poll's look-back, so the default 100,000 ids take a sustained ~1,400 new events/s,
# and past that the agent answers 503 (E2B retries) by design.
# TARGET=receiver benches the bare example receiver (examples/webhook_receiver.rs) instead, on
# WORKERS tokio threads (1 by default), with a window of SEEN ids.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}; conns=${2:-16}; threads=${3:-1}
n=${N:-600000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
python3 - "$work/requests.txt" "$n" <<'PY'
import base64, datetime, hashlib, json, sys
secret = "bench-secret"
n = int(sys.argv[2])
ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
with open(sys.argv[1], "w") as f:
    for i in range(n):
        body = json.dumps({"version": "v2", "id": f"7d8c2f1e-0000-4000-8000-{i:012d}", "type": "sandbox.lifecycle.killed",
            "eventData": {"kill_reason": "unknown", "sandbox_metadata": {"poolpilot_pool": "workers"},
            "execution": {"started_at": ts, "vcpu_count": 2, "memory_mb": 512, "execution_time": 61000}},
            "sandboxId": f"sbx{i:017d}", "sandboxTemplateId": "base", "sandboxExecutionId": "x",
            "sandboxTeamId": "t", "timestamp": ts}, separators=(",", ":"))
        sig = base64.b64encode(hashlib.sha256((secret + body).encode()).digest()).decode().rstrip("=")
        f.write(f"{sig}\td-{i}\t{body}\n")
PY
cat > "$work/requests.lua" <<LUA
local reqs = {}
for line in io.lines("$work/requests.txt") do
  local sig, delivery, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  reqs[#reqs + 1] = wrk.format("POST", "/webhooks/e2b", {["content-type"] = "application/json",
    ["e2b-signature"] = sig, ["e2b-delivery-id"] = delivery, ["e2b-signature-version"] = "v1"}, body)
end
local i = 0
request = function()
  i = i + 1
  return reqs[(i - 1) % #reqs + 1]
end
done = function(summary, latency, requests)
  io.write(string.format("non-2xx or errors: %d (status) %d (connect) %d (read) %d (timeout)\n",
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
LUA
port=8787
if [ "${TARGET:-agent}" = receiver ]; then
  cargo build --release --quiet --example webhook_receiver
  DEDUP=${SEEN:-$n} POOLPILOT_WEBHOOK_SECRET=bench-secret TOKIO_WORKER_THREADS=${WORKERS:-1} \
    ./target/release/examples/webhook_receiver 127.0.0.1:$port > "$work/server.log" 2>&1 &
  pids+=($!)
  health=/
else
  bin=${BIN:-target/release/poolpilot}
  [ -n "${BIN:-}" ] || cargo build --release --quiet
  "$bin" emulator --listen 127.0.0.1:3391 --log-level warn > "$work/emu.log" 2>&1 &
  pids+=($!)
  mkdir -p "$work/rules"
  printf 'pools:\n  - { name: workers, min: 0, max: 10 }\n' > "$work/rules/pool.yaml"
  printf 'bench-secret' > "$work/secret"
  seen=${SEEN:-$n}
  limits=""
  # Older builds have no limits section; give it only to builds that know it.
  if grep -q seen_ids <("$bin" config print --rules "$work/rules" --state-dir "$work/state" 2>/dev/null); then
    limits="limits: { seen_ids: $seen, seen_bytes: $((seen * 200)) }"
  fi
  cat > "$work/poolpilot.yaml" <<YAML
api: { url: "http://127.0.0.1:3391" }
rules: [rules/]
state_dir: state
listen: 127.0.0.1:$port
webhook: { secret_file: secret }
$limits
YAML
  for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:3391/health && break; sleep 0.1; done
  E2B_API_KEY=e2b_bench POOLPILOT_LOG=warn "$bin" run --config "$work/poolpilot.yaml" > "$work/server.log" 2>&1 &
  pids+=($!)
  health=/readyz
fi
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port$health)" = 200 ] && break; sleep 0.1; done
wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$work/requests.lua" http://127.0.0.1:$port/webhooks/e2b
if [ "${TARGET:-agent}" != receiver ]; then
  curl -s http://127.0.0.1:$port/metrics | grep '^poolpilot_webhook_deliveries_total' || true
fi
kill -INT "${pids[-1]}"; wait "${pids[-1]}" || true
cat "$work/server.log" | tail -5
