#!/usr/bin/env bash
# Leaderless (issue 23), all on 127.0.0.1 in one run. Mimeo clusters are
# real `mimeo` processes started by `mimeo-harness bench-cluster` (fsync =
# batch; leaderless with n = 3, w = r = 2, conflicts = lww so a plain get
# always has one value to return; leader-follower with acks = quorum); the
# load is `bench-compare` (the workload of `mimeo bench`: VALUE_SIZE-byte
# values over KEYS keys). Sections (SECTIONS, default all, in this order):
#
# quorum    Throughput and p50/p99 of writes, then of reads (the same keys,
#           after the writes), at each of CONCURRENCY ("1 16 64"): leaderless
#           on 3 and on 5 nodes (the load spread over every node operation
#           by operation, one connection per node: any node coordinates),
#           leader-follower quorum on 3 (one client; the leader does the
#           work; reads at the leader) and etcd 3.4 with 3 members (PEERS);
#           links direct (no proxy), round-robin (run, concurrency, store),
#           RUNS times, DURATION each, medians and ratios to leader-follower.
#           Target at 64: leaderless writes >= leader-follower's, p99 no
#           worse.
# slow      One slow replica: three nodes behind the fault proxies, writes
#           at SLOW_CONCURRENCY ("1 16") first with no delay, then with
#           SLOW_DELAY_MS (50) ms each way on every link of one node:
#           leaderless w = 2 (client at n1, n3 slow: the coordinator takes
#           the fastest two of three) and leader-follower (a follower made
#           slow, the client at the leader). Target: leaderless p99 barely
#           moves.
# handoff   Hinted handoff: five leaderless nodes, sloppy = true, HANDOFF_LOAD
#           (16) writers spread over the nodes; 5 s into the load n5 is
#           killed (SIGKILL) for HANDOFF_DOWN (30) s while the load goes on
#           (n5's share fails over to the other nodes), then restarted as the
#           load ends. Reported: the
#           time from its restart (it answers again) until the other nodes
#           hold no hint for it (`mimeo_leaderless_hints_pending{owner="n5"}`
#           summed over them reaches 0: every hinted write delivered and
#           acknowledged durable by n5), polled every 100 ms, and the hints
#           stored and delivered meanwhile.
# ae        Anti-entropy over AE_KEYS (1,000,000) keys of AE_VALUE_BYTES (100)
#           bytes, 0.1% differing on one replica: `cargo bench -p
#           mimeo-leaderless --bench anti_entropy` (the core without I/O, two
#           replicas in one process; see its docs for why not real nodes):
#           bytes shipped / bytes differing (target <= 2x), exchange time,
#           and the bytes and time of an exchange between identical
#           replicas.
#
# Peers (PEERS, default "etcd"): etcd from Debian's etcd-server, installed
# with apt-get if missing, run from the scratch directory. Every process
# the script starts is stopped on exit; data files go unless KEEP_DATA=1.
#
# Takes about 22 minutes with the defaults (RUNS=3 DURATION=10s): quorum
# 3 x 3 x 2 x 4 x 10 s, slow 3 x 2 x 2 x 2 x 10 s, handoff ~45 s, ae a few
# minutes (building the two million-key replicas dominates).
#
#   bash scripts/bench-ll.sh
#   RUNS=1 DURATION=2s HANDOFF_DOWN=5 AE_KEYS=10000 bash scripts/bench-ll.sh   # a smoke run
#   SECTIONS="slow" SLOW_CONCURRENCY="1 16 64" bash scripts/bench-ll.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
SECTIONS=${SECTIONS:-"quorum slow handoff ae"}
PEERS=${PEERS-"etcd"}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
SLOW_CONCURRENCY=${SLOW_CONCURRENCY:-"1 16"}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-50}
HANDOFF_LOAD=${HANDOFF_LOAD:-16}
HANDOFF_DOWN=${HANDOFF_DOWN:-30}
AE_KEYS=${AE_KEYS:-1000000}
AE_VALUE_BYTES=${AE_VALUE_BYTES:-100}

has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }

work=$(mktemp -d /var/tmp/mimeo-bench-ll.XXXXXX)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh  # the working directory is the repository root

need_commands protoc:protobuf-compiler
if has "$PEERS" etcd; then
  need_commands etcd:etcd-server etcdctl:etcd-client
  (systemctl stop etcd || service etcd stop) >/dev/null 2>&1 || true
fi

cargo build --release --locked -p mimeo-node -p bench-compare -p mimeo-harness
mimeo=$PWD/target/release/mimeo
compare=$PWD/target/release/bench-compare
harness=$PWD/target/release/mimeo-harness
export MIMEO_BIN=$mimeo
ll_config=(--mode leaderless --node-config 'replication.n = 3' --node-config 'replication.w = 2'
  --node-config 'replication.r = 2' --node-config 'replication.conflicts = "lww"')
lf_config=(--mode leader-follower --nodes 3 --acks quorum)

mimeo_args() { # name [n]: bench-compare's options to reach every node, or node nN only
  local endpoints
  if [ -n "${2:-}" ]; then endpoints=$(cluster_field "$1" endpoint "$2"); else endpoints=$(cluster_field "$1" endpoints); fi
  echo --target mimeo --certs "$(cluster_field "$1" certs)" --identity client-harness --endpoint "$endpoints"
}

mimeo_cli() { # name args...
  local name=$1; shift
  "$mimeo" --certs "$(cluster_field "$name" certs)" --identity client-harness \
    --node "$(cluster_field "$name" endpoints)" "$@"
}

# True once every node answers and sees its peers connected (and, for
# leader-follower, one of them leads); prints the leader's node id.
cluster_ready() { # name
  mimeo_cli "$1" status --json 2>/dev/null | python3 -c '
import json, sys
statuses = json.load(sys.stdin)
if any("error" in s for s in statuses): sys.exit(1)
if not all(p["connected"] for s in statuses for p in s["peers"]): sys.exit(1)
leaders = [s for s in statuses if str(s["role"]).lower() == "leader"]
if str(statuses[0]["mode"]).lower().replace("-", "") == "leaderfollower":
    if len(leaders) != 1: sys.exit(1)
    print(leaders[0]["node_id"])'
}

start_ready_cluster() { # name args...
  start_bench_cluster "$@"
  wait_for "the bench cluster $1 (every link up, a leader if it has one)" cluster_ready "$1"
}

# --- quorum reads and writes ---------------------------------------------------
if has "$SECTIONS" quorum; then
  start_ready_cluster ll3 "${ll_config[@]}" --nodes 3 --direct
  start_ready_cluster ll5 "${ll_config[@]}" --nodes 5 --direct
  start_ready_cluster lf "${lf_config[@]}" --direct
  has "$PEERS" etcd && start_etcd_cluster etcd
  for run in $(seq 1 "$RUNS"); do
    for c in $CONCURRENCY; do
      for kind in writes reads; do
        fraction=0; [ "$kind" = reads ] && fraction=1
        common=(-c "$c" --value-size "$VALUE_SIZE" --keys "$KEYS" -d "$DURATION" --seed "$run" --read-fraction "$fraction")
        echo "quorum $kind c=$c run $run" >&2
        # shellcheck disable=SC2046 # mimeo_args prints separate options
        record ll3-w2r2 "$c" "$("$compare" run $(mimeo_args ll3) --spread "${common[@]}")" "$kind"
        # shellcheck disable=SC2046
        record ll5-w2r2 "$c" "$("$compare" run $(mimeo_args ll5) --spread "${common[@]}")" "$kind"
        wait_for "the leader-follower cluster" cluster_ready lf
        # shellcheck disable=SC2046
        record lf-quorum "$c" "$("$compare" run $(mimeo_args lf) "${common[@]}")" "$kind"
        if has "$PEERS" etcd; then
          record etcd "$c" "$("$compare" run --target etcd --endpoint "$(etcd_endpoints etcd)" "${common[@]}")" "$kind"
        fi
      done
    done
  done
  stop_bench_cluster ll3; stop_bench_cluster ll5; stop_bench_cluster lf
fi

# --- one slow replica ------------------------------------------------------------
if has "$SECTIONS" slow; then
  start_ready_cluster ll-net "${ll_config[@]}" --nodes 3
  start_ready_cluster lf-net "${lf_config[@]}"
  for run in $(seq 1 "$RUNS"); do
    for c in $SLOW_CONCURRENCY; do
      for delay in 0 "$SLOW_DELAY_MS"; do
        common=(-c "$c" --value-size "$VALUE_SIZE" --keys "$KEYS" -d "$DURATION" --seed "$run")
        echo "slow replica ${delay} ms c=$c run $run" >&2
        cluster_cmd ll-net delay "$delay" n3 >/dev/null
        # shellcheck disable=SC2046
        record "ll3-w2 (n3 +${delay} ms)" "$c" "$("$compare" run $(mimeo_args ll-net 1) "${common[@]}")" slow
        cluster_cmd lf-net delay 0 >/dev/null
        wait_for "the leader-follower cluster" cluster_ready lf-net
        leader=$(cluster_ready lf-net)
        slow=n1; [ "$leader" = n1 ] && slow=n2
        cluster_cmd lf-net delay "$delay" "$slow" >/dev/null
        # shellcheck disable=SC2046
        record "lf-quorum (a follower +${delay} ms)" "$c" "$("$compare" run $(mimeo_args lf-net) "${common[@]}")" slow
      done
    done
  done
  stop_bench_cluster ll-net; stop_bench_cluster lf-net
fi

# --- hinted handoff --------------------------------------------------------------
handoff_results=$work/handoff.jsonl; : > "$handoff_results"
if has "$SECTIONS" handoff; then
  start_ready_cluster ll-handoff "${ll_config[@]}" --nodes 5 --direct --node-config 'replication.sloppy = true'
  others=()
  for i in 1 2 3 4; do others+=("$(cluster_field ll-handoff metrics "$i")"); done
  for run in $(seq 1 "$RUNS"); do
    echo "handoff run $run: n5 down ${HANDOFF_DOWN} s under load" >&2
    wait_for "the leaderless cluster" cluster_ready ll-handoff
    stored_before=$(metric_sum mimeo_leaderless_hints_stored_total "" "${others[@]}")
    delivered_before=$(metric_sum mimeo_leaderless_hints_delivered_total "" "${others[@]}")
    # shellcheck disable=SC2046
    "$compare" run $(mimeo_args ll-handoff) --spread -c "$HANDOFF_LOAD" --value-size "$VALUE_SIZE" --keys "$KEYS" \
      -d "$((HANDOFF_DOWN + 5))s" --seed "$run" > "$work/handoff-load-$run.json" &
    load=$!
    sleep 5  # the load runs on all five nodes first
    cluster_cmd ll-handoff kill n5 >/dev/null
    sleep "$HANDOFF_DOWN"
    cluster_cmd ll-handoff start n5 >/dev/null  # returns once n5 answers
    returned=$(date +%s.%N)
    pending_at_return=$(metric_sum mimeo_leaderless_hints_pending 'owner="n5"' "${others[@]}")
    delivered_at=""
    for _ in $(seq 1 3000); do  # 300 s at most
      if [ "$(metric_sum mimeo_leaderless_hints_pending 'owner="n5"' "${others[@]}")" = 0 ]; then
        delivered_at=$(date +%s.%N); break
      fi
      sleep 0.1
    done
    wait "$load"
    stored=$(metric_sum mimeo_leaderless_hints_stored_total "" "${others[@]}")
    delivered=$(metric_sum mimeo_leaderless_hints_delivered_total "" "${others[@]}")
    python3 -c '
import json, sys
returned, at = float(sys.argv[1]), sys.argv[2]
load = json.load(open(sys.argv[7]))
print(json.dumps({"down_s": int(sys.argv[8]), "writes": load["writes"], "failed": load["failed"], "unknown": load["unknown"],
  "hints_stored": float(sys.argv[3]) - float(sys.argv[4]), "hints_delivered": float(sys.argv[5]) - float(sys.argv[6]),
  "pending_at_return": float(sys.argv[9]),
  "return_to_delivered_s": float(at) - returned if at else None}))' \
      "$returned" "$delivered_at" "$stored" "$stored_before" "$delivered" "$delivered_before" \
      "$work/handoff-load-$run.json" "$HANDOFF_DOWN" "$pending_at_return" >> "$handoff_results"
    tail -1 "$handoff_results" >&2
  done
  stop_bench_cluster ll-handoff
fi

# --- anti-entropy ------------------------------------------------------------------
ae_results=$work/ae.jsonl; : > "$ae_results"
if has "$SECTIONS" ae; then
  for run in $(seq 1 "$RUNS"); do
    echo "anti-entropy run $run ($AE_KEYS keys)" >&2
    AE_KEYS=$AE_KEYS AE_VALUE_BYTES=$AE_VALUE_BYTES cargo bench --locked -q -p mimeo-leaderless --bench anti_entropy \
      2>>"$work/ae.log" | grep '^{' >> "$ae_results"
  done
fi

# --- tables -------------------------------------------------------------------------
if has "$SECTIONS" quorum; then
  echo "### Quorum writes and reads (N = 3, W = R = 2), loopback, direct links"
  echo
  median_table lf-quorum '^(ll3-w2r2|ll5-w2r2|lf-quorum|etcd)$'
  echo
  if has "$PEERS" etcd; then
    echo "The same against etcd:"
    echo
    median_table etcd '^(ll3-w2r2|ll5-w2r2|lf-quorum|etcd)$'
    echo
  fi
fi
if has "$SECTIONS" slow; then
  echo "### One slow replica (+$SLOW_DELAY_MS ms each way on one node's links), writes"
  echo
  python3 - "$results" <<'PY'
import json, statistics, sys
med = statistics.median
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if r.get("workload") == "slow"]
groups = {}
for r in rows:
    groups.setdefault((r["store"].split(" (")[0], r["c"], r["store"]), []).append(r)
print("| store | concurrency | runs | ops/s | p50 µs | p99 µs | p99 vs no delay |")
print("|---|---:|---:|---:|---:|---:|---:|")
for (system, c, store), rs in sorted(groups.items()):
    base = [g for (s2, c2, st2), g in groups.items() if s2 == system and c2 == c and "+0 ms" in st2]
    p99 = med([r["latency"]["p99_us"] for r in rs])
    ratio = f"{p99 / med([r['latency']['p99_us'] for r in base[0]]):.2f}×" if base else ""
    print(f"| {store} | {c} | {len(rs)} | {med([r['throughput'] for r in rs]):,.0f} "
          f"| {med([r['latency']['p50_us'] for r in rs]):,.0f} | {p99:,.0f} | {ratio} |")
PY
  echo
fi
if has "$SECTIONS" handoff; then
  echo "### Hinted handoff: n5 of 5 down ${HANDOFF_DOWN} s under load (sloppy quorums)"
  echo
  python3 - "$handoff_results" <<'PY'
import json, sys
print("| run | writes | failed + unknown | hints stored | hints delivered | pending at return | return → no hint pending (s) |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate((json.loads(l) for l in open(sys.argv[1])), 1):
    t = f"{r['return_to_delivered_s']:.2f}" if r["return_to_delivered_s"] is not None else "not within 300 s"
    print(f"| {i} | {r['writes']:,} | {r['failed'] + r['unknown']:,} | {r['hints_stored']:,.0f} | {r['hints_delivered']:,.0f} | {r['pending_at_return']:,.0f} | {t} |")
PY
  echo
fi
if has "$SECTIONS" ae; then
  echo "### Anti-entropy ($AE_KEYS keys of $AE_VALUE_BYTES B, 0.1% differing on one replica; core, no I/O)"
  echo
  python3 - "$ae_results" <<'PY'
import json, sys
print("| run | differing keys | differing bytes | shipped bytes | shipped / differing | exchange ms | idle exchange bytes | idle exchange ms |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate((json.loads(l) for l in open(sys.argv[1])), 1):
    print(f"| {i} | {r['differing_keys']:,} | {r['differing_bytes']:,} | {r['shipped_bytes']:,} | {r['ratio']:.2f}× "
          f"| {r['exchange_ms']:,.1f} | {r['idle_exchange_bytes']:,} | {r['idle_exchange_ms']:.2f} |")
PY
fi
echo "raw results: $results $handoff_results $ae_results" >&2
