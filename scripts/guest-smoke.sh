#!/usr/bin/env bash
# Smoke test of the Snapstack test guest: builds it if needed, boots it once
# under TCG on a throwaway qcow2 overlay, and checks that
#   1. the banner `SNAPSTACK-GUEST boot=1 last_seq=0 corrupt=0` appears,
#   2. the writer runs (`SEQ 10 ram=10`),
#   3. QEMU's system_powerdown (ACPI power button) stops the writer
#      (`STOPPED last_seq=<m>`) and the guest powers off by itself,
#   4. scripts/guest-check.py reads boot=1, last_seq=<m>, corrupt=0 from the
#      overlay afterwards.
# Exits non-zero (printing the console) when any step fails.
#
#   scripts/guest-smoke.sh [OUTDIR]     (default: build/guest/)
# Environment: SNAPSTACK_SMOKE_BOOT_TIMEOUT (seconds, default 120),
#              SNAPSTACK_SMOKE_KEEP=1 keeps the temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/build/guest}")
BOOT_TIMEOUT=${SNAPSTACK_SMOKE_BOOT_TIMEOUT:-120}

"$ROOT/scripts/build-guest.sh" "$OUT"

TMP=$(mktemp -d /tmp/guest-smoke.XXXXXX)
CONSOLE=$TMP/console.log
QEMU_PID=
cleanup() {
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill "$QEMU_PID" 2>/dev/null || true
		wait "$QEMU_PID" 2>/dev/null || true
	fi
	if [ "${SNAPSTACK_SMOKE_KEEP:-0}" = 1 ]; then
		echo "guest-smoke: kept $TMP" >&2
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT

fail() {
	echo "guest-smoke: FAILED: $*" >&2
	echo "---- console ----" >&2
	tr -d '\r' <"$CONSOLE" >&2 || true
	echo "-----------------" >&2
	exit 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for REGEX TIMEOUT: waits until a console line matches (extended regex).
wait_for() {
	local regex=$1 timeout=$2 deadline
	deadline=$(($(date +%s) + timeout))
	while ! tr -d '\r' <"$CONSOLE" | grep -Eq -- "$regex"; do
		grep -q 'Kernel panic' "$CONSOLE" && fail "kernel panic"
		kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited while waiting for /$regex/"
		[ "$(date +%s)" -lt "$deadline" ] || fail "no /$regex/ within ${timeout}s"
		sleep 0.2
	done
}

qemu-img create -q -f qcow2 -b "$OUT/guest.qcow2" -F qcow2 "$TMP/overlay.qcow2"
: >"$CONSOLE"
start=$(now)
qemu-system-x86_64 -accel tcg -m 256 -nographic -nodefaults -no-reboot \
	-serial "file:$CONSOLE" \
	-monitor "unix:$TMP/monitor.sock,server=on,wait=off" \
	-drive "file=$TMP/overlay.qcow2,if=virtio,format=qcow2" </dev/null &
QEMU_PID=$!

wait_for '^SNAPSTACK-GUEST boot=1 last_seq=0 corrupt=0 disk=vda$' "$BOOT_TIMEOUT"
boot_s=$(elapsed "$start")
wait_for '^SEQ 10 ram=10$' 30

powerdown=$(now)
python3 - "$TMP/monitor.sock" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"system_powerdown\n")
time.sleep(0.5)
PY
wait_for '^STOPPED last_seq=[0-9]+ ram=[0-9]+$' 30
for _ in $(seq 150); do
	kill -0 "$QEMU_PID" 2>/dev/null || break
	sleep 0.2
done
kill -0 "$QEMU_PID" 2>/dev/null && fail "the guest did not power off within 30s of system_powerdown"
wait "$QEMU_PID" || fail "QEMU exited with status $?"
QEMU_PID=
off_s=$(elapsed "$powerdown")

stopped=$(tr -d '\r' <"$CONSOLE" | sed -nE 's/^STOPPED last_seq=([0-9]+) .*/\1/p' | tail -n1)
check=$("$ROOT/scripts/guest-check.py" "$TMP/overlay.qcow2")
expected="\"boot\": 1, \"last_seq\": $stopped, \"corrupt\": 0,"
case "$check" in
*"$expected"*) ;;
*) fail "guest-check.py says $check, expected $expected" ;;
esac

echo "guest-smoke: OK: banner after ${boot_s}s, powered off ${off_s}s after system_powerdown, last_seq=$stopped on disk"
