#!/usr/bin/env bash
# Runs one fuzz target for a campaign: fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]
# From the crate root. Seeds with the shipped files, keeps new inputs in fuzz/corpus/TARGET
# (git-ignored) and crashes in fuzz/artifacts/TARGET. See docs/fuzzing.md.
set -euo pipefail
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
case $target in
  expression) seeds=(fuzz/seeds/expression);            dict=expression ;;
  rules)      seeds=(rules tests/fixtures);             dict=rules ;;
  rule_test)  seeds=(rules/tests tests/fixtures);       dict=rules ;;
  scenario)   seeds=(examples/scenarios);               dict=scenario ;;
  webhook)    seeds=(fuzz/seeds/webhook);               dict=json ;;
  state)      seeds=(fuzz/seeds/state);                 dict=json ;;
  config)     seeds=(examples);                         dict=config ;;
  *) echo "unknown target $target; see fuzz/fuzz_targets/" >&2; exit 2 ;;
esac
[ -d "fuzz/regressions/$target" ] && seeds+=("fuzz/regressions/$target")
mkdir -p "fuzz/corpus/$target"
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets stable accept them.
# --sanitizer none: poolpilot has no unsafe code, and without ASan a run is several times
# faster; panics, aborts, timeouts and out-of-memory are what we look for.
exec env RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz run --sanitizer none -O "$target" \
  "fuzz/corpus/$target" "${seeds[@]}" -- \
  -dict="fuzz/dict/$dict.dict" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=65536 -print_final_stats=1 "$@"
