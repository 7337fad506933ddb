#!/usr/bin/env bash
# Webhook ingestion throughput and latency on loopback: wrk (Debian package) against the
# receiver (examples/webhook_receiver.rs), with N distinct, correctly signed deliveries
# generated beforehand (wrk cannot compute SHA-256). Bounded: one run of DURATION.
#   [N=20000] scripts/bench-webhooks.sh [DURATION=10s] [CONNECTIONS=64] [THREADS=1]
# N distinct deliveries are cycled; past N, requests are (verified, parsed) duplicates. For a
# sustained all-new load, make N larger than DURATION x the rate (e.g. N=900000 for 15s).
# The receiver runs on WORKERS tokio threads (1 by default): on a 2-core machine that leaves
# wrk a core of its own. With WORKERS=2, three busy threads share two cores and the p99
# measures the kernel's scheduler more than the receiver. DEDUP sets the dedup window
# (100000, the agent's).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}; conns=${2:-64}; threads=${3:-1}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release --quiet --example webhook_receiver
work=$(mktemp -d); trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/requests.txt" <<'PY'
import base64, hashlib, json, os, sys
secret = "bench-secret"
n = int(os.environ.get("N", "20000"))
with open(sys.argv[1], "w") as f:
    for i in range(n):
        body = json.dumps({"version": "v2", "id": f"evt-{i:07d}", "type": "sandbox.lifecycle.killed",
            "eventData": {"kill_reason": "unknown", "sandbox_metadata": {"poolpilot_pool": "workers"},
            "execution": {"started_at": "2026-01-01T00:00:00Z", "vcpu_count": 2, "memory_mb": 512, "execution_time": 61000}},
            "sandboxId": f"sbx{i:017d}", "sandboxTemplateId": "base", "sandboxExecutionId": "x",
            "sandboxTeamId": "t", "timestamp": "2026-01-01T00:01:01Z"}, separators=(",", ":"))
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
LUA
DEDUP=${DEDUP:-100000} POOLPILOT_WEBHOOK_SECRET=bench-secret TOKIO_WORKER_THREADS=${WORKERS:-1} ./target/release/examples/webhook_receiver 127.0.0.1:8787 > "$work/server.log" &
server=$!
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:8787/ && break; sleep 0.1; done
wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$work/requests.lua" http://127.0.0.1:8787/webhooks/e2b
kill -INT $server; wait $server || true
cat "$work/server.log"
