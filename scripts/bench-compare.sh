#!/usr/bin/env bash
# Measures, in one run on this machine:
#  - the disk's raw append+fdatasync rate (the physical limit of fsync = always),
#  - `mimeo bench`'s workload against a standalone Mimeo node with fsync = always
#    and with fsync = batch,
#  - the same workload against etcd (single member) and Redis (appendfsync always),
# at each concurrency, RUNS times each (round-robin over the stores), and
# prints a Markdown table of medians.
#
#   bash scripts/bench-compare.sh                 # defaults: RUNS=3 DURATION=10s CONCURRENCY="1 16 64"
#   RUNS=5 DURATION=20s bash scripts/bench-compare.sh
#
# Installs etcd-server, redis-server and protobuf-compiler from Debian's
# packages if they are missing. Everything listens on 127.0.0.1 only. On
# exit the systems' data files are removed (KEEP_DATA=1 keeps them); logs
# and raw results stay in the scratch directory it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
VALUE_SIZE=${VALUE_SIZE:-256}
STORES=${STORES:-"fsync mimeo-always mimeo-batch etcd redis"}

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v redis-server >/dev/null || need+=(redis-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the services it installs; this script runs its own.
for svc in etcd redis-server; do
  (systemctl stop "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
done

cargo build --release --locked -p mimeo-node -p bench-compare
mimeo=$PWD/target/release/mimeo
compare=$PWD/target/release/bench-compare

work=$(mktemp -d /var/tmp/mimeo-bench.XXXXXX)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh  # the working directory is the repository root

# Every server runs for the whole script, and the measurements go round-robin
# (run, then concurrency, then store), so a slow spell of the disk or a busy
# neighbour hits every store alike instead of one store's whole series.
start_mimeo() { # fsync port
  local fsync=$1 port=$2 dir=$work/mimeo-$1
  mkdir -p "$dir"
  "$mimeo" certs init --dir "$dir/certs" --nodes n1 >/dev/null
  printf 'node_id = "n1"\nlisten = "127.0.0.1:%s"\ndata_dir = "data"\n[storage]\nfsync = "%s"\n' "$port" "$fsync" > "$dir/node.toml"
  RUST_LOG=warn "$mimeo" serve --config "$dir/node.toml" >"$dir/node.log" 2>&1 & pids+=("$!")
  wait_for "mimeo ($fsync)" "$mimeo" --certs "$dir/certs" --node "127.0.0.1:$port" status
}

start_etcd() {
  etcd --name bench --data-dir "$work/etcd" \
    --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster bench=http://127.0.0.1:12380 >"$work/etcd.log" 2>&1 & pids+=("$!")
  wait_for "etcd" etcdctl --endpoints 127.0.0.1:12379 endpoint health
}

start_redis() {
  mkdir -p "$work/redis"
  redis-server --bind 127.0.0.1 --port 16379 --dir "$work/redis" --save '' --appendonly yes --appendfsync always \
    >"$work/redis.log" 2>&1 & pids+=("$!")
  wait_for "redis" redis-cli -p 16379 ping
}

measure() { # store concurrency run
  local store=$1 c=$2 run=$3 args
  case $store in
    mimeo-always) args=(--target mimeo --endpoint 127.0.0.1:17501 --certs "$work/mimeo-always/certs") ;;
    mimeo-batch) args=(--target mimeo --endpoint 127.0.0.1:17502 --certs "$work/mimeo-batch/certs") ;;
    etcd) args=(--target etcd --endpoint 127.0.0.1:12379) ;;
    redis) args=(--target redis --endpoint 127.0.0.1:16379) ;;
  esac
  echo "$store c=$c run $run" >&2
  record "$store" "$c" "$("$compare" run "${args[@]}" -c "$c" --value-size "$VALUE_SIZE" -d "$DURATION" --seed "$run")"
}

servers=()
for store in $STORES; do
  case $store in
    fsync) ;;
    mimeo-always) start_mimeo always 17501; servers+=("$store") ;;
    mimeo-batch) start_mimeo batch 17502; servers+=("$store") ;;
    etcd) start_etcd; servers+=("$store") ;;
    redis) start_redis; servers+=("$store") ;;
    *) echo "unknown store $store" >&2; exit 64 ;;
  esac
done

for run in $(seq 1 "$RUNS"); do
  case " $STORES " in *" fsync "*)
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"store":"raw-fsync","c":1,"throughput":r["fsyncs_per_s"],"latency":{"p50_us":r["median_us"],"p99_us":r["p99_us"]}}))' \
      "$("$compare" fsync-rate --dir "$work" --duration 5s --bytes "$VALUE_SIZE")" >> "$results" ;;
  esac
  for c in $CONCURRENCY; do
    for store in "${servers[@]}"; do measure "$store" "$c" "$run"; done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["store"], r["c"]), []).append(r)
med = lambda xs: statistics.median(xs)
etcd = {c: med([r["throughput"] for r in rs]) for (s, c), rs in groups.items() if s == "etcd"}
print("| store | concurrency | runs | throughput (ops/s, median) | min–max | p50 µs | p99 µs | vs etcd |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for (store, c), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    t = [r["throughput"] for r in rs]
    p50 = med([r["latency"]["p50_us"] for r in rs]); p99 = med([r["latency"]["p99_us"] for r in rs])
    ratio = f'{med(t) / etcd[c]:.2f}×' if c in etcd and store != "raw-fsync" else ""
    print(f"| {store} | {c} | {len(rs)} | {med(t):,.0f} | {min(t):,.0f}–{max(t):,.0f} | {p50:,.0f} | {p99:,.0f} | {ratio} |")
errors = [(r["store"], r["c"], r.get("failed", 0) + r.get("unknown", 0)) for r in rows if r.get("failed", 0) + r.get("unknown", 0)]
if errors:
    print("\nruns with errors (store, concurrency, failed+unknown):", errors)
PY
echo "raw results: $results" >&2
