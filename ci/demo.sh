#!/usr/bin/env bash
# The main job until the harness lands: a real standalone node with
# fsync = always under a `mimeo bench` write load, killed with SIGKILL
# mid-load, restarted, and every acknowledged write read back.
# Prints a verdict (valid / invalid) and leaves the run in runs/demo-<time>/.
#
#   bash ci/demo.sh            # release build
#   PROFILE=dev bash ci/demo.sh  # debug build (what CI uses; faster to build)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null

profile=${PROFILE:-release}
cargo build --locked --profile "$profile" --bin mimeo
target_dir=$( [ "$profile" = dev ] && echo debug || echo "$profile" )
mimeo="$PWD/target/$target_dir/mimeo"

run="runs/demo-$(date -u +%Y%m%dT%H%M%S)"
mkdir -p "$run"
cd "$run"
port=${PORT:-17401}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

"$mimeo" certs init --dir certs --nodes n1 >/dev/null
cat > node.toml <<TOML
node_id = "n1"
listen = "127.0.0.1:$port"
data_dir = "data"
[storage]
fsync = "always"
TOML
export MIMEO_CERTS=certs MIMEO_NODES="127.0.0.1:$port" RUST_LOG=warn

wait_serving() {
  for _ in $(seq 1 300); do
    "$mimeo" status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node did not start within 30 s; see $run/node.log" >&2
  exit 1
}

"$mimeo" serve --config node.toml >>node.log 2>&1 & node=$!; pids+=("$node")
wait_serving
echo "node up on 127.0.0.1:$port (fsync = always); starting the write load"

"$mimeo" bench --unique-keys --concurrency 16 --duration 60s --ack-log acks.log --quiet >bench.log 2>&1 & bench=$!; pids+=("$bench")
for _ in $(seq 1 600); do
  [ -f acks.log ] && [ "$(wc -l < acks.log)" -ge 1000 ] && break
  sleep 0.1
done
acked=$(wc -l < acks.log)
echo "SIGKILL to the node after at least $acked acknowledged writes"
kill -9 "$node"; wait "$node" 2>/dev/null || true
kill -9 "$bench"; wait "$bench" 2>/dev/null || true

"$mimeo" serve --config node.toml >>node.log 2>&1 & node=$!; pids+=("$node")
wait_serving
echo "node restarted; reading back every acknowledged write"
set +e
"$mimeo" bench --verify-acks acks.log | tee verdict.txt
status=${PIPESTATUS[0]}
set -e
"$mimeo" status > status.txt
kill "$node"; wait "$node" 2>/dev/null || true
echo "run directory: $run"
exit "$status"
