#!/usr/bin/env bash
# The leader-follower acceptance matrix (issue 4's "done when"): a cluster of
# NODES real `mimeo` processes under the harness for TIME_LIMIT seconds per
# run, every configuration once per seed, and the verdict each must reach:
#
#   name            acks    reads     workload  faults                       expected
#   quorum-leader   quorum  leader    register  partition,kill,pause         valid (linearizable)
#   all-leader      all     leader    register  partition,kill,pause         valid (linearizable)
#   quorum-set      quorum  leader    set       partition,kill,pause,isolate valid (no acknowledged add lost)
#   async-set       async   leader    set       isolate-leader,kill,pause    invalid (acknowledged adds lost)
#   follower-reads  quorum  follower  register  partition,kill,pause         invalid (stale reads, measured)
#   session-reads   quorum  session   session   partition,kill,pause         valid (read-your-writes, monotonic)
#
# Prints one markdown row per run (seed, exit code, the checkers' summary
# lines) and exits 1 if any run's verdict differs from the expected one.
# Run directories stay under histories/ (report.html in each).
#
#   bash scripts/lf-matrix.sh                       # NODES=5 TIME_LIMIT=60 SEEDS="1 2"
#   ONLY="async-set follower-reads" SEEDS=7 bash scripts/lf-matrix.sh
#   NODE_CONFIG="replication.snapshot_every=300 storage.segment_bytes=65536" \
#     ONLY="quorum-leader quorum-set" bash scripts/lf-matrix.sh   # snapshots under faults
#
# About 75 s per run with a warm release build on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-5}
TIME_LIMIT=${TIME_LIMIT:-60}
SEEDS=${SEEDS:-"1 2"}
ONLY=${ONLY:-}
# Extra node config, `table.key=value` words, each passed as --node-config.
NODE_CONFIG=${NODE_CONFIG:-}
node_config=()
for kv in $NODE_CONFIG; do node_config+=(--node-config "$kv"); done

# name | harness flags | expected exit code (0 valid, 1 invalid)
matrix=(
  "quorum-leader|--acks quorum --reads leader --workload register --nemesis partition,kill,pause|0"
  "all-leader|--acks all --reads leader --workload register --nemesis partition,kill,pause|0"
  "quorum-set|--acks quorum --reads leader --workload set --nemesis partition,kill,pause,isolate-leader|0"
  "async-set|--acks async --reads leader --workload set --nemesis isolate-leader,kill,pause|1"
  "follower-reads|--acks quorum --reads follower --workload register --nemesis partition,kill,pause|1"
  "session-reads|--acks quorum --reads session --workload session --nemesis partition,kill,pause|0"
)

cargo build --release --locked -p mimeo-node -p mimeo-harness >&2
logs=$(mktemp -d /var/tmp/mimeo-lf-matrix.XXXXXX)
echo "| run | seed | expected | exit | checkers |"
echo "|---|---:|---|---:|---|"
mismatches=0
for seed in $SEEDS; do
  for row in "${matrix[@]}"; do
    IFS='|' read -r name flags expected <<<"$row"
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then continue; fi
    log=$logs/$name-$seed.log
    echo "== $name seed $seed ($NODES nodes, ${TIME_LIMIT}s): $flags" >&2
    set +e
    # shellcheck disable=SC2086 # flags holds separate arguments
    target/release/mimeo-harness run --mimeo-bin target/release/mimeo --mode leader-follower \
      --nodes "$NODES" --time-limit "$TIME_LIMIT" --concurrency 10 --fsync always --seed "$seed" \
      $flags "${node_config[@]}" >"$log" 2>&1
    code=$?
    set -e
    # The checkers' one-line summaries, joined; the run directory for reference.
    summary=$(grep -E '^(linearizable|set|session|staleness) ' "$log" | sed -E 's/ +/ /g' | paste -sd ';' -)
    dir=$(sed -n 's/^run directory: //p' "$log")
    verdict=ok
    if [ "$code" != "$expected" ]; then verdict="UNEXPECTED"; mismatches=$((mismatches + 1)); fi
    want=$([ "$expected" = 0 ] && echo valid || echo invalid)
    echo "| $name | $seed | $want | $code ($verdict) | ${summary//|/\\|} |"
    echo "   $dir (log: $log)" >&2
  done
done
if [ "$mismatches" -gt 0 ]; then
  echo "$mismatches run(s) did not reach the expected verdict; logs in $logs" >&2
  exit 1
fi
