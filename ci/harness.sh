#!/usr/bin/env bash
# The main job: a real mimeo node under the harness for 60 s with kill -9 and
# SIGSTOP/SIGCONT faults, a register workload, the history checked for
# linearizability, and a report. Exits 0 only when every checker says valid.
#
#   bash ci/harness.sh                       # defaults below
#   TIME_LIMIT=30 NEMESIS=power-loss WORKLOAD=set FSYNC=never bash ci/harness.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null

PROFILE=${PROFILE:-release}
TIME_LIMIT=${TIME_LIMIT:-60}
NEMESIS=${NEMESIS:-kill,pause}
WORKLOAD=${WORKLOAD:-register}
FSYNC=${FSYNC:-always}
SEED=${SEED:-$RANDOM}

cargo build --locked --profile "$PROFILE" -p mimeo-node -p mimeo-harness
dir=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
exec "$dir/mimeo-harness" run --mimeo-bin "$dir/mimeo" \
  --mode standalone --nodes 1 --workload "$WORKLOAD" --nemesis "$NEMESIS" \
  --time-limit "$TIME_LIMIT" --concurrency 10 --fsync "$FSYNC" --seed "$SEED" "$@"
