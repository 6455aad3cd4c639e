#!/usr/bin/env bash
# Server snapshots (Nova createImage) against the OpenStack way, on disks
# with every cluster written, in one run, on the file pool or on RBD.
#
#   bench/snapshot.sh [SIZES_GIB...]            (default: 1 8) — file pool
#   bench/snapshot.sh --rbd [SIZES_GIB...]      (default: 1 4) — rbd pool, on
#       a private single-node Ceph cluster started here (memstore: it must
#       hold the written image and one full copy of it at once, so 2 x the
#       largest size + 2 GiB of RAM; 8 GiB needs ~18 GiB free)
#
# For each size: the test guest's disk grown to SIZE GiB with random data in
# every cluster after the guest's own partitions, uploaded as qcow2, booted
# (1 vCPU, 256 MiB, TCG), left writing its sequence; then
#   - Snapstack: POST createImage → image `active` (API polled every 10 ms);
#   - the OpenStack way on local files: a full copy of the server's disk chain
#     into a standalone qcow2 (`qemu-img convert -U`, what Nova's libvirt
#     driver runs after its drive-mirror), timed on the same files;
#   - the OpenStack way on RBD (Nova's direct snapshot): `rbd snap create` +
#     protect of the server's disk, clone into images, `rbd flatten`, snap +
#     protect — with the rbd CLI on the same disk.
# The guest's pause is what Snapstack logs for the snapshot: the time between
# QMP STOP and RESUME events inside the snapshot's window.
# The guest's console shows whether it kept writing across the snapshot
# (its `SEQ` lines continue with no gap). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
POOL=file
if [ "${1:-}" = "--rbd" ]; then POOL=rbd; shift; fi
if [ $# -gt 0 ]; then SIZES=("$@"); elif [ $POOL = rbd ]; then SIZES=(1 4); else SIZES=(1 8); fi
GUEST_DIR=${SNAPSTACK_GUEST_DIR:-$ROOT/build/guest}
[ -f "$GUEST_DIR/guest.raw" ] || { echo "no test guest at $GUEST_DIR: run scripts/build-guest.sh" >&2; exit 1; }
mkdir -p build
WORK=$(mktemp -d "$ROOT/build/bench-snapshot.XXXXXX")
SERVER_PID=
CEPH_DIR=$ROOT/build/ceph-bench-snapshot
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  for pid in $(pgrep -f "qemu-system-x86_64 .*$WORK/" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  [ $POOL = rbd ] && { scripts/ceph-dev.sh stop "$CEPH_DIR" >/dev/null 2>&1 || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

source bench/lib.sh
EXTRA=()
CEPH_CONF_FILE=
if [ $POOL = rbd ]; then
  largest=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
  export CEPH_DEV_MEMSTORE_BYTES=${CEPH_DEV_MEMSTORE_BYTES:-$(( (2 * largest + 2) << 30 ))}
  scripts/ceph-dev.sh start "$CEPH_DIR" >&2
  eval "$(scripts/ceph-dev.sh env "$CEPH_DIR")"
  CEPH_CONF_FILE=$CEPH_CONF
  printf '[rbd]\nconf = "%s"\nuser = "admin"\n' "$CEPH_CONF" > "$WORK/storage.toml"
  EXTRA=(--storage-config "$WORK/storage.toml")
fi
start_snapstack "$WORK" "${EXTRA[@]}"

echo "bench/snapshot.sh $([ $POOL = rbd ] && echo '--rbd ')${SIZES[*]}"
echo
BENCH_URL=$URL BENCH_WORK=$WORK BENCH_GUEST=$GUEST_DIR/guest.raw BENCH_SIZES="${SIZES[*]}" \
BENCH_POOL=$POOL BENCH_CEPH_CONF=$CEPH_CONF_FILE python3 - <<'PY'
import json, os, re, subprocess, time, urllib.request

URL, WORK = os.environ["BENCH_URL"], os.environ["BENCH_WORK"]
POOL, CONF = os.environ["BENCH_POOL"], os.environ["BENCH_CEPH_CONF"]
GUEST = os.environ["BENCH_GUEST"]
SIZES = [int(s) for s in os.environ["BENCH_SIZES"].split()]
GIB = 1 << 30

def call(method, path, body=None, headers=None, token=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if token:
        h["X-Auth-Token"] = token
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method, headers=h)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return r.headers, (json.loads(text) if text else None)

auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": "bench-pw"}}},
                 "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
hdrs, _ = call("POST", "/identity/v3/auth/tokens", auth)
T = hdrs["X-Subject-Token"]
NOVA = {"OpenStack-API-Version": "compute 2.79"}

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

def log_of(image):
    with open(f"{WORK}/serve.log") as f:
        return "".join(l for l in f if image in l)

def pause_logged(image):
    text = wait(lambda: (m := re.search(r"paused_ms=([0-9.]+)", re.sub(r"\x1b\[[0-9;]*m", "", log_of(image)))) and m, "the pause log line", every=0.1)
    return float(text.group(1))

def openstack_file_way(sid):
    disks = sorted((f for f in os.listdir(f"{WORK}/data/pool/disks") if f.startswith(sid)),
                   key=lambda f: os.path.getmtime(f"{WORK}/data/pool/disks/{f}"))
    top = f"{WORK}/data/pool/disks/{disks[-1]}"
    t0 = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2", top, f"{WORK}/copy.qcow2"], check=True)
    subprocess.run(["sync", f"{WORK}/copy.qcow2"], check=True)
    took = time.monotonic() - t0
    os.remove(f"{WORK}/copy.qcow2")
    return took

def rbd(*args):
    for attempt in range(5):
        done = subprocess.run(["rbd", "-c", CONF, *args], capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit(f"rbd {' '.join(args)}: {done.stderr.strip()}")

def openstack_rbd_way(sid):
    disk = next(d for d in subprocess.run(["rbd", "-c", CONF, "ls", "vms"], check=True, capture_output=True, text=True).stdout.split() if d.startswith(sid))
    t0 = time.monotonic()
    rbd("snap", "create", f"vms/{disk}@nova")
    rbd("snap", "protect", f"vms/{disk}@nova")
    rbd("clone", f"vms/{disk}@nova", "images/nova-copy")
    rbd("flatten", "images/nova-copy")
    rbd("snap", "create", "images/nova-copy@snap")
    rbd("snap", "protect", "images/nova-copy@snap")
    took = time.monotonic() - t0
    rbd("snap", "unprotect", "images/nova-copy@snap")
    rbd("snap", "purge", "images/nova-copy")
    rbd("rm", "images/nova-copy")
    rbd("snap", "unprotect", f"vms/{disk}@nova")
    rbd("snap", "rm", f"vms/{disk}@nova")
    return took

rows = []
for size in SIZES:
    raw = f"{WORK}/disk-{size}g.raw"
    qcow = f"{WORK}/disk-{size}g.qcow2"
    guest_bytes = os.path.getsize(GUEST)
    subprocess.run(["cp", GUEST, raw], check=True)
    with open(raw, "ab") as out, open("/dev/urandom", "rb") as rnd:
        left = size * GIB - guest_bytes
        while left > 0:
            chunk = rnd.read(min(left, 64 << 20))
            out.write(chunk)
            left -= len(chunk)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow], check=True)
    os.remove(raw)
    _, img = call("POST", "/image/v2/images", {"name": f"d{size}", "disk_format": "qcow2", "container_format": "bare"}, token=T)
    subprocess.run(["curl", "-sf", "-X", "PUT", f"{URL}/image/v2/images/{img['id']}/file", "-H", f"X-Auth-Token: {T}",
                    "-H", "Content-Type: application/octet-stream", "-T", qcow, "-o", "/dev/null"], check=True)
    os.remove(qcow)
    call("POST", "/compute/v2.1/flavors", {"flavor": {"name": f"f{size}", "id": f"f{size}", "vcpus": 1, "ram": 256, "disk": size}}, NOVA, T)
    _, srv = call("POST", "/compute/v2.1/servers", {"server": {"name": f"vm{size}", "imageRef": img["id"], "flavorRef": f"f{size}", "networks": "none"}}, NOVA, T)
    sid = srv["server"]["id"]
    wait(lambda: len(seqs(console(sid))) >= 3, "the guest writing", every=0.5)

    before = seqs(console(sid))
    t0 = time.monotonic()
    h, b = call("POST", f"/compute/v2.1/servers/{sid}/action", {"createImage": {"name": f"s{size}"}}, NOVA, T)
    snap = b["image_id"]
    wait(lambda: call("GET", f"/image/v2/images/{snap}", token=T)[1]["status"] == "active", "the snapshot")
    snapstack = time.monotonic() - t0
    time.sleep(3)
    after = seqs(console(sid))
    gapless = all(b - a == 10 for a, b in zip(after, after[1:])) and after[-1] > before[-1]

    paused = pause_logged(snap)
    if POOL == "rbd":
        # Let the background flatten finish and the image go first (memory).
        wait(lambda: "snapshot image flattened" in log_of(snap), "the flatten", every=0.5)
        call("DELETE", f"/image/v2/images/{snap}", token=T)
        time.sleep(2)
        copy = openstack_rbd_way(sid)
    else:
        copy = openstack_file_way(sid)
    rows.append((size, snapstack, copy, gapless, paused))
    call("DELETE", f"/compute/v2.1/servers/{sid}", None, NOVA, T)
    wait(lambda: call("GET", "/compute/v2.1/servers", None, NOVA, T)[1]["servers"] == [], "the server's deletion", every=0.5)
    call("DELETE", f"/image/v2/images/{img['id']}", token=T)

way = "clone + flatten" if POOL == "rbd" else "full copy of the chain"
print(f"| {POOL} pool, disk (every cluster written) | Snapstack createImage → active | OpenStack way ({way}) | speed-up | guest pause (QMP STOP→RESUME) | guest SEQ without gap |")
print("|---|---|---|---|---|---|")
for size, snap, copy, gapless, paused in rows:
    print(f"| {size} GiB | {snap*1000:.0f} ms | {copy:.1f} s | {copy/snap:.0f}× | {paused:.0f} ms | {'yes' if gapless else 'NO'} |")
if len(rows) >= 2:
    print()
    print(f"Snapstack {rows[-1][0]} GiB / {rows[0][0]} GiB: {rows[-1][1]/rows[0][1]:.2f}")
PY
