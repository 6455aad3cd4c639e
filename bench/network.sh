#!/usr/bin/env bash
# Networking (issue #15): guest-to-guest TCP throughput and ping latency
# between two test guests (256 MiB, TCG) on a network made by Snapstack's data
# plane (netplane's LinuxPlane: bridge, nftables port security through
# br_netfilter, dnsmasq in its own namespace; QEMU started by the QEMU driver in
# the plane's namespace) against the same two guests, started with the same
# QEMU options, on a hand-made bridge with dnsmasq and no filtering, in one run
# (rounds alternated between the two); and the time from a port's creation
# (the plan applied with it) to a DHCP lease in a running guest the NIC is
# hot-plugged into.
#
#   bench/network.sh
#
# The transfer is the guests' own tools (/cgi-bin/send of the test guest:
# dd | busybox nc to the peer's sink), timed in the sending guest; the ping is
# busybox ping in the guest. Both guests run under TCG on the same cores, so
# absolute numbers are the emulator's; the ratio is the point.
#
# Runs the ignored test `network_bench` of crates/hypervisor/tests/ (the
# driver and the plane as Snapstack uses them, without the API). Needs root,
# the test guest (scripts/build-guest.sh, or $SNAPSTACK_GUEST_DIR), qemu,
# dnsmasq, nftables, curl. Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/network.sh needs root (network namespaces)" >&2; exit 1; }
GUEST=${SNAPSTACK_GUEST_DIR:-$PWD/build/guest}
[ -f "$GUEST/guest.qcow2" ] || scripts/build-guest.sh "$GUEST" >&2
export SNAPSTACK_GUEST_DIR=$GUEST
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! cargo test --quiet -p hypervisor --test network_bench -- --ignored --nocapture >"$out" 2>&1; then
  cat "$out" >&2
  exit 1
fi
grep '^|' "$out"
