#!/usr/bin/env bash
# Image upload/download through Snapstack's API vs plain file copies on the
# same disk, in one run, plus the server's peak RSS during the upload.
#
#   bench/image-transfer.sh [SIZE_MIB]     (default 1024)
#
# Prints a markdown table. The upload is a real Glance upload (streamed to
# staging, MD5 + SHA-512, format inspection, qemu-img info, fsync, moved into
# the pool); "cp + fsync" is the fair file-copy baseline for it, plain "cp"
# is shown too. Downloads are compared with `cat` of the same file.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
WORK=$(mktemp -d "$PWD/build/bench-transfer.XXXXXX")
SERVER_PID=
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK"

source bench/lib.sh
start_snapstack "$WORK"

TOKEN=$(curl -si "$URL/identity/v3/auth/tokens" -H 'Content-Type: application/json' -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bench-pw"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}' \
  | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r')

SRC=$WORK/src.raw
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$SRC"
sync

now() { date +%s.%N; }
mibps() { python3 -c "print(f'{$SIZE_MIB/($2-$1):.0f}')"; }

# Baselines: cp, cp + fsync, cat.
t0=$(now); cp "$SRC" "$WORK/copy1"; t1=$(now)
CP=$(mibps "$t0" "$t1")
t0=$(now); cp "$SRC" "$WORK/copy2"; sync "$WORK/copy2"; t1=$(now)
CP_SYNC=$(mibps "$t0" "$t1")
rm -f "$WORK/copy1" "$WORK/copy2"

RSS_BEFORE=$(awk '/VmHWM/{print $2}' /proc/$SERVER_PID/status)
ID=$(curl -sf "$URL/image/v2/images" -H "X-Auth-Token: $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name":"bench","disk_format":"raw","container_format":"bare"}' | jq -r .id)
t0=$(now)
curl -sf -X PUT "$URL/image/v2/images/$ID/file" -H "X-Auth-Token: $TOKEN" \
  -H 'Content-Type: application/octet-stream' -T "$SRC" -o /dev/null
t1=$(now)
UP=$(mibps "$t0" "$t1")
RSS_PEAK=$(awk '/VmHWM/{print $2}' /proc/$SERVER_PID/status)
STATUS=$(curl -sf "$URL/image/v2/images/$ID" -H "X-Auth-Token: $TOKEN" | jq -r .status)
[ "$STATUS" = active ] || { echo "upload did not make the image active: $STATUS" >&2; exit 1; }

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); cat "$SRC" > "$WORK/catcopy"; t1=$(now)
CAT=$(mibps "$t0" "$t1")
rm -f "$WORK/catcopy"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now)
curl -sf "$URL/image/v2/images/$ID/file" -H "X-Auth-Token: $TOKEN" -o "$WORK/down"
t1=$(now)
DOWN=$(mibps "$t0" "$t1")
cmp -s "$SRC" "$WORK/down" || { echo "download differs from the upload" >&2; exit 1; }

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
cat <<TABLE
Image transfer, ${SIZE_MIB} MiB of random data, $(nproc) cores, $(date -u +%Y-%m-%d)

| operation | Snapstack API | baseline | baseline MiB/s | ratio (API / baseline) |
|---|---|---|---|---|
| upload (PUT …/file) | ${UP} MiB/s | cp + fsync | ${CP_SYNC} | $(ratio "$UP" "$CP_SYNC") |
| upload (PUT …/file) | ${UP} MiB/s | cp (no fsync) | ${CP} | $(ratio "$UP" "$CP") |
| download (GET …/file) | ${DOWN} MiB/s | cat > file | ${CAT} | $(ratio "$DOWN" "$CAT") |

Server peak RSS: $((RSS_BEFORE / 1024)) MiB before the upload, $((RSS_PEAK / 1024)) MiB peak after it (VmHWM).
TABLE
