# Shared by the benchmark scripts (source it after setting $work): the
# results file, process clean-up on exit, and bounded waits.
# shellcheck shell=bash

results=$work/results.jsonl
pids=()
# Commands run first on exit (e.g. stopping PostgreSQL, whose postmaster
# is not a child of the script when started through runuser).
exit_hooks=()

# SIGKILLs every process the script started (recorded in $pids), then
# removes the systems' data (every file over 1 MiB in $work but logs and
# results) unless KEEP_DATA=1: a large-state run leaves gigabytes, and
# repeated runs would fill the disk.
#
# Only the script's own shell cleans up: a child bash forked for a
# background command and signalled before it execs (stop_mimeo_cluster can
# TERM a node that was started a moment ago) runs the inherited EXIT trap,
# and once deleted the data of the nodes still running.
cleanup() {
  [ "$BASHPID" = "$$" ] || return 0
  local hook name
  for hook in "${exit_hooks[@]}"; do eval "$hook" >/dev/null 2>&1 || true; done
  # Bench clusters stop their nodes on end of input; SIGKILL would leave
  # the nodes running.
  for name in "${!cluster_pid[@]}"; do stop_bench_cluster "$name"; done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP_DATA:-0}" != 1 ]; then
    # (Mimeo's log segments are seg-*.log; the processes' logs are *.log.)
    find "$work" -type f -size +1M \( -name 'seg-*' -o ! -name '*.log' \) ! -name '*.jsonl' \
      -delete 2>/dev/null || true
  fi
}
trap cleanup EXIT
echo "scratch directory: $work (on $(df --output=target "$work" | tail -1))" >&2

record() { # store concurrency json [workload]: appends one result line
  python3 -c 'import json,sys; r=json.loads(sys.argv[3]); r["store"]=sys.argv[1]; r["c"]=int(sys.argv[2]); r["workload"]=sys.argv[4] or "writes"; print(json.dumps(r))' "$1" "$2" "$3" "${4:-}" >> "$results"
}

wait_for() { # description command...: polls for up to 30 s, then fails the script
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up within 30 s" >&2; exit 1
}

# --- clusters of `mimeo-harness bench-cluster` -------------------------------
# A cluster NAME runs `mimeo-harness bench-cluster` with its stdin and stdout
# on two FIFOs held by this script: cluster_cmd sends it a command and reads
# its answer; closing the input stops its nodes (stop_bench_cluster, and
# cleanup on exit). Its first line (endpoints, certificates, metrics
# addresses) is kept in cluster_info[NAME]. Needs $harness (the binary).
declare -A cluster_pid=() cluster_in=() cluster_out=() cluster_info=()

start_bench_cluster() { # name bench-cluster-args...
  local name=$1; shift
  local dir=$work/cluster-$name in out
  mkdir -p "$work/fifo"
  in=$work/fifo/$name.in; out=$work/fifo/$name.out
  mkfifo "$in" "$out"
  RUST_LOG=warn MIMEO_NODE_LOG=warn "$harness" bench-cluster --dir "$dir" "$@" <"$in" >"$out" 2>>"$work/cluster-$name.log" &
  cluster_pid[$name]=$!
  exec {fd}>"$in"; cluster_in[$name]=$fd
  exec {fd}<"$out"; cluster_out[$name]=$fd
  local line
  if ! read -r -t 90 -u "${cluster_out[$name]}" line || [ -z "$line" ]; then
    echo "bench cluster $name did not start within 90 s; $work/cluster-$name.log ends with:" >&2
    tail -20 "$work/cluster-$name.log" >&2
    exit 1
  fi
  cluster_info[$name]=$line
}

# Prints a field of the cluster's first line: endpoints, certs, or
# "metrics N" (the metrics address of node nN), "endpoint N" (its client address).
cluster_field() { # name field [n]
  python3 -c '
import json, sys
info = json.loads(sys.argv[1])
if sys.argv[2] in ("metrics", "endpoint"):
    node = info["nodes"][int(sys.argv[3]) - 1]
    print(node["metrics" if sys.argv[2] == "metrics" else "addr"])
else:
    print(info[sys.argv[2]])' "${cluster_info[$1]}" "$2" "${3:-}"
}

# Sends one command; prints the JSON answer; fails the script on an error.
cluster_cmd() { # name command...
  local name=$1 reply; shift
  echo "$*" >&"${cluster_in[$name]}"
  if ! read -r -t 120 -u "${cluster_out[$name]}" reply; then
    echo "bench cluster $name did not answer '$*' within 120 s" >&2; exit 1
  fi
  case $reply in
    *'"ok":true'*) printf '%s\n' "$reply" ;;
    *) echo "bench cluster $name: $reply" >&2; exit 1 ;;
  esac
}

# Closes the cluster's input and sends it SIGTERM (processes started later
# inherit the FIFO, so the end of input may never come); it stops its
# nodes (SIGTERM, then SIGKILL after 10 s) and exits. Waits at most 30 s,
# then SIGKILL.
stop_bench_cluster() { # name
  local name=$1 pid=${cluster_pid[$1]:-}
  [ -n "$pid" ] || return 0
  local fd=${cluster_in[$name]}
  exec {fd}>&- || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  fd=${cluster_out[$name]}
  exec {fd}<&- || true
  unset "cluster_pid[$name]"
}

# The sum of a metric's samples over the given nodes' /metrics, optionally
# only the samples whose labels contain FILTER (e.g. owner="n5").
metric_sum() { # name filter addr...
  python3 - "$@" <<'PY'
import re, sys, urllib.request
name, flt, addrs = sys.argv[1], sys.argv[2], sys.argv[3:]
total = 0.0
for addr in addrs:
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        if flt in (m.group(1) or ""):
            total += float(m.group(2))
print(f"{total:g}")
PY
}

# --- etcd: 3-member clusters ----------------------------------------------------
# A cluster NAME (registered in etcd_base) has members NAME-1..3 on client
# ports BASE+1..3 and peer ports BASE+11..13.
declare -A etcd_base=([etcd]=22370 [etcd-tuned]=23370) etcd_extra=([etcd]="" [etcd-tuned]="--heartbeat-interval 50 --election-timeout 300")
declare -A etcd_pid=()

etcd_endpoints() { # cluster
  local base=${etcd_base[$1]}
  echo "127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
}

start_etcd_member() { # cluster index
  local cluster=$1 i=$2 base=${etcd_base[$1]} initial="" j
  for j in 1 2 3; do initial+="${initial:+,}$cluster-$j=http://127.0.0.1:$((base + 10 + j))"; done
  # shellcheck disable=SC2086 # etcd_extra holds separate flags
  etcd --name "$cluster-$i" --data-dir "$work/$cluster/$i" \
    --listen-client-urls "http://127.0.0.1:$((base + i))" --advertise-client-urls "http://127.0.0.1:$((base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 10 + i))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + i))" \
    --initial-cluster "$initial" --initial-cluster-token "$cluster" --initial-cluster-state new \
    ${etcd_extra[$cluster]} >>"$work/$cluster-$i.log" 2>&1 &
  etcd_pid[$cluster-$i]=$!; pids+=("$!")
}

etcd_healthy() { # cluster
  ETCDCTL_API=3 etcdctl --endpoints "$(etcd_endpoints "$1")" --command-timeout 2s endpoint health
}

# The member index (1..3) of the leader.
etcd_leader() { # cluster
  ETCDCTL_API=3 etcdctl --endpoints "$(etcd_endpoints "$1")" --command-timeout 2s endpoint status -w json | python3 -c '
import json, sys
for s in json.load(sys.stdin):
    if s["Status"]["header"]["member_id"] == s["Status"]["leader"]:
        print(int(s["Endpoint"].rsplit(":", 1)[1]) - int(sys.argv[1])); break
else: sys.exit(1)' "${etcd_base[$1]}"
}

start_etcd_cluster() { # cluster
  local i
  mkdir -p "$work/$1"
  for i in 1 2 3; do start_etcd_member "$1" "$i"; done
  wait_for "etcd cluster $1" etcd_healthy "$1"
  wait_for "a leader of etcd cluster $1" etcd_leader "$1"
}

# Installs the Debian packages named for missing commands ("command:package").
need_commands() { # command:package...
  local need=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}"); done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Prints a median table of results.jsonl rows: one line per (store, c,
# workload), with ratios to the store named BASE at the same concurrency
# and workload (none when BASE is empty).
median_table() { # base [stores filter regex]
  python3 - "$results" "${1:-}" "${2:-.}" <<'PY'
import json, re, statistics, sys
med = statistics.median
rows = [json.loads(l) for l in open(sys.argv[1])]
base, keep = sys.argv[2], re.compile(sys.argv[3])
groups = {}
for r in rows:
    if keep.search(r["store"]):
        groups.setdefault((r.get("workload", "writes"), r["store"], r["c"]), []).append(r)
print(f"| workload | store | concurrency | runs | ops/s (median) | min–max | p50 µs | p99 µs |" + (f" ops/s vs {base} | p50 vs {base} | p99 vs {base} |" if base else ""))
print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if base else ""))
def stats(rs):
    return (med([r["throughput"] for r in rs]), med([r["latency"]["p50_us"] for r in rs]),
            med([r["latency"]["p99_us"] for r in rs]))
for (w, store, c), rs in sorted(groups.items()):
    t, p50, p99 = stats(rs)
    ts = [r["throughput"] for r in rs]
    line = f"| {w} | {store} | {c} | {len(rs)} | {t:,.0f} | {min(ts):,.0f}–{max(ts):,.0f} | {p50:,.0f} | {p99:,.0f} |"
    if base:
        b = groups.get((w, base, c))
        if b:
            bt, b50, b99 = stats(b)
            line += f" {t / bt:.2f}× | {p50 / b50:.2f}× | {p99 / b99:.2f}× |"
        else:
            line += " | | |"
    print(line)
errors = [(r["store"], r["c"], r.get("failed", 0) + r.get("unknown", 0)) for r in rows
          if keep.search(r["store"]) and r.get("failed", 0) + r.get("unknown", 0)]
if errors:
    print("\nruns with errors (store, concurrency, failed+unknown):", errors)
PY
}
