#!/usr/bin/env bash
# Restore points (issue #7): guest pause and total time of each method on a
# 256 MiB test guest (TCG) through the API, against the same sequences done
# by hand over QMP on a bare QEMU started with the same options on an
# overlay of the same disk, in one run; and revert time.
#
#   bench/restore-points.sh [--rbd] [ROUNDS]     (default 3; medians, min–max)
#
# Two guests, one after the other: "idle" (the test guest, one record every
# 100 ms) and "busy" (the same guest booted with a kernel command line that
# makes the writer write a record every 10 ms and runs `dd if=/dev/urandom
# of=/dev/null bs=64M` — a 64 MiB buffer rewritten with new data all the
# time, ~35 MB/s of dirtied memory by QEMU's calc-dirty-rate, and a vCPU
# that never idles; built here into build/guest-busy by
# scripts/build-guest.sh with SNAPSTACK_GUEST_CMDLINE).
#
# --rbd: Snapstack on the rbd pool of a throw-away Ceph dev cluster
# (build/ceph-bench-restore-points, memstore): external with memory (RBD
# snapshot + memory streamed into an RBD image), disk-only (RBD snapshot)
# and revert (an O(1) clone of the point's snapshot, memory streamed back by
# `rbd export`); no internal points (raw disks) and no by-hand rows.
#
# Snapstack (POST …/restore-points, polled every 10 ms until the point is
# available and the server idle; pause = the point's guest_pause_ms, from
# QEMU's STOP/RESUME event timestamps):
#   external with memory (stop → transaction → background-snapshot migrate),
#   disk-only (one transaction), internal (snapshot-save job);
#   revert to the memory point: POST revert → server ACTIVE without task.
# Bare QEMU by hand (pause from the same events):
#   libvirt's `snapshot-create --live --memspec` sequence: live migrate to
#   `exec:cat > file` until completed (QEMU stops the guest at the end),
#   transaction blockdev-snapshot-sync, cont;
#   HMP `savevm` (the internal snapshot libvirt takes without options).
# Needs the test guest (scripts/build-guest.sh), curl, python3, qemu.
# Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
POOL=file
if [ "${1:-}" = "--rbd" ]; then POOL=rbd; shift; fi
ROUNDS=${1:-3}
GUEST_DIR=${SNAPSTACK_GUEST_DIR:-$ROOT/build/guest}
[ -f "$GUEST_DIR/guest.qcow2" ] || { echo "no test guest at $GUEST_DIR: run scripts/build-guest.sh" >&2; exit 1; }
BUSY_DIR=$ROOT/build/guest-busy
SNAPSTACK_GUEST_CMDLINE='console=ttyS0,115200 quiet snapstack.interval_ms=10 snapstack.print_every=100 rdinit=/bin/busybox -- sh -c "/bin/busybox mount -t devtmpfs devtmpfs /dev; /bin/busybox dd if=/dev/urandom of=/dev/null bs=64M \& exec /init"' \
  scripts/build-guest.sh "$BUSY_DIR" >&2
mkdir -p build
WORK=$(mktemp -d "$ROOT/build/bench-restore-points.XXXXXX")
SERVER_PID=
CEPH_DIR=$ROOT/build/ceph-bench-restore-points
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

echo "bench/restore-points.sh $([ $POOL = rbd ] && echo '--rbd ')$ROUNDS"
echo
BENCH_URL=$URL BENCH_WORK=$WORK BENCH_ROUNDS=$ROUNDS BENCH_POOL=$POOL \
BENCH_GUESTS="idle=$GUEST_DIR/guest.qcow2 busy=$BUSY_DIR/guest.qcow2" python3 - <<'PY'
import json, os, socket, statistics, subprocess, time, urllib.request, urllib.error

URL = os.environ["BENCH_URL"]
WORK = os.environ["BENCH_WORK"]
ROUNDS = int(os.environ["BENCH_ROUNDS"])
GUESTS = [g.split("=", 1) for g in os.environ["BENCH_GUESTS"].split()]
POOL = os.environ["BENCH_POOL"]
BANNER = "SNAPSTACK-GUEST "

def call(method, path, body=None, token=None, raw=None, ctype="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req) as r:
            text = r.read()
            return r.status, dict(r.headers), (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), None


auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": "bench-pw"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
_, headers, _ = call("POST", "/identity/v3/auth/tokens", auth)
TOKEN = {k.lower(): v for k, v in headers.items()}["x-subject-token"]


def api(method, path, body=None):
    return call(method, path, body, TOKEN)


def upload(name, path):
    _, _, img = api("POST", "/image/v2/images", {"name": name, "disk_format": "qcow2", "container_format": "bare"})
    with open(path, "rb") as f:
        status, _, _ = call("PUT", f"/image/v2/images/{img['id']}/file", raw=f.read(), token=TOKEN,
                            ctype="application/octet-stream")
    assert status == 204, status
    return img["id"]


def flavor(fid, disk):
    status, _, _ = api("POST", "/compute/v2.1/flavors",
                       {"flavor": {"id": fid, "name": fid, "vcpus": 1, "ram": 256, "disk": disk}})
    assert status == 200, status


def server(sid):
    status, _, body = api("GET", f"/compute/v2.1/servers/{sid}")
    return body["server"] if status == 200 else None


def wait_status(sid, want, t0, timeout=300):
    while True:
        s = server(sid)
        if s and s["status"] == want and s["OS-EXT-STS:task_state"] is None:
            return time.monotonic() - t0
        if s and s["status"] == "ERROR":
            raise SystemExit(f"server {sid} went to ERROR: {s.get('fault')}")
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"server {sid} never became {want}: {s}")
        time.sleep(0.01)


def console(sid):
    _, _, body = api("POST", f"/compute/v2.1/servers/{sid}/action", {"os-getConsoleOutput": {}})
    return body["output"]


def seqs(text):
    out = []
    for line in text.splitlines():
        at = line.find("SEQ ")
        if at >= 0 and "ram=" in line:
            words = line[at + 4:].split()
            try:
                out.append((int(words[0]), int(words[1].split("=")[1])))
            except (ValueError, IndexError):
                pass
    return out


def wait_console(read, pred, t0, what, timeout=300):
    while True:
        text = read()
        if pred(text):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"never saw {what}:\n{text[-2000:]}")
        time.sleep(0.1)


def create(name, image, flavor_id):
    body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor_id, "networks": "none"}}
    t0 = time.monotonic()
    status, _, created = api("POST", "/compute/v2.1/servers", body)
    assert status == 202, status
    sid = created["server"]["id"]
    active = wait_status(sid, "ACTIVE", t0)
    banner = wait_console(lambda: console(sid), lambda t: BANNER in t, t0, "the banner")
    return sid, active, banner


def delete(sid):
    api("DELETE", f"/compute/v2.1/servers/{sid}")
    while server(sid) is not None:
        time.sleep(0.05)


def med(xs):
    return statistics.median(xs)



def point_path(sid):
    return f"/compute/v2.1/servers/{sid}/restore-points"


def take(sid, name, memory, method):
    t0 = time.monotonic()
    status, _, body = api("POST", point_path(sid),
                          {"restore_point": {"name": name, "memory": memory, "method": method}})
    assert status == 202, (status, body)
    pid = body["restore_point"]["id"]
    while True:
        _, _, p = api("GET", f"{point_path(sid)}/{pid}")
        p = p["restore_point"]
        if p["status"] == "available" and server(sid)["OS-EXT-STS:task_state"] is None:
            return pid, p["guest_pause_ms"], time.monotonic() - t0
        if p["status"] in ("error", "broken") or time.monotonic() - t0 > 300:
            raise SystemExit(f"point {name}: {p}")
        time.sleep(0.01)


class Qmp:
    def __init__(self, path, deadline=60):
        t0 = time.monotonic()
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() - t0 > deadline:
                    raise
                time.sleep(0.005)
        self.f = self.sock.makefile("rw")
        self.events = []
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError(f"QMP closed during {name}")
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")

    def wait_event(self, name, timeout=10):
        """Reads until event `name` has arrived (events come after the reply
        of the command that caused them)."""
        t0 = time.monotonic()
        while not any(e["event"] == name for e in self.events):
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"no {name} event within {timeout} s")
            self.cmd("query-status")
            time.sleep(0.001)



BARE = f"{WORK}/bare"
os.makedirs(BARE)
SOCK = f"{BARE}/qmp.sock"
CONSOLE = f"{BARE}/console.log"


def bare_qemu(extra):
    """The options Snapstack starts a tiny server with, on the bare overlay."""
    disk_file = json.dumps({"driver": "file", "filename": f"{BARE}/disk.qcow2", "node-name": "root-storage"})
    disk_fmt = json.dumps({"driver": "qcow2", "file": "root-storage", "node-name": "root"})
    args = ["qemu-system-x86_64", "-name", "guest=bare", "-no-user-config", "-nodefaults",
            "-display", "none", "-machine", "q35,graphics=off", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-no-shutdown", "-chardev", f"socket,id=qmp,path={SOCK},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
            "-chardev", f"file,id=serial0,path={CONSOLE},append=on", "-serial", "chardev:serial0",
            "-blockdev", disk_file, "-blockdev", disk_fmt,
            "-device", '{"drive":"root","driver":"virtio-blk-pci","id":"root-dev"}'] + extra
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(f"{BARE}/qemu.log", "a"),
                            start_new_session=True)


def read_bare_console():
    with open(CONSOLE, errors="replace") as f:
        return f.read()


def paused_ms(events):
    """STOP → RESUME by QEMU's timestamps, summed, in ms."""
    total, stopped = 0.0, None
    for e in events:
        ts = e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
        if e["event"] == "STOP" and stopped is None:
            stopped = ts
        elif e["event"] == "RESUME" and stopped is not None:
            total += ts - stopped
            stopped = None
    return total * 1000


def libvirt_live_memspec(qmp, r):
    """virsh snapshot-create --live --memspec: live migration to a file, the
    disks cut while QEMU holds the guest stopped at its end, cont."""
    qmp.events.clear()
    t0 = time.monotonic()
    qmp.cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
    qmp.cmd("migrate", {"uri": f"exec:cat > {BARE}/live-{r}.state"})
    while qmp.cmd("query-migrate").get("status") != "completed":
        time.sleep(0.001)
    top = [b for b in qmp.cmd("query-block") if "root-dev" in b.get("qdev", "")][0]["inserted"]["node-name"]
    qmp.cmd("transaction", {"actions": [{"type": "blockdev-snapshot-sync", "data": {
        "node-name": top, "snapshot-file": f"{BARE}/live-{r}.qcow2",
        "snapshot-node-name": f"live{r}", "format": "qcow2", "mode": "absolute-paths"}}]})
    qmp.cmd("cont")
    total = time.monotonic() - t0
    qmp.wait_event("RESUME")
    return paused_ms(qmp.events), total


def hmp_savevm(qmp, r):
    qmp.events.clear()
    t0 = time.monotonic()
    out = qmp.cmd("human-monitor-command", {"command-line": f"savevm bench{r}"})
    assert not out.strip(), out
    total = time.monotonic() - t0
    qmp.wait_event("RESUME")
    return paused_ms(qmp.events), total


def suite(load, guest):
    """Every method on one guest (a Snapstack server and, on the file pool,
    a bare QEMU of the same disk beside it); returns {method: [(pause, total)]}."""
    image = upload(f"guest-{load}", guest)
    body = {"server": {"name": f"rp-{load}", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}
    _, _, created = api("POST", "/compute/v2.1/servers", body)
    sid = created["server"]["id"]
    wait_status(sid, "ACTIVE", time.monotonic())
    wait_console(lambda: console(sid), lambda t: len(seqs(t)) >= 2, time.monotonic(), "SEQ lines")
    bare = POOL == "file"
    if bare:
        for f in ("disk.qcow2", "console.log"):
            if os.path.exists(f"{BARE}/{f}"):
                os.unlink(f"{BARE}/{f}")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", guest, "-F", "qcow2",
                        f"{BARE}/disk.qcow2", "1G"], check=True)
        proc = bare_qemu([])
        qmp = Qmp(SOCK)
        wait_console(read_bare_console, lambda t: len(seqs(t)) >= 2, time.monotonic(), "bare SEQ lines")
    results = {k: [] for k in ("memory", "disk", "internal", "libvirt", "savevm", "revert")}
    for r in range(ROUNDS):
        mem_id, pause, total = take(sid, f"m{r}", True, "external")
        results["memory"].append((pause, total))
        _, pause, total = take(sid, f"d{r}", False, "external")
        results["disk"].append((pause, total))
        if bare:
            _, pause, total = take(sid, f"i{r}", True, "internal")
            results["internal"].append((pause, total))
            results["libvirt"].append(libvirt_live_memspec(qmp, r))
            results["savevm"].append(hmp_savevm(qmp, r))
        before = len(seqs(console(sid)))
        t0 = time.monotonic()
        status, _, _ = api("POST", f"{point_path(sid)}/{mem_id}/action", {"revert": {}})
        assert status == 202, status
        active = wait_status(sid, "ACTIVE", t0)
        running = wait_console(lambda: console(sid), lambda t: len(seqs(t)) > before, t0, "SEQ after revert")
        results["revert"].append((active, running))
    if bare:
        qmp.cmd("quit")
        proc.wait()
    delete(sid)
    return results


flavor("tiny", 1)
all_results = {load: suite(load, guest) for load, guest in GUESTS}

def fmt(xs, unit="ms", scale=1.0):
    xs = [x * scale for x in xs]
    return f"{statistics.median(xs):.1f} {unit} ({min(xs):.1f}–{max(xs):.1f})"


print(f"Restore points, 256 MiB test guest (TCG, QEMU 7.2), {POOL} pool, {os.cpu_count()} cores, "
      f"{ROUNDS} rounds: median (min–max), {time.strftime('%Y-%m-%d', time.gmtime())}")
print()
print("| method | guest | guest pause | total (request → done) |")
print("|---|---|---|---|")
rows = [("Snapstack external with memory", "memory"), ("Snapstack disk-only", "disk"),
        ("Snapstack internal (snapshot-save)", "internal"),
        ("libvirt `--live --memspec` sequence, by hand over QMP", "libvirt"),
        ("HMP `savevm`, by hand", "savevm")]
for label, key in rows:
    for load, _ in GUESTS:
        got = all_results[load][key]
        if not got:
            continue
        pauses = [p for p, _ in got]
        totals = [t for _, t in got]
        print(f"| {label} | {load} | {fmt(pauses)} | {fmt(totals, 'ms', 1000)} |")
print()
print("| revert to the memory point | guest | time |")
print("|---|---|---|")
for load, _ in GUESTS:
    got = all_results[load]["revert"]
    print(f"| POST revert → server ACTIVE, no task | {load} | {fmt([a for a, _ in got], 'ms', 1000)} |")
for load, _ in GUESTS:
    got = all_results[load]["revert"]
    print(f"| POST revert → next SEQ line on the console (printed every 1 s, polled every 100 ms) | {load} | "
          f"{fmt([b for _, b in got], 'ms', 1000)} |")
if POOL == "file":
    print()
    for load, _ in GUESTS:
        m = statistics.median([p for p, _ in all_results[load]["memory"]])
        l = statistics.median([p for p, _ in all_results[load]["libvirt"]])
        print(f"{load}: external with memory pauses {l / m:.1f}× less than the libvirt sequence (medians).")
PY
