#!/usr/bin/env bash
# Replicated writes: Mimeo leader-follower (3 nodes, acks = quorum,
# fsync = batch) against etcd 3.4 (3 members, its defaults), all on 127.0.0.1.
# Measures, in one run:
#
# 1. Quorum-write throughput and p50/p99 at each concurrency: unique-free
#    writes of VALUE_SIZE-byte values to KEYS keys (`bench-compare run`,
#    writes only), DURATION each, RUNS times round-robin (run, then
#    concurrency, then store), medians, ratios to etcd.
#    Around each Mimeo run the script scrapes the nodes' /metrics and
#    prints where a write's time went, as means: the client's latency, the
#    leader's (from request decoded to answered), each append's trip from
#    the leader to a follower's durable answer, and each node's fsync and
#    log write (`mimeo_request_duration_seconds`,
#    `mimeo_follower_replication_seconds`, `mimeo_storage_fsync_seconds`,
#    `mimeo_storage_write_seconds`).
#
# 2. The physical floor of one write at concurrency 1:
#    - one append + fdatasync of VALUE_SIZE bytes (`bench-compare fsync-rate`,
#      median; zeros written ahead of the records, as Mimeo's log does, so
#      the fdatasync writes data blocks only: the cheapest fsync this disk
#      offers), alone, and with three such loops at once (the three
#      replicas of a write share this machine's one disk), and
#    - one loopback request round trip through Mimeo's own stack: gets of a
#      missing key against a separate, empty standalone Mimeo node at
#      concurrency 1 (`bench-compare run --read-fraction 1`, median): QUIC +
#      TLS framing + a map lookup, no replication and no disk.
#    A quorum write needs at least the client's round trip to the leader, one
#    round trip leader -> follower and one fsync (the leader's and the
#    follower's run in parallel), so fsync + 2 round trips is its floor;
#    the table prints fsync + 1 and fsync + 2 round trips.
#
# 3. Failover unavailability, KILLS times per system, median:
#    `bench-compare failover` runs FAILOVER_CONCURRENCY writers of fresh keys
#    against all three members for FAILOVER_DURATION and, at KILL_AFTER,
#    itself runs `kill -KILL <leader pid>` (the leader is found just before
#    the run: `mimeo status --json` for Mimeo, `etcdctl endpoint status -w
#    json` for etcd). It timestamps every acknowledgement (send and ack
#    instants, one monotonic clock in the load generator) and reports
#      - kill -> first ack: from the moment the kill command returned to the
#        first acknowledgement of a write *sent after* the kill (so an answer
#        the old leader had sent before dying cannot count), and
#      - longest gap: the longest interval with no acknowledgement at all,
#        from 1 s before the kill to the end of the run.
#    Both include the client's own recovery: a request in flight to the dead
#    leader fails once the client notices the death (Mimeo's client: its
#    probe of a node 50 ms late to answer is refused, or else 300 ms of QUIC
#    silence, as UDP brings no reset; etcd's gRPC connection sees the TCP
#    reset at once), and the client must then find the new leader. After each kill the
#    killed member is restarted on its data directory and the script waits
#    until all three answer, every node sees both its peers connected and
#    the followers have caught up (Mimeo) / all three are healthy (etcd)
#    before the next kill.
#    Systems: mimeo (heartbeat 50 ms, election timeout 300-600 ms, leader
#    probes on: its defaults; the followers' probes of the dead leader's
#    address are refused by the host, so they elect at once), mimeo-no-probe
#    (the same with `probe_leader = false`: what a paused, partitioned or
#    powered-off leader costs, the election timeout), etcd (defaults:
#    heartbeat 100 ms, election 1000 ms) and etcd-tuned
#    (--heartbeat-interval 50 --election-timeout 300).
#
#    With FAILOVER_FAULT=pause the leader is not killed but stopped
#    (SIGSTOP) and resumed PAUSE_FOR seconds later (SIGCONT), the next fault
#    coming once it has rejoined: its port stays bound, so no probe is
#    refused and both systems fall back on their timeouts.
#
#   bash scripts/bench-lf.sh     # RUNS=3 DURATION=10s CONCURRENCY="1 16 64" KILLS=5
#   FAILOVER_FAULT=pause CONCURRENCY="" bash scripts/bench-lf.sh   # failover from a paused leader only
#   MIMEO_FSYNC=never CONCURRENCY=1 FAILOVER_SYSTEMS="" bash scripts/bench-lf.sh
#   KEYS=1000000 CONCURRENCY=64 DURATION=20s RUNS=1 FAILOVER_SYSTEMS="" bash scripts/bench-lf.sh
#
# Installs etcd-server, etcd-client and protobuf-compiler from Debian's
# packages if they are missing. Everything listens on 127.0.0.1 only, and
# every process the script starts is killed when it exits; the systems'
# data files go too (KEEP_DATA=1 keeps them), the logs and raw results stay
# in the scratch directory it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY-"1 16 64"}  # empty: skip the throughput runs
VALUE_SIZE=${VALUE_SIZE:-256}
KEYS=${KEYS:-10000}  # a large state: KEYS=1000000 DURATION=20s (snapshots then cost)
KILLS=${KILLS:-5}
FAILOVER_CONCURRENCY=${FAILOVER_CONCURRENCY:-16}
FAILOVER_DURATION=${FAILOVER_DURATION:-10s}
KILL_AFTER=${KILL_AFTER:-3s}
FAILOVER_SYSTEMS=${FAILOVER_SYSTEMS-"mimeo mimeo-no-probe etcd etcd-tuned"}  # empty: skip failover
# kill: SIGKILL the leader, restart it after the run. pause: SIGSTOP it and
# SIGCONT it PAUSE_FOR later (a stalled process, a GC or VM pause: its port
# stays bound, so nothing refuses a probe and only timeouts can tell).
FAILOVER_FAULT=${FAILOVER_FAULT:-kill}
PAUSE_FOR=${PAUSE_FOR:-5}  # seconds
# Mimeo's settings (to take a write's latency apart: MIMEO_FSYNC=never shows
# what is not the disk, MIMEO_ACKS=async what is not the follower).
MIMEO_FSYNC=${MIMEO_FSYNC:-batch}
MIMEO_ACKS=${MIMEO_ACKS:-quorum}

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the etcd it installs; this script runs its own.
(systemctl stop etcd || service etcd stop) >/dev/null 2>&1 || true

cargo build --release --locked -p mimeo-node -p bench-compare
mimeo=$PWD/target/release/mimeo
compare=$PWD/target/release/bench-compare
export ETCDCTL_API=3

work=$(mktemp -d /var/tmp/mimeo-bench-lf.XXXXXX)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh  # the working directory is the repository root

# --- Mimeo: a 3-node leader-follower cluster --------------------------------
mimeo_ids=(n1 n2 n3)
declare -A mimeo_port=([n1]=17601 [n2]=17602 [n3]=17603) mimeo_metrics_port=([n1]=17611 [n2]=17612 [n3]=17613) mimeo_pid=()
mimeo_endpoints=127.0.0.1:17601,127.0.0.1:17602,127.0.0.1:17603
mimeo_dir=$work/mimeo-lf

start_mimeo_node() { # id
  local id=$1
  RUST_LOG=warn "$mimeo" serve --config "$mimeo_dir/$id.toml" >>"$mimeo_dir/$id.log" 2>&1 &
  mimeo_pid[$id]=$!; pids+=("$!")
}

mimeo_statuses() { # prints one JSON status per node (or an error object)
  for id in "${mimeo_ids[@]}"; do
    "$mimeo" --certs "$mimeo_dir/certs" --node "127.0.0.1:${mimeo_port[$id]}" status --json 2>/dev/null \
      || echo '[{"error":"unreachable"}]'
  done
}

# The node id of the leader, if every node answers and sees both its peers
# connected, and the followers have caught up with the leader (a restarted
# node replays what it missed before it counts); fails otherwise.
mimeo_leader() {
  mimeo_statuses | python3 -c '
import json, sys
text = sys.stdin.read()
decoder, statuses, at = json.JSONDecoder(), [], 0
while at < len(text):
    if text[at].isspace(): at += 1; continue
    value, at = decoder.raw_decode(text, at); statuses.extend(value)
if len(statuses) != 3 or any("error" in s for s in statuses): sys.exit(1)
leaders = [s for s in statuses if str(s["role"]).lower() == "leader"]
if len(leaders) != 1 or not all(p["connected"] for s in statuses for p in s["peers"]): sys.exit(1)
if any(p["lag_entries"] > 0 for p in leaders[0]["peers"]): sys.exit(1)
print(leaders[0]["node_id"])'
}

start_mimeo_cluster() { # [more [replication] lines]
  mkdir -p "$mimeo_dir"
  [ -d "$mimeo_dir/certs" ] || "$mimeo" certs init --dir "$mimeo_dir/certs" --nodes n1,n2,n3 >/dev/null
  for id in "${mimeo_ids[@]}"; do
    {
      printf 'node_id = "%s"\nlisten = "127.0.0.1:%s"\ndata_dir = "%s"\nmode = "leader-follower"\n' \
        "$id" "${mimeo_port[$id]}" "$mimeo_dir/data/$id"
      printf 'metrics_listen = "127.0.0.1:%s"\n' "${mimeo_metrics_port[$id]}"
      printf '[tls]\ndir = "%s"\n[storage]\nfsync = "%s"\n[replication]\nbootstrap = true\nacks = "%s"\n%s' \
        "$mimeo_dir/certs" "$MIMEO_FSYNC" "$MIMEO_ACKS" "${1:-}"
      for peer in "${mimeo_ids[@]}"; do
        [ "$peer" = "$id" ] && continue
        printf '[[replication.peers]]\nid = "%s"\naddr = "127.0.0.1:%s"\n' "$peer" "${mimeo_port[$peer]}"
      done
    } > "$mimeo_dir/$id.toml"
    start_mimeo_node "$id"
  done
  wait_for "the mimeo cluster (every link up, followers caught up)" mimeo_leader
}

# One JSON object: per node, the sum (seconds) and count of its fsyncs,
# log writes and acknowledged puts, from its /metrics.
mimeo_timings() {
  local id nodes=()
  for id in "${mimeo_ids[@]}"; do nodes+=("$id=${mimeo_metrics_port[$id]}"); done
  python3 - "${nodes[@]}" <<'PY'
import json, re, sys, urllib.request
ids, ports = zip(*(arg.split("=") for arg in sys.argv[1:]))
wanted = {"fsync": ("mimeo_storage_fsync_seconds", ""),
          "write": ("mimeo_storage_write_seconds", ""),
          "put": ("mimeo_request_duration_seconds", ',op="put",outcome="ok"')}
out = {}
for node, port in zip(ids, ports):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    timings = {}
    for key, (name, labels) in wanted.items():
        for part in ("sum", "count"):
            m = re.search(rf'^{name}_{part}{{node="{node}"{re.escape(labels)}}} (\S+)$', text, re.M)
            timings[f"{key}_{part}"] = float(m.group(1)) if m else 0.0
    for m in re.finditer(rf'^mimeo_follower_replication_seconds_(sum|count){{node="{node}",follower="([^"]+)"}} (\S+)$', text, re.M):
        timings[f"to_{m.group(2)}_{m.group(1)}"] = float(m.group(3))
    out[node] = timings
print(json.dumps(out))
PY
}

# Records, for a Mimeo run at concurrency $2 with result $3 and the
# timings $4 (before) and $5 (after), where its writes' time went.
record_breakdown() { # leader concurrency result before after
  python3 - "$@" >> "$work/breakdown.jsonl" <<'PY'
import json, sys
leader, c, result, before, after = sys.argv[1], int(sys.argv[2]), *map(json.loads, sys.argv[3:6])
def count(node, key):
    return after[node].get(key + "_count", 0) - before[node].get(key + "_count", 0)
def mean_us(node, key):
    n = count(node, key)
    # None when nothing was timed (or the node restarted and its counts began again).
    return (after[node][key + "_sum"] - before[node].get(key + "_sum", 0)) / n * 1e6 if n > 0 else None
followers = sorted(n for n in after if n != leader)
leader_put = mean_us(leader, "put")
print(json.dumps({
    "c": c, "client_mean_us": result["latency"]["mean_us"],
    "leader_put_mean_us": leader_put,
    "outside_leader_us": result["latency"]["mean_us"] - leader_put if leader_put is not None else None,
    "leader_fsync_mean_us": mean_us(leader, "fsync"),
    "leader_write_mean_us": mean_us(leader, "write"),
    "follower_fsync_mean_us": [mean_us(f, "fsync") for f in followers],
    "follower_write_mean_us": [mean_us(f, "write") for f in followers],
    "replication_mean_us": [mean_us(leader, f"to_{f}") for f in followers],
    "puts_per_leader_fsync": count(leader, "put") / max(count(leader, "fsync"), 1),
}))
PY
}

stop_mimeo_cluster() {
  for id in "${mimeo_ids[@]}"; do kill -TERM "${mimeo_pid[$id]}" 2>/dev/null || true; done
  for id in "${mimeo_ids[@]}"; do wait "${mimeo_pid[$id]}" 2>/dev/null || true; done
}

# etcd's 3-member clusters: start_etcd_cluster and friends in bench-lib.sh.

# --- 1. quorum-write throughput ---------------------------------------------
start_mimeo_cluster
start_etcd_cluster etcd
for run in $(seq 1 "$RUNS"); do
  for c in $CONCURRENCY; do
    echo "mimeo-lf c=$c run $run" >&2
    wait_for "the mimeo cluster (every link up, followers caught up)" mimeo_leader
    leader=$(mimeo_leader); before=$(mimeo_timings)
    out=$("$compare" run --target mimeo --endpoint "$mimeo_endpoints" --certs "$mimeo_dir/certs" \
      -c "$c" --value-size "$VALUE_SIZE" --keys "$KEYS" -d "$DURATION" --seed "$run")
    record mimeo-lf "$c" "$out"
    after=$(mimeo_timings)
    wait_for "the mimeo cluster (every link up, followers caught up)" mimeo_leader
    if [ "$(mimeo_leader)" = "$leader" ]; then
      record_breakdown "$leader" "$c" "$out" "$before" "$after"
    else
      echo "  the leader changed during the run: no breakdown for it" >&2
    fi
    echo "etcd c=$c run $run" >&2
    record etcd "$c" "$("$compare" run --target etcd --endpoint "$(etcd_endpoints etcd)" \
      -c "$c" --value-size "$VALUE_SIZE" --keys "$KEYS" -d "$DURATION" --seed "$run")"
  done
done

# --- 2. the floor at concurrency 1 ------------------------------------------
mkdir -p "$work/standalone"
"$mimeo" certs init --dir "$work/standalone/certs" --nodes n1 >/dev/null
printf 'node_id = "n1"\nlisten = "127.0.0.1:17609"\ndata_dir = "%s/standalone/data"\n[storage]\nfsync = "batch"\n' "$work" \
  > "$work/standalone/node.toml"
RUST_LOG=warn "$mimeo" serve --config "$work/standalone/node.toml" >"$work/standalone/node.log" 2>&1 & pids+=("$!")
wait_for "standalone mimeo" "$mimeo" --certs "$work/standalone/certs" --node 127.0.0.1:17609 status
for run in $(seq 1 "$RUNS"); do
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"store":"floor-fsync","c":1,"throughput":r["fsyncs_per_s"],"latency":{"p50_us":r["median_us"],"p99_us":r["p99_us"]}}))' \
    "$("$compare" fsync-rate --dir "$work" --duration 5s --bytes "$VALUE_SIZE")" >> "$results"
  # Three at once, each on its own file, as three replicas on one disk.
  loops=()
  for i in 1 2 3; do
    "$compare" fsync-rate --dir "$work" --duration 5s --bytes "$VALUE_SIZE" > "$work/fsync3.$i" & loops+=("$!")
  done
  wait "${loops[@]}"
  python3 -c 'import json,statistics,sys; rs=[json.load(open(f)) for f in sys.argv[1:]]; print(json.dumps({"store":"floor-fsync-3","c":1,"throughput":sum(r["fsyncs_per_s"] for r in rs),"latency":{"p50_us":statistics.median(r["median_us"] for r in rs),"p99_us":max(r["p99_us"] for r in rs)}}))' \
    "$work"/fsync3.{1,2,3} >> "$results"
  # The workload's keys are never written on this node: every get misses.
  record floor-rtt 1 "$("$compare" run --target mimeo --endpoint 127.0.0.1:17609 --certs "$work/standalone/certs" \
    -c 1 --read-fraction 1 -d 5s --seed "$run")"
done

# --- 3. failover ------------------------------------------------------------
failover_results=$work/failover.jsonl
: > "$failover_results"
for system in $FAILOVER_SYSTEMS; do
  case $system in
    mimeo) ;;
    # The same cluster and data, restarted without leader probes.
    mimeo-no-probe) stop_mimeo_cluster; start_mimeo_cluster $'probe_leader = false\n' ;;
    etcd) ;;
    etcd-tuned) start_etcd_cluster etcd-tuned ;;
    *) echo "unknown failover system $system" >&2; exit 64 ;;
  esac
  case $FAILOVER_FAULT in
    kill|pause) ;;
    *) echo "FAILOVER_FAULT must be kill or pause, not '$FAILOVER_FAULT'" >&2; exit 64 ;;
  esac
  for kill in $(seq 1 "$KILLS"); do
    if [ "${system%%-*}" = mimeo ]; then
      wait_for "the mimeo cluster (every link up, followers caught up)" mimeo_leader
      leader=$(mimeo_leader); victim=${mimeo_pid[$leader]}
      args=(--target mimeo --endpoint "$mimeo_endpoints" --certs "$mimeo_dir/certs")
    else
      wait_for "etcd cluster $system" etcd_healthy "$system"
      leader=$(etcd_leader "$system"); victim=${etcd_pid[$system-$leader]}
      args=(--target etcd --endpoint "$(etcd_endpoints "$system")")
    fi
    echo "failover $system $FAILOVER_FAULT $kill: leader $leader (pid $victim)" >&2
    if [ "$FAILOVER_FAULT" = kill ]; then
      fault="kill -KILL $victim"
    else
      # The resume runs in the background, so the load generator times the
      # recovery while the leader is still stopped.
      fault="kill -STOP $victim; (sleep $PAUSE_FOR; kill -CONT $victim) >/dev/null 2>&1 &"
    fi
    out=$("$compare" failover "${args[@]}" -c "$FAILOVER_CONCURRENCY" --value-size "$VALUE_SIZE" \
      -d "$FAILOVER_DURATION" --kill-after "$KILL_AFTER" --kill-command "$fault")
    python3 -c 'import json,sys; r=json.loads(sys.argv[2]); r["system"]=sys.argv[1]; print(json.dumps(r))' "$system" "$out" >> "$failover_results"
    echo "  $out" >&2
    if [ "$FAILOVER_FAULT" = kill ]; then
      wait "$victim" 2>/dev/null || true
      if [ "${system%%-*}" = mimeo ]; then start_mimeo_node "$leader"; else start_etcd_member "$system" "$leader"; fi
    else
      kill -CONT "$victim" 2>/dev/null || true  # in case the run was shorter than the pause
    fi
  done
done

# --- tables -----------------------------------------------------------------
touch "$work/breakdown.jsonl"
python3 - "$results" "$failover_results" "$FAILOVER_FAULT" "$PAUSE_FOR" "$work/breakdown.jsonl" <<'PY'
import json, statistics, sys
med = statistics.median
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["store"], r["c"]), []).append(r)
etcd = {c: med([r["throughput"] for r in rs]) for (s, c), rs in groups.items() if s == "etcd"}
etcd_p50 = {c: med([r["latency"]["p50_us"] for r in rs]) for (s, c), rs in groups.items() if s == "etcd"}
print("### Quorum writes, 3 nodes on 127.0.0.1\n")
print("| store | concurrency | runs | throughput (ops/s, median) | min–max | p50 µs | p99 µs | throughput vs etcd | p50 vs etcd |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (store, c), rs in sorted(groups.items()):
    if store.startswith("floor"):
        continue
    t = [r["throughput"] for r in rs]
    p50 = med([r["latency"]["p50_us"] for r in rs]); p99 = med([r["latency"]["p99_us"] for r in rs])
    print(f"| {store} | {c} | {len(rs)} | {med(t):,.0f} | {min(t):,.0f}–{max(t):,.0f} | {p50:,.0f} | {p99:,.0f} "
          f"| {med(t) / etcd[c]:.2f}× | {p50 / etcd_p50[c]:.2f}× |")

fsync = med([r["latency"]["p50_us"] for r in groups[("floor-fsync", 1)]])
fsync3 = med([r["latency"]["p50_us"] for r in groups[("floor-fsync-3", 1)]])
rtt = med([r["latency"]["p50_us"] for r in groups[("floor-rtt", 1)]])
print("\n### Floor at concurrency 1 (medians of per-run p50s)\n")
print("| component | µs | as ops/s |")
print("|---|---:|---:|")
for name, us in [("one append + fdatasync (256 B, into zeros written ahead)", fsync),
                 ("one loopback request round trip (get of a missing key, standalone Mimeo)", rtt),
                 ("fsync + 1 round trip", fsync + rtt),
                 ("fsync + 2 round trips (client→leader, leader→follower)", fsync + 2 * rtt),
                 ("one append + fdatasync with two more such loops on the same disk (three replicas)", fsync3),
                 ("that fsync + 2 round trips", fsync3 + 2 * rtt)]:
    print(f"| {name} | {us:,.0f} | {1e6 / us:,.0f} |")
p50s = {}
for store in ("mimeo-lf", "etcd"):
    if (store, 1) in groups:
        p50s[store] = med([r["latency"]["p50_us"] for r in groups[(store, 1)]])
        print(f"| {store} quorum write p50, concurrency 1 | {p50s[store]:,.0f} | {1e6 / p50s[store]:,.0f} |")
if "mimeo-lf" in p50s:
    print(f"\nmimeo-lf p50 at concurrency 1 / (fsync + 1 round trip): {p50s['mimeo-lf'] / (fsync + rtt):.2f}×; "
          f"/ (fsync + 2 round trips): {p50s['mimeo-lf'] / (fsync + 2 * rtt):.2f}×; "
          f"/ (three-replica fsync + 2 round trips): {p50s['mimeo-lf'] / (fsync3 + 2 * rtt):.2f}×")

breakdown = [json.loads(l) for l in open(sys.argv[5])]
if breakdown:
    print("\n### Where a Mimeo write's time went (means, from the nodes' /metrics; medians of the runs)\n")
    print("| concurrency | runs | client µs | leader, decoded → answered µs | client − leader µs | leader fsync µs | append → follower durable µs | follower fsyncs µs | leader write µs | follower writes µs | puts per leader fsync |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def m(values):
        values = [v for v in values if v is not None]
        return med(values) if values else float("nan")
    for c in sorted({b["c"] for b in breakdown}):
        bs = [b for b in breakdown if b["c"] == c]
        client, leader = m([b["client_mean_us"] for b in bs]), m([b["leader_put_mean_us"] for b in bs])
        outside = m([b["outside_leader_us"] for b in bs])
        followers = lambda key: ", ".join(f"{m([b[key][i] for b in bs]):,.0f}" for i in range(2))
        print(f"| {c} | {len(bs)} | {client:,.0f} | {leader:,.0f} | {outside:,.0f} "
              f"| {m([b['leader_fsync_mean_us'] for b in bs]):,.0f} | {followers('replication_mean_us')} "
              f"| {followers('follower_fsync_mean_us')} "
              f"| {m([b['leader_write_mean_us'] for b in bs]):,.0f} | {followers('follower_write_mean_us')} "
              f"| {m([b['puts_per_leader_fsync'] for b in bs]):,.1f} |")

fail = [json.loads(l) for l in open(sys.argv[2])]
if fail:
    fault = "SIGKILL the leader" if sys.argv[3] == "kill" else f"SIGSTOP the leader for {sys.argv[4]} s"
    print(f"\n### Failover: {fault} under 16 concurrent writers\n")
    print("| system | faults | fault → first ack, ms (median) | min–max | longest ack gap, ms (median) | min–max | failed writes (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    first_median = {}
    for system in dict.fromkeys(r["system"] for r in fail):
        rs = [r for r in fail if r["system"] == system]
        first = [r["kill_to_first_ack_ms"] for r in rs if r["kill_to_first_ack_ms"] is not None]
        gap = [r["longest_gap_ms"] for r in rs]
        never = len(rs) - len(first)
        if first and not never:
            first_median[system] = med(first)
        first_cell = f"{med(first):,.0f}" if first else "—"
        first_range = f"{min(first):,.0f}–{max(first):,.0f}" if first else "—"
        note = f" ({never} runs with no ack after the kill)" if never else ""
        print(f"| {system} | {len(rs)} | {first_cell}{note} | {first_range} | {med(gap):,.0f} | {min(gap):,.0f}–{max(gap):,.0f} "
              f"| {med([r['errors'] for r in rs]):,.0f} |")
    for mimeo in ("mimeo", "mimeo-no-probe"):
        for peer in ("etcd", "etcd-tuned"):
            if mimeo in first_median and peer in first_median:
                print(f"\n{mimeo} / {peer} median fault → first ack: {first_median[mimeo] / first_median[peer]:.2f}×")
errors = [(r["store"], r["c"], r.get("failed", 0) + r.get("unknown", 0)) for r in rows if r.get("failed", 0) + r.get("unknown", 0)]
if errors:
    print("\nthroughput runs with errors (store, concurrency, failed+unknown):", errors)
PY
echo "raw results: $results $failover_results" >&2
