#!/usr/bin/env bash
# CI smoke run of the matrix on a debug build: harness/matrix/ci.toml
# (every mode that exists, two faults, one seed, short cells). A broken
# claim exits 1 and fails CI; the table is printed either way. The matrix
# directory is kept under target/ for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p mimeo-node -p mimeo-harness
out=target/matrix-ci
rm -rf "$out"
target/debug/mimeo-harness matrix --spec harness/matrix/ci.toml --out "$out" \
  --mimeo-bin target/debug/mimeo
# Resumable: a second call reads every cell back and runs nothing.
second=$(target/debug/mimeo-harness matrix --spec harness/matrix/ci.toml --out "$out" \
  --mimeo-bin target/debug/mimeo 2>&1 >/dev/null)
cells=$(grep -c '^matrix: cell ' <<<"$second")
read_back=$(grep -c 'done before: read back' <<<"$second")
if [ "$cells" -ne "$read_back" ]; then
  echo "a resumed matrix re-ran cells ($read_back of $cells read back)" >&2
  exit 1
fi
echo "matrix smoke: ok"
