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

# Debian packages, installed together (one `apt-get update`).
need=() why=()
# Headless Chromium: the harness's tests check that a report renders.
if ! command -v chromium >/dev/null 2>&1; then
  need+=(chromium) why+=("chromium renders the harness's report in its tests")
fi
# protoc: bench-compare's etcd client (etcd-client, through prost-build)
# compiles etcd's .proto files in its build script, with the protoc that
# PROTOC names or PATH finds; `cargo build --workspace` fails without it.
# A crate cannot bring it in: a dependency's build script runs before any
# of ours and reads only PROTOC and PATH, so protoc comes from Debian, as
# chromium does.
if [ -z "${PROTOC:-}" ] && ! command -v protoc >/dev/null 2>&1; then
  need+=(protobuf-compiler) why+=("protobuf-compiler (protoc) builds bench-compare's etcd client")
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${need[*]} (as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
  printf 'installing from Debian: %s\n' "${why[@]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo --version
