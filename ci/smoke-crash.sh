#!/usr/bin/env bash
# CI smoke run: the demo (SIGKILL mid-load, every acknowledged write must survive) on a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=dev PORT=17411 bash ci/demo.sh
