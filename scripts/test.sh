#!/usr/bin/env bash
# Runs every Snapstack test on this machine, installing what is missing first:
#   formatting and lints; unit tests (domain, store, cloud on fakes, format
#   inspector); integration tests that spawn the real `snapstack` binary and
#   drive it over HTTP and with the real `openstack` CLI; QEMU tests on the
#   project's own test guest (built here from Debian packages); librbd tests
#   on a single-node Ceph cluster started here and stopped at the end.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -p image-format extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { printf '[test] %s\n' "$*" >&2; }

scripts/install-deps.sh
if ! command -v cargo >/dev/null; then
  say "cargo is missing: install a Rust toolchain (rustup) first"
  exit 1
fi
export CARGO_TERM_COLOR=never
export SNAPSTACK_OPENSTACK="$ROOT/.venv/bin/openstack"

say "building the test guest"
scripts/build-guest.sh "$ROOT/build/guest"
export SNAPSTACK_GUEST_DIR="$ROOT/build/guest"

say "starting the Ceph dev cluster"
CEPH_DIR="$ROOT/build/ceph"
scripts/ceph-dev.sh start "$CEPH_DIR"
trap 'scripts/ceph-dev.sh stop "$CEPH_DIR" >/dev/null 2>&1 || true' EXIT
eval "$(scripts/ceph-dev.sh env "$CEPH_DIR")"

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "tests"
# QEMU and Ceph tests share 2 cores: at most two test threads per binary.
cargo test --workspace --no-fail-fast "$@" -- --test-threads=2
