#!/usr/bin/env bash
# Runs every Snapstack test on this machine, installing what is missing first:
#   formatting and lints; unit tests (domain, store, cloud on fakes, format
#   inspector); integration tests that spawn the real `snapstack` binary and
#   drive it over HTTP and with the real `openstack` CLI; QEMU tests on the
#   project's own test guest (built here from Debian packages); librbd tests
#   on a single-node Ceph cluster started here and stopped at the end.
#
#   Then, with no arguments, OpenStack's conformance suite: the interop list
#   (../shared/conformance/, see docs/conformance.md) through scripts/tempest.sh
#   against a `snapstack serve` started here; any failed test fails the run.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -p image-format extra arguments go to `cargo test` (no tempest)
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
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ]; then
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  scripts/ceph-dev.sh stop "$CEPH_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
eval "$(scripts/ceph-dev.sh env "$CEPH_DIR")"

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "tests"
# QEMU and Ceph tests share 2 cores: at most two test threads per binary.
cargo test --workspace --no-fail-fast "$@" -- --test-threads=2

[ $# -eq 0 ] || exit 0

say "tempest: the interop list"
# The debug binary the integration tests ran; its own port and data directory.
TEMPEST_DATA=$(mktemp -d /tmp/snapstack-tempest.XXXXXX)
TEMPEST_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
TEMPEST_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
SNAPSTACK_ADMIN_PASSWORD=$TEMPEST_PASSWORD target/debug/snapstack serve \
  --data-dir "$TEMPEST_DATA" --listen "127.0.0.1:$TEMPEST_PORT" \
  >"$TEMPEST_DATA/serve.out" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 120); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$TEMPEST_PORT/identity/v3" 2>/dev/null && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$TEMPEST_DATA/serve.out" >&2; exit 1; }
  sleep 0.5
done
status=0
SNAPSTACK_ADMIN_PASSWORD=$TEMPEST_PASSWORD scripts/tempest.sh \
  --url "http://127.0.0.1:$TEMPEST_PORT" --workspace "$TEMPEST_DATA/tempest" \
  2>&1 | tee "$TEMPEST_DATA/tempest.out" || status=$?
count() { sed -n "s/^ - $1: *\([0-9]*\).*/\1/p" "$TEMPEST_DATA/tempest.out" | tail -1; }
passed=$(count Passed)
failed=$(count Failed)
skipped=$(count Skipped)
kill "$SERVE_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=
if [ "$status" -ne 0 ] || [ -z "$passed" ] || [ "${failed:-1}" -ne 0 ]; then
  say "tempest failed (exit $status); server log: $TEMPEST_DATA/logs/snapstack.log"
  echo "tempest: ${passed:-0} passed, ${failed:-1} failed, ${skipped:-0} skipped"
  exit 1
fi
rm -rf "$TEMPEST_DATA"
echo "tempest: $passed passed, $failed failed, $skipped skipped"
