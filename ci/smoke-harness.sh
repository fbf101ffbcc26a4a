#!/usr/bin/env bash
# CI smoke runs of the harness on a debug build: a standalone node under
# kill and pause must be linearizable; under power loss with fsync = always
# no acknowledged add may be lost; a 3-node leader-follower cluster with
# quorum acks and leader reads must be linearizable under partitions, kills
# and pauses; and a known-bad history must be rejected.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p mimeo-node -p mimeo-harness
harness=target/debug/mimeo-harness
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT

"$harness" run --mimeo-bin target/debug/mimeo --store "$store" --seed 1 \
  --workload register --nemesis kill,pause --nemesis-interval 3 --time-limit 20
"$harness" run --mimeo-bin target/debug/mimeo --store "$store" --seed 2 \
  --workload set --nemesis power-loss --nemesis-interval 3 --time-limit 15 --fsync always

"$harness" run --mimeo-bin target/debug/mimeo --store "$store" --seed 3 \
  --mode leader-follower --nodes 3 --acks quorum --reads leader \
  --workload register --nemesis partition,kill,pause --nemesis-interval 3 --time-limit 20

status=0
"$harness" check --no-report histories/register/invalid-stale-read.jsonl || status=$?
if [ "$status" -ne 1 ]; then
  echo "a stale read must be reported invalid (exit 1), got exit $status" >&2
  exit 1
fi
echo "harness smoke: ok"
