#!/usr/bin/env bash
# Servers on QEMU (TCG): disk provisioning time by image size, and suspend +
# resume through the API against the same thing done by hand on a bare QEMU,
# in one run.
#
#   bench/compute.sh [ROUNDS]     (default 3; medians are printed)
#
# (i)  Provisioning: the test guest's disk converted to qcow2 images of 1 GiB
#      and 16 GiB virtual size (qemu-img convert + resize), uploaded, and
#      booted with flavors of 1 GiB and 16 GiB disks (1 vCPU, 256 MiB):
#      POST /servers → ACTIVE, and POST /servers → the guest's banner on the
#      console. Rounds alternate 1 GiB / 16 GiB; each server is deleted after.
# (ii) Suspend + resume of a 256 MiB guest: POST suspend → SUSPENDED and
#      POST resume → ACTIVE (API polled every 10 ms), against a bare
#      qemu-system-x86_64 started with the same options on an overlay of the
#      same disk, by hand over QMP: stop, raise max-bandwidth, migrate to
#      `exec:cat > file`, poll until completed, quit (→ process gone); then
#      start with `-incoming 'exec:cat file'`, poll until loaded, cont
#      (→ running). The two guests run side by side; rounds alternate.
#      Snapstack also fsyncs the state file before the server is SUSPENDED;
#      the bare suspend is also timed with an fsync added, for reference.
#
# Needs the test guest (scripts/build-guest.sh), curl, python3, qemu.
# Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-3}
GUEST_DIR=${SNAPSTACK_GUEST_DIR:-$ROOT/build/guest}
[ -f "$GUEST_DIR/guest.qcow2" ] || { echo "no test guest at $GUEST_DIR: run scripts/build-guest.sh" >&2; exit 1; }
mkdir -p build
WORK=$(mktemp -d "$ROOT/build/bench-compute.XXXXXX")
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  # The VMs this run started: their command lines name $WORK.
  for pid in $(pgrep -f "qemu-system-x86_64 .*$WORK/" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

source bench/lib.sh
start_snapstack "$WORK"

for size in 1 16; do
  qemu-img convert -q -f qcow2 -O qcow2 "$GUEST_DIR/guest.qcow2" "$WORK/guest-${size}g.qcow2"
  qemu-img resize -q -f qcow2 "$WORK/guest-${size}g.qcow2" "${size}G"
done

echo "bench/compute.sh $ROUNDS"
echo
BENCH_URL=$URL BENCH_WORK=$WORK BENCH_ROUNDS=$ROUNDS BENCH_GUEST=$GUEST_DIR/guest.qcow2 python3 - <<'PY'
import json, os, socket, statistics, subprocess, time, urllib.request, urllib.error

URL = os.environ["BENCH_URL"]
WORK = os.environ["BENCH_WORK"]
ROUNDS = int(os.environ["BENCH_ROUNDS"])
GUEST = os.environ["BENCH_GUEST"]
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


# ---------------------------------------------------------------- (i) provisioning
images = {size: upload(f"guest-{size}g", f"{WORK}/guest-{size}g.qcow2") for size in (1, 16)}
for size in (1, 16):
    flavor(f"d{size}", size)
flavor("tiny", 1)
prov = {1: [], 16: []}
for r in range(ROUNDS):
    for size in (1, 16):
        sid, active, banner = create(f"prov-{size}-{r}", images[size], f"d{size}")
        prov[size].append((active, banner))
        delete(sid)


# ---------------------------------------------------------------- (ii) suspend/resume
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
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")


BARE = f"{WORK}/bare"
os.makedirs(BARE)
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", GUEST, "-F", "qcow2",
                f"{BARE}/disk.qcow2", "1G"], check=True)
STATE = f"{BARE}/memory.state"
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


def bare_suspend(proc, qmp):
    """Returns (seconds to QEMU gone, seconds to QEMU gone and the file fsynced)."""
    t0 = time.monotonic()
    qmp.cmd("stop")
    qmp.cmd("migrate-set-parameters", {"max-bandwidth": 1 << 40})
    qmp.cmd("migrate", {"uri": f"exec:cat > {STATE}"})
    while qmp.cmd("query-migrate").get("status") != "completed":
        time.sleep(0.01)
    try:
        qmp.cmd("quit")
    except EOFError:
        pass
    proc.wait()
    gone = time.monotonic() - t0
    fd = os.open(STATE, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return gone, time.monotonic() - t0


def bare_resume():
    t0 = time.monotonic()
    proc = bare_qemu(["-incoming", f"exec:cat {STATE}"])
    qmp = Qmp(SOCK)
    while qmp.cmd("query-status")["status"] == "inmigrate":
        time.sleep(0.01)
    qmp.cmd("cont")
    assert qmp.cmd("query-status")["status"] == "running"
    return proc, qmp, time.monotonic() - t0


sid, _, _ = create("suspender", images[1], "tiny")
proc = bare_qemu([])
qmp = Qmp(SOCK)
wait_console(read_bare_console, lambda t: BANNER in t and seqs(t), time.monotonic(), "the bare banner")
wait_console(lambda: console(sid), lambda t: seqs(t), time.monotonic(), "a SEQ line")
api_times, bare_times, bare_synced, state_sizes = [], [], [], {}
for r in range(ROUNDS):
    before = seqs(console(sid))[-1]
    t0 = time.monotonic()
    api("POST", f"/compute/v2.1/servers/{sid}/action", {"suspend": None})
    suspend = wait_status(sid, "SUSPENDED", t0)
    state_sizes["api"] = os.path.getsize(f"{WORK}/data/state/{sid}.state")
    t0 = time.monotonic()
    api("POST", f"/compute/v2.1/servers/{sid}/action", {"resume": None})
    resume = wait_status(sid, "ACTIVE", t0)
    api_times.append((suspend, resume))
    wait_console(lambda: console(sid), lambda t: seqs(t)[-1][0] > before[0], time.monotonic(), "SEQ after resume")
    after = [s for s in seqs(console(sid)) if s[0] > before[0]][0]
    assert after[1] > before[1], f"the guest rebooted: {before} then {after}"

    before = seqs(read_bare_console())[-1]
    suspend, synced = bare_suspend(proc, qmp)
    state_sizes["bare"] = os.path.getsize(STATE)
    proc, qmp, resume = bare_resume()
    bare_times.append((suspend, resume))
    bare_synced.append(synced)
    wait_console(read_bare_console, lambda t: seqs(t)[-1][0] > before[0], time.monotonic(), "bare SEQ after resume")
    os.unlink(STATE)
qmp.cmd("quit")
proc.wait()
delete(sid)

# ---------------------------------------------------------------- the table
def s(x):
    return f"{x:.2f} s"


def ratio(a, b):
    return f"{a / b:.2f}"


a1, a16 = med([p[0] for p in prov[1]]), med([p[0] for p in prov[16]])
b1, b16 = med([p[1] for p in prov[1]]), med([p[1] for p in prov[16]])
print(f"Servers on QEMU (TCG), {os.cpu_count()} cores, {ROUNDS} rounds (medians), {time.strftime('%Y-%m-%d', time.gmtime())}")
print()
print("| operation | 1 GiB image + disk | 16 GiB image + disk | ratio 16 / 1 |")
print("|---|---|---|---|")
print(f"| POST /servers → ACTIVE | {s(a1)} | {s(a16)} | {ratio(a16, a1)} |")
print(f"| POST /servers → guest banner on the console | {s(b1)} | {s(b16)} | {ratio(b16, b1)} |")
print()
sa, ra = med([t[0] for t in api_times]), med([t[1] for t in api_times])
sb, rb = med([t[0] for t in bare_times]), med([t[1] for t in bare_times])
print("| 256 MiB guest | Snapstack API | bare QEMU by hand (QMP) | ratio API / bare |")
print("|---|---|---|---|")
print(f"| suspend (request → SUSPENDED; stop + migrate exec:cat + quit) | {s(sa)} | {s(sb)} | {ratio(sa, sb)} |")
print(f"| resume (request → ACTIVE; -incoming exec:cat + cont → running) | {s(ra)} | {s(rb)} | {ratio(ra, rb)} |")
print(f"| suspend + resume | {s(sa + ra)} | {s(sb + rb)} | {ratio(sa + ra, sb + rb)} |")
sf = med(bare_synced)
print(f"| suspend, bare + fsync of the state file (as Snapstack does) | {s(sa)} | {s(sf)} | {ratio(sa, sf)} |")
print()
print(f"Memory state: {state_sizes['api'] >> 20} MiB (API), {state_sizes['bare'] >> 20} MiB (bare). "
      f"All rounds, API (suspend, resume): {[(round(a, 2), round(b, 2)) for a, b in api_times]}; "
      f"bare: {[(round(a, 2), round(b, 2)) for a, b in bare_times]}; provisioning (ACTIVE, banner) "
      f"1 GiB: {[(round(a, 2), round(b, 2)) for a, b in prov[1]]}, 16 GiB: {[(round(a, 2), round(b, 2)) for a, b in prov[16]]}.")
PY
