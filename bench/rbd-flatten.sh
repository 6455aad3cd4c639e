#!/usr/bin/env bash
# Disk provisioning and flatten through Snapstack's rbd pool vs the rbd CLI,
# on a private single-node Ceph cluster started here (and stopped at the end).
#
#   bench/rbd-flatten.sh [SMALL_MIB (1024)] [BIG_MIB (16384)] [ROUNDS (5)]
#
# Prints a markdown table (crates/storage/examples/rbd-pool-bench.rs says what
# each row measures). The OSD is memstore (RAM): it must hold the fully
# written SMALL image, one flattened copy and the `rbd import` copy at once;
# the BIG image is sparse and costs nothing. CEPH_DEV_MEMSTORE_BYTES defaults
# here to 4 x SMALL + 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
SMALL_MIB=${1:-1024}
BIG_MIB=${2:-16384}
ROUNDS=${3:-5}
CEPH_DIR=$PWD/build/ceph-bench-rbd
WORK=$(mktemp -d "$PWD/build/bench-rbd.XXXXXX")
trap 'scripts/ceph-dev.sh stop "$CEPH_DIR" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

export CEPH_DEV_MEMSTORE_BYTES=${CEPH_DEV_MEMSTORE_BYTES:-$(( (4 * SMALL_MIB + 1024) * 1024 * 1024 ))}
scripts/ceph-dev.sh start "$CEPH_DIR" >&2
eval "$(scripts/ceph-dev.sh env "$CEPH_DIR")"

cargo build --release --quiet -p storage --example rbd-pool-bench
echo "bench/rbd-flatten.sh $SMALL_MIB $BIG_MIB $ROUNDS  (memstore $((CEPH_DEV_MEMSTORE_BYTES >> 20)) MiB)"
echo
BENCH_WORK_DIR=$WORK "${CARGO_TARGET_DIR:-target}/release/examples/rbd-pool-bench" "$SMALL_MIB" "$BIG_MIB" "$ROUNDS"
