#!/usr/bin/env bash
# The main job: a local 3-node leader-follower cluster (quorum acks, leader
# reads) under the harness for 60 s, with a fault proxy on every link and
# partitions (some isolating the leader), kill -9 and SIGSTOP/SIGCONT; a
# register workload, the history checked for linearizability, and a report.
# Exits 0 only when every checker says valid.
#
#   bash ci/harness.sh                                  # defaults below
#   MODE=standalone NODES=1 NEMESIS=kill,pause bash ci/harness.sh
#   MODE=standalone NODES=1 NEMESIS=power-loss WORKLOAD=set FSYNC=never bash ci/harness.sh
#   bash ci/harness.sh --acks async --workload set --nemesis isolate-leader   # extra flags pass through
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null

PROFILE=${PROFILE:-release}
MODE=${MODE:-leader-follower}
NODES=${NODES:-3}
TIME_LIMIT=${TIME_LIMIT:-60}
NEMESIS=${NEMESIS:-partition,kill,pause}
WORKLOAD=${WORKLOAD:-register}
FSYNC=${FSYNC:-always}
SEED=${SEED:-$RANDOM}

cargo build --locked --profile "$PROFILE" -p mimeo-node -p mimeo-harness
dir=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
exec "$dir/mimeo-harness" run --mimeo-bin "$dir/mimeo" \
  --mode "$MODE" --nodes "$NODES" --workload "$WORKLOAD" --nemesis "$NEMESIS" \
  --time-limit "$TIME_LIMIT" --concurrency 10 --fsync "$FSYNC" --seed "$SEED" "$@"
