#!/usr/bin/env bash
# Multi-leader (issue 22): why a user picks it, what it costs, and one real
# multi-writer peer, all on 127.0.0.1 in one run. Every Mimeo cluster is
# three real `mimeo` processes started by `mimeo-harness bench-cluster`
# (fsync = batch; multi-leader with acks = local and conflicts = lww, the
# policy pglogical's last_update_wins also follows; leader-follower with
# acks = quorum); the load is `bench-compare` (the workload of `mimeo
# bench`: VALUE_SIZE-byte values over KEYS keys, writes only). Sections
# (SECTIONS, default all, in this order):
#
# regions   Three "regions": every node-to-node link delayed REGION_DELAY_MS
#           (50) ms each way by the harness's fault proxies, clients straight
#           to a node. Write p50/p99 at each of REGION_CONCURRENCY ("1 16"):
#           multi-leader (client at n1: a region's own node acknowledges),
#           leader-follower quorum (client at the leader: a quorum needs a
#           round trip to another region) and a standalone node (no links),
#           round-robin (run, concurrency, store), RUNS times, DURATION each.
#           Targets: multi-leader p50 <= 1.5x standalone's; leader-follower
#           over 100 ms.
# throughput Every node takes writes: THROUGHPUT_CONCURRENCY (64) writers
#           spread over the three nodes operation by operation (one
#           connection per node), links direct (no proxy), beside
#           leader-follower quorum (one client, the leader does the work),
#           etcd 3.4 (3 members) and, with PEERS containing postgres, the
#           three PostgreSQL nodes (spread the same way). Target: >= 1.5x
#           leader-follower.
# lag       Replication lag, client side (the nodes export no per-write lag
#           yet): every 10 ms a probe key is written at n1 and, once
#           acknowledged, read back to back at n2 and n3 until there, under
#           LAG_LOAD (16) writers spread over the nodes; p50/p99 of ack ->
#           visible on every peer. Resolution: one read round trip (~0.2 ms
#           here). The same for PostgreSQL/pglogical.
# catchup   A 10 s partition (PARTITION_S) of n1 from n2+n3 while
#           CATCHUP_CONCURRENCY (16) writers spread over all three nodes
#           (both sides take writes), then heal: time until every node has
#           applied every origin's writes (`mimeo status` polled, ~50 ms
#           resolution), and the bytes the nodes sent each other from the
#           heal to convergence (the fault proxies count every UDP payload:
#           QUIC, TLS, acknowledgements, retransmissions) against the bytes
#           of the writes that were missing (per node and origin, from the
#           applied vectors at the heal; key + value bytes per write).
#           Target: <= 1.2x.
# race      Two nodes (n1, n2) take RACE_INCREMENTS increments of one key
#           each, RACE_CONCURRENCY at a time per node; then the nodes are
#           read until they agree: acknowledged increments the agreed value
#           lacks are lost. Mimeo's counter type (must lose none), a Mimeo
#           register incremented by read + write back (lww: loses some), and
#           PostgreSQL's `v = v + 1` under pglogical's last_update_wins.
#
# Peers (PEERS, default "etcd postgres"): etcd from Debian's etcd-server;
# PostgreSQL 15 with pglogical 2 (Debian postgresql-15 and
# postgresql-15-pglogical): three instances on ports 25432-25434, each
# subscribed to the other two (forward_origins = '{}', so no write goes
# round twice), track_commit_timestamp on, conflict_resolution =
# last_update_wins, trust authentication on 127.0.0.1 only, synchronous_commit
# on (a commit is flushed on the node that took it, as acks = local).
# Missing packages are installed with apt-get; the instances run from the
# scratch directory as the postgres user and are stopped on exit, as every
# process the script starts. Data files go on exit unless KEEP_DATA=1.
#
# Takes about 12 minutes with the defaults (RUNS=3 DURATION=10s): regions
# 3 x 2 x 3 x 10 s, throughput 3 x 4 x 10 s, lag 3 x 2 x 10 s, catch-up
# 3 x (10 s + convergence), race 3 x 3 short runs, plus start-ups.
#
#   bash scripts/bench-ml.sh
#   RUNS=1 DURATION=2s PARTITION_S=2 RACE_INCREMENTS=200 bash scripts/bench-ml.sh   # a smoke run
#   SECTIONS="regions" REGION_CONCURRENCY="1 16 64" bash scripts/bench-ml.sh
#   PEERS="" bash scripts/bench-ml.sh                                              # Mimeo only
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}
SECTIONS=${SECTIONS:-"regions throughput lag catchup race"}
PEERS=${PEERS-"etcd postgres"}
REGION_DELAY_MS=${REGION_DELAY_MS:-50}
REGION_CONCURRENCY=${REGION_CONCURRENCY:-"1 16"}
THROUGHPUT_CONCURRENCY=${THROUGHPUT_CONCURRENCY:-64}
LAG_LOAD=${LAG_LOAD:-16}
PARTITION_S=${PARTITION_S:-10}
CATCHUP_CONCURRENCY=${CATCHUP_CONCURRENCY:-16}
RACE_INCREMENTS=${RACE_INCREMENTS:-2000}
RACE_CONCURRENCY=${RACE_CONCURRENCY:-8}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }

work=$(mktemp -d /var/tmp/mimeo-bench-ml.XXXXXX)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh  # the working directory is the repository root

need_commands protoc:protobuf-compiler
if has "$PEERS" etcd; then
  need_commands etcd:etcd-server etcdctl:etcd-client
  (systemctl stop etcd || service etcd stop) >/dev/null 2>&1 || true
fi
if has "$PEERS" postgres; then
  [ -x "$PG_BIN/postgres" ] || need_commands "$PG_BIN/postgres:postgresql-15"
  [ -f /usr/lib/postgresql/15/lib/pglogical.so ] || need_commands pglogical_create_subscriber:postgresql-15-pglogical
  need_commands psql:postgresql-client-15
fi

cargo build --release --locked -p mimeo-node -p bench-compare -p mimeo-harness
mimeo=$PWD/target/release/mimeo
compare=$PWD/target/release/bench-compare
harness=$PWD/target/release/mimeo-harness
export MIMEO_BIN=$mimeo
ml_config=(--mode multi-leader --nodes 3 --acks local --node-config 'replication.conflicts = "lww"')
lf_config=(--mode leader-follower --nodes 3 --acks quorum)
workload=(--value-size "$VALUE_SIZE" --keys "$KEYS" -d "$DURATION")

# bench-compare's options to reach cluster NAME: every endpoint, or node nN's only.
mimeo_args() { # name [n]
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
# leader-follower, one of them leads); prints the leader's client address.
cluster_ready() { # name
  mimeo_cli "$1" status --json 2>/dev/null | python3 -c '
import json, sys
statuses = json.load(sys.stdin)
if any("error" in s for s in statuses): sys.exit(1)
if not all(p["connected"] for s in statuses for p in s["peers"]): sys.exit(1)
leaders = [s for s in statuses if str(s["role"]).lower() == "leader"]
if statuses[0]["mode"] == "leader-follower" or str(statuses[0]["mode"]).lower() == "leaderfollower":
    if len(leaders) != 1: sys.exit(1)
    print(leaders[0]["node_id"])'
}

start_ready_cluster() { # name args...
  start_bench_cluster "$@"
  wait_for "the bench cluster $1 (every link up, a leader if it has one)" cluster_ready "$1"
}

# --- PostgreSQL with pglogical: three nodes, each subscribed to the others ---
pg_port() { echo $((25431 + $1)); }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_sql() { # node sql
  psql -h 127.0.0.1 -p "$(pg_port "$1")" -U postgres -d bench -v ON_ERROR_STOP=1 -qAtc "$2"
}
pg_endpoints() { echo "127.0.0.1:$(pg_port 1),127.0.0.1:$(pg_port 2),127.0.0.1:$(pg_port 3)"; }

start_postgres() {
  local i j dir=$work/pg
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chmod 711 "$work"; chown postgres "$dir"; fi
  for i in 1 2 3; do
    as_pg "$PG_BIN/initdb" -D "$dir/$i" -U postgres --auth=trust >"$work/pg-initdb-$i.log" 2>&1
    cat >> "$dir/$i/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $(pg_port "$i")
unix_socket_directories = '$dir/$i'
wal_level = logical
max_worker_processes = 16
max_replication_slots = 16
max_wal_senders = 16
shared_preload_libraries = 'pglogical'
track_commit_timestamp = on
pglogical.conflict_resolution = 'last_update_wins'
EOF
    exit_hooks+=("as_pg '$PG_BIN/pg_ctl' -D '$dir/$i' -m immediate -w stop")
    as_pg "$PG_BIN/pg_ctl" -D "$dir/$i" -l "$dir/$i.log" -w start >/dev/null
    psql -h 127.0.0.1 -p "$(pg_port "$i")" -U postgres -d postgres -qAtc 'CREATE DATABASE bench' >/dev/null
    pg_sql "$i" "CREATE EXTENSION pglogical;
      CREATE TABLE kv (k text PRIMARY KEY, v bytea NOT NULL);
      CREATE TABLE counters (k text PRIMARY KEY, v bigint NOT NULL);
      SELECT pglogical.create_node(node_name := 'pg$i', dsn := 'host=127.0.0.1 port=$(pg_port "$i") dbname=bench user=postgres');
      SELECT pglogical.replication_set_add_all_tables('default', ARRAY['public']);" >/dev/null
  done
  for i in 1 2 3; do
    for j in 1 2 3; do
      [ "$i" = "$j" ] && continue
      pg_sql "$i" "SELECT pglogical.create_subscription(subscription_name := 'pg${i}_from_pg$j',
        provider_dsn := 'host=127.0.0.1 port=$(pg_port "$j") dbname=bench user=postgres',
        synchronize_structure := false, synchronize_data := false, forward_origins := '{}');" >/dev/null
    done
  done
  pg_replicating() {
    local i
    for i in 1 2 3; do
      [ "$(pg_sql "$i" "SELECT count(*) FROM pglogical.show_subscription_status() WHERE status = 'replicating'")" = 2 ] || return 1
    done
  }
  wait_for "pglogical subscriptions (each node replicating from the other two)" pg_replicating
}

pg_on=false
if has "$PEERS" postgres && { has "$SECTIONS" throughput || has "$SECTIONS" lag || has "$SECTIONS" race; }; then
  start_postgres; pg_on=true
fi

# --- regions -------------------------------------------------------------------
if has "$SECTIONS" regions; then
  start_ready_cluster ml-regions "${ml_config[@]}" --delay-ms "$REGION_DELAY_MS"
  start_ready_cluster lf-regions "${lf_config[@]}" --delay-ms "$REGION_DELAY_MS"
  mkdir -p "$work/standalone"
  "$mimeo" certs init --dir "$work/standalone/certs" --nodes n1 >/dev/null
  printf 'node_id = "n1"\nlisten = "127.0.0.1:17709"\ndata_dir = "%s/standalone/data"\n[storage]\nfsync = "batch"\n' "$work" \
    > "$work/standalone/node.toml"
  RUST_LOG=warn "$mimeo" serve --config "$work/standalone/node.toml" >"$work/standalone/node.log" 2>&1 & pids+=("$!")
  standalone=$!
  wait_for "standalone mimeo" "$mimeo" --certs "$work/standalone/certs" --node 127.0.0.1:17709 status
  for run in $(seq 1 "$RUNS"); do
    for c in $REGION_CONCURRENCY; do
      echo "regions c=$c run $run" >&2
      # shellcheck disable=SC2046 # mimeo_args prints separate options
      record ml-local "$c" "$("$compare" run $(mimeo_args ml-regions 1) -c "$c" "${workload[@]}" --seed "$run")" regions
      wait_for "the leader-follower regions" cluster_ready lf-regions
      # shellcheck disable=SC2046
      record lf-quorum "$c" "$("$compare" run $(mimeo_args lf-regions) -c "$c" "${workload[@]}" --seed "$run")" regions
      record standalone "$c" "$("$compare" run --target mimeo --endpoint 127.0.0.1:17709 --certs "$work/standalone/certs" \
        -c "$c" "${workload[@]}" --seed "$run")" regions
    done
  done
  stop_bench_cluster ml-regions; stop_bench_cluster lf-regions
  kill -TERM "$standalone"; wait "$standalone" 2>/dev/null || true
fi

# --- throughput, lag, race: direct links ---------------------------------------
if has "$SECTIONS" throughput || has "$SECTIONS" lag || has "$SECTIONS" race; then
  start_ready_cluster ml "${ml_config[@]}" --direct
fi
if has "$SECTIONS" throughput; then
  start_ready_cluster lf "${lf_config[@]}" --direct
  has "$PEERS" etcd && start_etcd_cluster etcd
  for run in $(seq 1 "$RUNS"); do
    for c in $THROUGHPUT_CONCURRENCY; do
      echo "throughput c=$c run $run" >&2
      # shellcheck disable=SC2046
      record ml-local "$c" "$("$compare" run $(mimeo_args ml) --spread -c "$c" "${workload[@]}" --seed "$run")" throughput
      wait_for "the leader-follower cluster" cluster_ready lf
      # shellcheck disable=SC2046
      record lf-quorum "$c" "$("$compare" run $(mimeo_args lf) -c "$c" "${workload[@]}" --seed "$run")" throughput
      if has "$PEERS" etcd; then
        record etcd "$c" "$("$compare" run --target etcd --endpoint "$(etcd_endpoints etcd)" -c "$c" "${workload[@]}" --seed "$run")" throughput
      fi
      if $pg_on; then
        record postgres "$c" "$("$compare" run --target postgres --endpoint "$(pg_endpoints)" --spread -c "$c" "${workload[@]}" --seed "$run")" throughput
      fi
    done
  done
  stop_bench_cluster lf
fi

lag_results=$work/lag.jsonl; : > "$lag_results"
if has "$SECTIONS" lag; then
  for run in $(seq 1 "$RUNS"); do
    echo "lag run $run" >&2
    # shellcheck disable=SC2046
    out=$("$compare" lag $(mimeo_args ml) -d "$DURATION" --load-concurrency "$LAG_LOAD" --value-size "$VALUE_SIZE" --keys "$KEYS")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["store"]="ml-local"; print(json.dumps(r))' "$out" >> "$lag_results"
    if $pg_on; then
      out=$("$compare" lag --target postgres --endpoint "$(pg_endpoints)" -d "$DURATION" --load-concurrency "$LAG_LOAD" --value-size "$VALUE_SIZE" --keys "$KEYS")
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["store"]="postgres"; print(json.dumps(r))' "$out" >> "$lag_results"
    fi
  done
fi

race_results=$work/race.jsonl; : > "$race_results"
if has "$SECTIONS" race; then
  two_ml="$(cluster_field ml endpoint 1),$(cluster_field ml endpoint 2)"
  for run in $(seq 1 "$RUNS"); do
    echo "race run $run" >&2
    race=(--increments "$RACE_INCREMENTS" -c "$RACE_CONCURRENCY")
    out=$("$compare" counter-race --target mimeo --certs "$(cluster_field ml certs)" --identity client-harness \
      --endpoint "$two_ml" "${race[@]}" --key "race-counter-$run")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["store"]="mimeo counter"; print(json.dumps(r))' "$out" >> "$race_results"
    out=$("$compare" counter-race --target mimeo --certs "$(cluster_field ml certs)" --identity client-harness \
      --endpoint "$two_ml" "${race[@]}" --register --key "race-register-$run")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["store"]="mimeo register (lww, read + write)"; print(json.dumps(r))' "$out" >> "$race_results"
    if $pg_on; then
      out=$("$compare" counter-race --target postgres --endpoint "127.0.0.1:$(pg_port 1),127.0.0.1:$(pg_port 2)" \
        "${race[@]}" --key "race-$run")
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["store"]="postgres v = v + 1 (last_update_wins)"; print(json.dumps(r))' "$out" >> "$race_results"
    fi
  done
fi
[ -n "${cluster_pid[ml]:-}" ] && stop_bench_cluster ml

# --- catch-up after a partition -------------------------------------------------
catchup_results=$work/catchup.jsonl; : > "$catchup_results"
# Every node's applied vector as JSON {node: {origin: writes applied}}.
ml_vectors() { # name
  mimeo_cli "$1" status --json | python3 -c '
import json, sys
out = {}
for s in json.load(sys.stdin):
    v = {s["node_id"]: s["last_position"]["index"]}
    v.update({p["node_id"]: p["match_index"] for p in s["peers"]})
    out[s["node_id"]] = v
print(json.dumps(out))'
}
ml_converged() { # name: true when every node applied the same writes of every origin
  ml_vectors "$1" | python3 -c 'import json,sys; v=list(json.load(sys.stdin).values()); sys.exit(0 if all(x == v[0] for x in v) else 1)'
}
if has "$SECTIONS" catchup; then
  start_ready_cluster ml-net "${ml_config[@]}"
  for run in $(seq 1 "$RUNS"); do
    echo "catch-up run $run" >&2
    wait_for "convergence before the partition" ml_converged ml-net
    cluster_cmd ml-net partition n1 n2,n3 >/dev/null
    # shellcheck disable=SC2046
    load=$("$compare" run $(mimeo_args ml-net) --spread -c "$CATCHUP_CONCURRENCY" --value-size "$VALUE_SIZE" \
      --keys "$KEYS" -d "${PARTITION_S}s" --seed "$run")
    vectors=$(ml_vectors ml-net)
    before=$(cluster_cmd ml-net stats)
    healed=$(date +%s.%N)
    cluster_cmd ml-net heal >/dev/null
    converged=""
    for _ in $(seq 1 2400); do  # 120 s at most
      if ml_converged ml-net; then converged=$(date +%s.%N); break; fi
      sleep 0.05
    done
    after=$(cluster_cmd ml-net stats)
    python3 - "$vectors" "$before" "$after" "$healed" "${converged:-}" "$VALUE_SIZE" "$load" >> "$catchup_results" <<'PY'
import json, sys
vectors, before, after = (json.loads(a) for a in sys.argv[1:4])
healed, converged, value_size, load = float(sys.argv[4]), sys.argv[5], int(sys.argv[6]), json.loads(sys.argv[7])
origins = sorted({o for v in vectors.values() for o in v})
latest = {o: max(v.get(o, 0) for v in vectors.values()) for o in origins}
missing = sum(latest[o] - v.get(o, 0) for v in vectors.values() for o in origins)
write_bytes = len("bench-") + 10 + value_size  # the workload's keys: bench-%010d
sent = sum(a["bytes"] for a in after["links"]) - sum(b["bytes"] for b in before["links"])
print(json.dumps({
    "writes_during_partition": load["writes"], "missing_writes": missing,
    "missing_bytes": missing * write_bytes, "sent_bytes": sent,
    "ratio": sent / max(missing * write_bytes, 1),
    "converge_s": float(converged) - healed if converged else None,
}))
PY
    tail -1 "$catchup_results" >&2
  done
  stop_bench_cluster ml-net
fi

# --- tables ----------------------------------------------------------------------
if has "$SECTIONS" regions; then
  echo "### Three regions ($REGION_DELAY_MS ms one way between nodes), write latency"
  echo
  median_table standalone '^(ml-local|lf-quorum|standalone)$' | grep -v '| throughput |' || true
  echo
fi
if has "$SECTIONS" throughput; then
  echo "### Throughput, every node taking writes (loopback, direct links)"
  echo
  python3 - "$results" <<'PY'
import json, statistics, sys
med = statistics.median
rows = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l).get("workload") == "throughput"]
groups = {}
for r in rows:
    groups.setdefault((r["c"], r["store"]), []).append(r)
print("| concurrency | store | runs | ops/s (median) | min–max | p50 µs | p99 µs | vs lf-quorum | vs etcd |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for (c, store), rs in sorted(groups.items()):
    t = [r["throughput"] for r in rs]
    ratio = lambda base: f"{med(t) / med([r['throughput'] for r in groups[(c, base)]]):.2f}×" if (c, base) in groups else ""
    print(f"| {c} | {store} | {len(rs)} | {med(t):,.0f} | {min(t):,.0f}–{max(t):,.0f} "
          f"| {med([r['latency']['p50_us'] for r in rs]):,.0f} | {med([r['latency']['p99_us'] for r in rs]):,.0f} "
          f"| {ratio('lf-quorum')} | {ratio('etcd')} |")
errors = [(r["store"], r["c"], r.get("failed", 0) + r.get("unknown", 0)) for r in rows if r.get("failed", 0) + r.get("unknown", 0)]
if errors:
    print("\nruns with errors (store, concurrency, failed+unknown):", errors)
PY
  echo
fi
if has "$SECTIONS" lag; then
  echo "### Replication lag under load (ack at n1 -> visible on both peers; client-side probes)"
  echo
  python3 - "$lag_results" <<'PY'
import json, statistics, sys
med = statistics.median
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| store | runs | probes (median) | lag p50 ms | lag p99 ms | max ms | unseen | load ops/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for store in dict.fromkeys(r["store"] for r in rows):
    rs = [r for r in rows if r["store"] == store]
    e = lambda k: med([r["lag_every_peer"][k] for r in rs])
    load = [r["load"]["throughput"] for r in rs if r.get("load")]
    print(f"| {store} | {len(rs)} | {med([r['probes'] for r in rs]):,.0f} | {e('p50_ms'):.2f} | {e('p99_ms'):.2f} "
          f"| {e('max_ms'):.2f} | {sum(r['unseen_on_a_peer'] for r in rs)} | {med(load) if load else 0:,.0f} |")
PY
  echo
fi
if has "$SECTIONS" catchup; then
  echo "### Catch-up after a ${PARTITION_S} s partition (n1 | n2, n3), writes on both sides"
  echo
  python3 - "$catchup_results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| run | writes in the partition | missing writes (all nodes) | missing bytes | bytes sent heal → converged | sent / missing | converge s |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for i, r in enumerate(rows, 1):
    cs = f"{r['converge_s']:.2f}" if r["converge_s"] is not None else "not within 120 s"
    print(f"| {i} | {r['writes_during_partition']:,} | {r['missing_writes']:,} | {r['missing_bytes']:,} | {r['sent_bytes']:,} | {r['ratio']:.2f}× | {cs} |")
if rows:
    print(f"\nmedian sent / missing: {statistics.median(r['ratio'] for r in rows):.2f}× (target ≤ 1.2×)")
PY
  echo
fi
if has "$SECTIONS" race; then
  echo "### Two nodes increment one key concurrently ($RACE_INCREMENTS each, $RACE_CONCURRENCY at a time per node)"
  echo
  python3 - "$race_results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| store | acknowledged | unknown | final (per node) | converged | lost | above bounds |")
print("|---|---:|---:|---|---|---:|---:|")
for r in rows:
    print(f"| {r['store']} | {r['acknowledged']:,} | {r['unknown']} | {r['final_per_node']} | {r['converged']} | {r['lost']:,} | {r['above_bounds']} |")
PY
fi
echo "raw results: $results $lag_results $catchup_results $race_results" >&2
