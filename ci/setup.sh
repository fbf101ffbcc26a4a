#!/usr/bin/env bash
# Installs what building and testing Mimeo needs on a fresh machine.
# Idempotent: does nothing that is already there.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done
# Headless Chromium: the harness's tests check that a report renders.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: install Debian's 'chromium' package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  echo "installing chromium (Debian's package) for the report rendering test" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo --version
