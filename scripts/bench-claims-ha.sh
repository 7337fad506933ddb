#!/usr/bin/env bash
# Claim throughput and latency with claims spread over TWO replicas sharing a PostgreSQL store
# (issue 14): a throwaway cluster on loopback (initdb, pg_ctl; as the postgres user when run
# as root), `poolpilot emulator`, two `poolpilot run` replicas, and examples/claims_load.rs
# sending each request to the replicas in turn (the standby forwards its half to the leader).
# Bounded: one run; everything it starts is stopped on exit.
#   [BIN=target/debug/poolpilot LOAD=target/debug/examples/claims_load] [POOL_SIZE=50] \
#     [HOLD_MS=0] scripts/bench-claims-ha.sh [RATE=200] [SECONDS=10]
# Without BIN it builds both (debug) first.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-200}; seconds=${2:-10}
hold_ms=${HOLD_MS:-0}; pool_size=${POOL_SIZE:-50}
bin=${BIN:-target/debug/poolpilot}
load=${LOAD:-target/debug/examples/claims_load}
[ -n "${BIN:-}" ] || cargo build --quiet --bin poolpilot --example claims_load
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "no initdb under /usr/lib/postgresql/*/bin: install Debian's postgresql" >&2; exit 1; }
work=$(mktemp -d)
as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --) && chown postgres "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); emu_port=$(free_port)

"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U poolpilot --auth=trust --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w start \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
store="postgres://poolpilot@127.0.0.1:$pg_port/postgres"

mkdir -p "$work/rules"
printf 'pools:\n  - { name: bench, min: %s, max: %s, claims: { on_release: return } }\n' \
  "$pool_size" "$pool_size" > "$work/rules/pool.yaml"
echo "pool: $pool_size members, on_release: return; load: $rate claims/s for ${seconds}s over 2 replicas, held ${hold_ms} ms"
"$bin" emulator --listen 127.0.0.1:$emu_port --create-rate 0 \
  --max-concurrent $(( pool_size * 2 + 100 )) --log-level warn > "$work/emu.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:$emu_port/health && break; sleep 0.1; done
printf 'bench-token' > "$work/token"
ports=()
for r in a b; do
  port=$(free_port); ports+=("$port"); mkdir -p "$work/$r"
  cat > "$work/$r/poolpilot.yaml" <<YAML
api: { url: "http://127.0.0.1:$emu_port" }
rules: [../rules/]
state_dir: state
listen: 127.0.0.1:$port
token_file: ../token
store: "$store"
lease: 3s
YAML
  E2B_API_KEY=e2b_bench POOLPILOT_LOG=warn "$bin" run --config "$work/$r/poolpilot.yaml" > "$work/$r.log" 2>&1 &
  pids+=($!)
done

# Ready: the leader has every member idle, as its own gauge says.
idle=""
for _ in $(seq 1 1200); do
  for p in "${ports[@]}"; do
    v=$(curl -s http://127.0.0.1:$p/metrics | sed -n 's/^poolpilot_pool_idle_sandboxes{pool="bench"} //p' || true)
    [ "$v" = "$pool_size" ] && idle=$v
  done
  [ "$idle" = "$pool_size" ] && break
  sleep 0.25
done
[ "$idle" = "$pool_size" ] || { echo "the pool never had $pool_size idle members" >&2; tail -5 "$work"/a.log "$work"/b.log >&2; exit 1; }

status=0
POOLPILOT_API_TOKEN=bench-token "$load" "http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]}" \
  bench "$rate" "$seconds" "$hold_ms" || status=$?
for r in a b; do
  if grep -qE '"level":"ERROR"|panicked' "$work/$r.log"; then
    echo "replica $r errors:"; grep -E '"level":"ERROR"|panicked' "$work/$r.log" | tail -5
  fi
done
exit $status
