#!/usr/bin/env bash
# Policies against the load shapes: `simulate` for every rules file given (default: the
# recommended policy and the guide's Pattern 4 loop) on every shape in examples/scenarios/shapes/,
# printed as a markdown table (cost against the perfect-foresight floor, unmet demand, creates,
# kills), with each run's chart written to docs/charts/<policy>-<shape>.svg. docs/policies.md
# shows its output. Virtual time: deterministic, and a few seconds per run on a debug build.
#   scripts/measure-policies.sh [RULES...]
#   BIN=target/release/poolpilot scripts/measure-policies.sh    # another binary (default: debug, built)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --quiet
  BIN=target/debug/poolpilot
fi
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; }
[ $# -gt 0 ] || set -- examples/rules/recommended.yaml examples/rules/pattern4.yaml
mkdir -p docs/charts

# Flags a shape needs beyond the defaults: the ramp runs at E2B Pro's raised concurrency cap.
shape_flags() {
  case "$1" in
    ramp) echo "--max-concurrent 1100" ;;
    *) echo "" ;;
  esac
}

echo "| shape | policy | cost vs floor | unmet % | creates | kills |"
echo "|---|---|---|---|---|---|"
for scenario in examples/scenarios/shapes/*.yaml; do
  shape=$(basename "$scenario" .yaml)
  for rules in "$@"; do
    policy=$(basename "$rules" .yaml)
    # shellcheck disable=SC2046 # the flags are words on purpose
    "$BIN" simulate --rules "$rules" --scenario "$scenario" $(shape_flags "$shape") \
        --json --out "docs/charts/$policy-$shape.svg" |
      jq -r --arg shape "$shape" --arg policy "$policy" \
        '"| \($shape) | \($policy) | \(if .cost_vs_floor == null then "n/a" else "\(.cost_vs_floor * 100 | round / 100)x" end) | \(if .unmet_pct == null then "n/a" else "\(.unmet_pct * 100 | round / 100)%" end) | \(.creates) | \(.kills) |"'
  done
done
