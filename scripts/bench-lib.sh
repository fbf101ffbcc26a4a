# Shared by the benchmark scripts (source it after setting $work): the
# results file, process clean-up on exit, and bounded waits.
# shellcheck shell=bash

results=$work/results.jsonl
pids=()

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

record() { # store concurrency json: appends one result line
  python3 -c 'import json,sys; r=json.loads(sys.argv[3]); r["store"]=sys.argv[1]; r["c"]=int(sys.argv[2]); print(json.dumps(r))' "$1" "$2" "$3" >> "$results"
}

wait_for() { # description command...: polls for up to 30 s, then fails the script
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up within 30 s" >&2; exit 1
}
