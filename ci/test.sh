#!/usr/bin/env bash
# The README's test command: every unit, integration and doc test of the
# default workspace members (real node processes on 127.0.0.1 included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo test --locked "$@"
