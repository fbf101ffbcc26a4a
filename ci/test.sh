#!/usr/bin/env bash
# The README's test command: every unit, integration and doc test of every
# workspace member, bench-compare included (real node processes on
# 127.0.0.1 too). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo test --workspace --locked "$@"
