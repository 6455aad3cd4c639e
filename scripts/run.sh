#!/usr/bin/env bash
# Installs what is missing and runs Snapstack on this host with embedded
# defaults: data in ./var (SQLite, file pool, logs), one port on 127.0.0.1.
# Flags after the script name go to `snapstack serve` (see --help).
#
#   scripts/run.sh
#   SNAPSTACK_ADMIN_PASSWORD=secret scripts/run.sh --listen 127.0.0.1:9000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
cargo build --release --quiet -p snapstack
exec target/release/snapstack serve "$@"
