#!/usr/bin/env bash
# Snapshot of a running volume-backed server with 3 volumes of 1 GiB (the
# boot volume and two attached ones) against the OpenStack way, in one run,
# on the file pool or on RBD.
#
#   bench/volume-snapshot.sh [ROUNDS]          (default 5) — file pool
#   bench/volume-snapshot.sh --rbd [ROUNDS]    — rbd pool, on a private
#       single-node Ceph cluster started here (memstore, 4 GiB)
#
# The test guest boots from a 1 GiB volume made from its image, two blank
# 1 GiB volumes are attached, and it keeps writing its record log to all
# three in lockstep. Then, ROUNDS times each:
#   - Snapstack: POST createImage → image `active` (API polled every 10 ms):
#     all three volumes snapshotted at one instant; the guest's pause is what
#     Snapstack logs for it (file: QMP STOP→RESUME inside the cut, none
#     expected; rbd: the vCPUs stopped around the three `rbd snap create`);
#   - the OpenStack way: what Nova's snapshot of a volume-backed server asks
#     Cinder for, one volume after the other — POST /snapshots (force) and
#     wait `available`, three times; "spread" is the time between the first
#     snapshot's request and the last one's completion: the snapshots are
#     that far apart in the guest's life.
# Prints a markdown table of medians (min–max).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
POOL=file
if [ "${1:-}" = "--rbd" ]; then POOL=rbd; shift; fi
ROUNDS=${1:-5}
GUEST_DIR=${SNAPSTACK_GUEST_DIR:-$ROOT/build/guest}
[ -f "$GUEST_DIR/guest.qcow2" ] || { echo "no test guest at $GUEST_DIR: run scripts/build-guest.sh" >&2; exit 1; }
mkdir -p build
WORK=$(mktemp -d "$ROOT/build/bench-volume-snapshot.XXXXXX")
SERVER_PID=
CEPH_DIR=$ROOT/build/ceph-bench-volume-snapshot
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  for pid in $(pgrep -f "qemu-system-x86_64 .*$WORK/" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  [ $POOL = rbd ] && { scripts/ceph-dev.sh stop "$CEPH_DIR" >/dev/null 2>&1 || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

source bench/lib.sh
EXTRA=()
if [ $POOL = rbd ]; then
  export CEPH_DEV_MEMSTORE_BYTES=${CEPH_DEV_MEMSTORE_BYTES:-$((4 << 30))}
  scripts/ceph-dev.sh start "$CEPH_DIR" >&2
  eval "$(scripts/ceph-dev.sh env "$CEPH_DIR")"
  printf '[rbd]\nconf = "%s"\nuser = "admin"\n' "$CEPH_CONF" > "$WORK/storage.toml"
  EXTRA=(--storage-config "$WORK/storage.toml")
fi
start_snapstack "$WORK" "${EXTRA[@]}"

echo "bench/volume-snapshot.sh $([ $POOL = rbd ] && echo '--rbd ')$ROUNDS"
echo
BENCH_URL=$URL BENCH_WORK=$WORK BENCH_GUEST=$GUEST_DIR/guest.qcow2 BENCH_ROUNDS=$ROUNDS BENCH_POOL=$POOL python3 - <<'PY'
import json, os, re, statistics, subprocess, time, urllib.request

URL, WORK, POOL = os.environ["BENCH_URL"], os.environ["BENCH_WORK"], os.environ["BENCH_POOL"]
GUEST, ROUNDS = os.environ["BENCH_GUEST"], int(os.environ["BENCH_ROUNDS"])

def call(method, path, body=None, headers=None, token=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if token:
        h["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method, headers=h)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return r.headers, (json.loads(text) if text else None)

auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "bench-pw"}}},
                 "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
hdrs, tok = call("POST", "/identity/v3/auth/tokens", auth)
T = hdrs["X-Subject-Token"]
PROJECT = tok["token"]["project"]["id"]
NOVA = {"OpenStack-API-Version": "compute 2.79"}
CINDER = {"OpenStack-API-Version": "volume 3.59"}
V = f"/volume/v3/{PROJECT}"

def wait(fn, what, timeout=600, every=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")

def console(sid):
    _, b = call("POST", f"/compute/v2.1/servers/{sid}/action", {"os-getConsoleOutput": {}}, NOVA, T)
    return b["output"]

def seqs(text):
    return [int(m) for m in re.findall(r"^SEQ (\d+) ram=", text, re.M)]

def pause_logged(image):
    def find():
        with open(f"{WORK}/serve.log") as f:
            text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(l for l in f if image in l and "guest pause" in l))
        return re.search(r"paused_ms=([0-9.]+)", text)
    return float(wait(find, "the pause log line", every=0.1).group(1))

def volume(body):
    _, b = call("POST", f"{V}/volumes", {"volume": body}, CINDER, T)
    vid = b["volume"]["id"]
    wait(lambda: call("GET", f"{V}/volumes/{vid}", None, CINDER, T)[1]["volume"]["status"] == "available", "a volume", every=0.1)
    return vid

def snapshot_status(sid):
    return call("GET", f"{V}/snapshots/{sid}", None, CINDER, T)[1]["snapshot"]["status"]

_, img = call("POST", "/image/v2/images", {"name": "guest", "disk_format": "qcow2", "container_format": "bare"}, token=T)
subprocess.run(["curl", "-sf", "-X", "PUT", f"{URL}/image/v2/images/{img['id']}/file", "-H", f"X-Auth-Token: {T}",
                "-H", "Content-Type: application/octet-stream", "-T", GUEST, "-o", "/dev/null"], check=True)
call("POST", "/compute/v2.1/flavors", {"flavor": {"name": "tiny", "id": "tiny", "vcpus": 1, "ram": 256, "disk": 1}}, NOVA, T)
boot = volume({"name": "boot", "size": 1, "imageRef": img["id"]})
data = [volume({"name": f"data{i}", "size": 1}) for i in (1, 2)]
_, srv = call("POST", "/compute/v2.1/servers", {"server": {"name": "vm", "imageRef": "", "flavorRef": "tiny", "networks": "none",
    "block_device_mapping_v2": [{"uuid": boot, "source_type": "volume", "destination_type": "volume", "boot_index": 0}]}}, NOVA, T)
sid = srv["server"]["id"]
wait(lambda: len(seqs(console(sid))) >= 2, "the guest writing", every=0.5)
for vid in data:
    call("POST", f"/compute/v2.1/servers/{sid}/os-volume_attachments", {"volumeAttachment": {"volumeId": vid}}, NOVA, T)
    wait(lambda: call("GET", f"{V}/volumes/{vid}", None, CINDER, T)[1]["volume"]["status"] == "in-use", "an attach", every=0.1)
wait(lambda: console(sid).count("HOTPLUG") >= 2, "the guest writing three disks", every=0.5)
time.sleep(2)
volumes = [boot, *data]

ours, ours_pause, theirs = [], [], []
for n in range(ROUNDS):
    t0 = time.monotonic()
    _, b = call("POST", f"/compute/v2.1/servers/{sid}/action", {"createImage": {"name": f"bs{n}"}}, NOVA, T)
    image = b["image_id"]
    wait(lambda: call("GET", f"/image/v2/images/{image}", token=T)[1]["status"] == "active", "the snapshot")
    ours.append(time.monotonic() - t0)
    ours_pause.append(pause_logged(image))
    wait(lambda: call("GET", f"/compute/v2.1/servers/{sid}", None, NOVA, T)[1]["server"]["OS-EXT-STS:task_state"] is None, "the task", every=0.05)
    call("DELETE", f"/image/v2/images/{image}", token=T)
    time.sleep(1)

    t0 = time.monotonic()
    snaps = []
    for vid in volumes:
        _, b = call("POST", f"{V}/snapshots", {"snapshot": {"volume_id": vid, "force": True, "name": f"seq{n}"}}, CINDER, T)
        sn = b["snapshot"]["id"]
        wait(lambda: snapshot_status(sn) == "available", "a volume snapshot")
        snaps.append(sn)
    took = time.monotonic() - t0
    theirs.append(took)
    for sn in snaps:
        call("DELETE", f"{V}/snapshots/{sn}", None, CINDER, T)
    time.sleep(1)

after = seqs(console(sid))
gapless = all(b - a == 10 for a, b in zip(after, after[1:]))

def ms(xs):
    return f"{statistics.median(xs)*1000:.0f} ms ({min(xs)*1000:.0f}–{max(xs)*1000:.0f})"

def pause(xs):
    return f"{statistics.median(xs):.1f} ms ({min(xs):.1f}–{max(xs):.1f})"

print(f"| {POOL} pool, 3 × 1 GiB volumes, guest writing | request → done | snapshots' instants | guest pause |")
print("|---|---|---|---|")
print(f"| Snapstack createImage (one cut) | {ms(ours)} | one | {pause(ours_pause)} |")
print(f"| OpenStack way (3 volume snapshots, one after the other) | {ms(theirs)} | three, spread over the whole time | not measured (no cut) |")
print()
print(f"{ROUNDS} rounds each; guest SEQ lines without gap over the whole run: {'yes' if gapless else 'NO'}")
with open(f"{WORK}/serve.log") as f:
    cuts = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in f if "guest paused for a multi-volume cut" in l]
if cuts:
    def part(key):
        return statistics.median(float(re.search(key + r"=([0-9.]+)", l).group(1)) for l in cuts)
    print(f"Inside the cut (wall clock, medians): QMP stop {part('stop_ms'):.1f} ms, "
          f"snapshots {part('snapshots_ms'):.1f} ms, QMP cont {part('resume_ms'):.1f} ms.")
PY
