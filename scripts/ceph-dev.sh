#!/usr/bin/env bash
# ceph-dev.sh — a throw-away single-node Ceph 16 cluster for development and tests.
#
#   scripts/ceph-dev.sh start  [DIR]   start (idempotent), wait until usable, print the time taken
#   scripts/ceph-dev.sh stop   [DIR]   kill the daemons, remove DIR
#   scripts/ceph-dev.sh status [DIR]   daemons + `ceph -s`; exit 0 only when usable
#   scripts/ceph-dev.sh env    [DIR]   print `export CEPH_CONF=...` (use: eval "$(scripts/ceph-dev.sh env)")
#
# DIR defaults to build/ceph under the repository root. Everything the cluster owns lives
# in DIR: ceph.conf, monmap, pid files, logs, admin sockets, the monitor's store.
#
# The cluster: one monitor (mon.a) and one OSD (osd.0) with `osd objectstore = memstore`,
# all on 127.0.0.1, `auth ... required = none`, pools of size 1 / min_size 1, no mgr, no
# systemd (the daemons are run directly with `-c DIR/ceph.conf`). Pools `images`, `vms` and
# `volumes` are created with the `rbd` application enabled.
#
# Memstore keeps every object in RAM. `memstore device bytes` is a soft limit: writes past it
# succeed until the OSD's next tick (a few seconds) marks it full; from then on every write
# -- even opening an image with exclusive-lock -- *hangs* (HEALTH_ERR "1 full osd(s)"), or
# fails with ETIMEDOUT after N s if the client sets `rados osd op timeout = N`. Size it for
# the job (a flatten needs room for the parent and the full copy) with
#   CEPH_DEV_MEMSTORE_BYTES   (default 2 GiB)
# Other knobs:
#   CEPH_DEV_MON_PORT         msgr2 port of the monitor (default: 3300, or the next free
#                             one of 3300..3309; msgr1 listens on this port + 3489, i.e. 6789)
#   CEPH_DEV_TIMEOUT          seconds to wait for the cluster to become usable (default 90)
#   CEPH_DEV_VERBOSE=1        print the time of each start phase
#
# Start-up takes ~3 s (it was ~10 s before `paxos propose interval` was lowered: a lone
# monitor otherwise batches every map change for a second). `stop` kills only the daemons
# whose pid files are in DIR, and refuses to delete a DIR this script did not create.
#
# Clones: the cluster keeps Ceph's default `require_min_compat_client luminous`, so librbd's
# `rbd_default_clone_format = auto` picks clone format 1: a snapshot must be *protected*
# before it can be cloned, and cannot be unprotected while it has children. (Clone v2, which
# needs no protection, is only used once min_compat_client is raised to mimic; we don't.)
#
# No mgr runs: mgr-served commands (`ceph pg dump`, `ceph osd df`, `rbd task add`, pg
# autoscaling, the pg/usage lines of `ceph -s`) are unavailable, and the "no active mgr"
# warning is silenced (`mon mgr mkfs grace`), so a healthy cluster says HEALTH_OK. Monitor
# commands (pool create, application enable) and all librbd/`rbd` operations work.
set -euo pipefail

CMD=${1:-}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${2:-$REPO_ROOT/build/ceph}
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
CONF=$DIR/ceph.conf
MEMSTORE_BYTES=${CEPH_DEV_MEMSTORE_BYTES:-$((2 * 1024 * 1024 * 1024))}
TIMEOUT=${CEPH_DEV_TIMEOUT:-90}
POOLS=(images vms volumes)
PG_NUM=8

die() { echo "ceph-dev: $*" >&2; exit 1; }
log() { echo "ceph-dev: $*" >&2; }
T0=$(date +%s.%N)
phase() { [[ -z ${CEPH_DEV_VERBOSE:-} ]] || log "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%5.1f s", b-a}') $*"; }

# ceph CLI against our cluster only, never waiting forever.
ceph_cli() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

pid_alive() { # pid_alive FILE
    [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

choose_mon_port() {
    if [[ -n ${CEPH_DEV_MON_PORT:-} ]]; then
        port_busy "$CEPH_DEV_MON_PORT" && die "port $CEPH_DEV_MON_PORT is in use (CEPH_DEV_MON_PORT)"
        port_busy $((CEPH_DEV_MON_PORT + 3489)) && die "port $((CEPH_DEV_MON_PORT + 3489)) is in use"
        echo "$CEPH_DEV_MON_PORT"
        return
    fi
    local p
    for p in $(seq 3300 3309); do
        if ! port_busy "$p" && ! port_busy $((p + 3489)); then echo "$p"; return; fi
    done
    die "no free monitor port in 3300..3309; set CEPH_DEV_MON_PORT"
}

write_conf() { # write_conf FSID PORT
    local fsid=$1 v2=$2 v1=$(($2 + 3489))
    cat >"$CONF" <<EOF
# Written by scripts/ceph-dev.sh; removed by 'ceph-dev.sh stop'.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
run dir = $DIR/run
admin socket = $DIR/run/\$name.\$pid.\$cctid.asok
pid file = $DIR/run/\$name.pid
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = $PG_NUM
osd pool default pgp num = $PG_NUM
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
# No mgr by design: don't turn HEALTH_OK into "no active mgr" after the 120 s grace.
mon mgr mkfs grace = 31536000
mon data avail warn = 2
mon data avail crit = 1
# A one-monitor cluster has nobody to batch proposals with: commit map changes at once.
paxos propose interval = 0.05
paxos min wait = 0.01
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object name len = 460
osd max object namespace len = 64

[mon]
mon data = $DIR/mon/\$cluster-\$id
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok

[osd]
osd data = $DIR/osd/\$cluster-\$id
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
osd crush update on start = true

[client]
# librbd logs its errors (e.g. "cannot unprotect: at least 1 child") here, not on stderr.
log file = $DIR/log/client.log
err to stderr = false
EOF
}

# Exit 0 when `ceph -s` says HEALTH_OK or HEALTH_WARN with the OSD up, and rbd can list
# every pool.
usable() {
    [[ -f $CONF ]] || return 1
    ceph_cli -s -f json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = s["health"]["status"] in ("HEALTH_OK", "HEALTH_WARN") and s["osdmap"]["num_up_osds"] >= 1
sys.exit(0 if ok else 1)' 2>/dev/null || return 1
    local pool
    for pool in "${POOLS[@]}"; do
        timeout 15 rbd -c "$CONF" ls "$pool" >/dev/null 2>&1 || return 1
    done
}

running() { pid_alive "$DIR/run/mon.a.pid" && pid_alive "$DIR/run/osd.0.pid"; }

kill_daemons() {
    local f pid i
    for f in "$DIR"/run/osd.0.pid "$DIR"/run/mon.a.pid; do
        pid_alive "$f" || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    done
}

wait_until() { # wait_until DEADLINE WHAT CMD...
    local deadline=$1 what=$2
    shift 2
    until "$@"; do
        (( $(date +%s) < deadline )) || die "timed out waiting for $what; logs in $DIR/log"
        sleep 0.3
    done
}

cmd_start() {
    local t0 t1 deadline
    t0=$(date +%s.%N)
    deadline=$(( $(date +%s) + TIMEOUT ))
    if running; then
        wait_until "$deadline" "the running cluster to become usable" usable
        t1=$(date +%s.%N)
        printf 'ceph-dev: ready in %.1f s (already running; CEPH_CONF=%s)\n' \
            "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$CONF"
        return
    fi
    if [[ -e $DIR ]]; then
        ours || die "$DIR exists and was not made by ceph-dev.sh; choose another DIR"
        log "stale cluster directory, recreating $DIR"
        kill_daemons
        rm -rf "$DIR"
    fi
    mkdir -p "$DIR"/{run,log,mon,osd/ceph-0}

    local fsid port osd_uuid osd_id i
    fsid=$(uuidgen)
    port=$(choose_mon_port)
    write_conf "$fsid" "$port"

    # Monitor.
    monmaptool --create --clobber --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 3489))]" "$DIR/monmap" >/dev/null
    ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" \
        >"$DIR/log/mon-mkfs.log" 2>&1 || die "ceph-mon --mkfs failed, see $DIR/log/mon-mkfs.log"
    ceph-mon -c "$CONF" -i a 2>>"$DIR/log/mon.a.stderr" || die "ceph-mon failed to start, see $DIR/log/mon.a.log"

    phase "monitor started"
    # OSD: register it with the monitor, make its (in-memory) store, start it.
    osd_uuid=$(uuidgen)
    osd_id=$(ceph_cli osd new "$osd_uuid") || die "'ceph osd new' failed (monitor not up?)"
    [[ $osd_id == 0 ]] || die "expected osd id 0, got '$osd_id'"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        >"$DIR/log/osd-mkfs.log" 2>&1 || die "ceph-osd --mkfs failed, see $DIR/log/osd-mkfs.log"
    ceph-osd -c "$CONF" -i 0 2>>"$DIR/log/osd.0.stderr" || die "ceph-osd failed to start, see $DIR/log/osd.0.log"

    phase "osd started"
    # Pools (monitor commands and librbd: no mgr needed).
    local pool
    for pool in "${POOLS[@]}"; do
        ceph_cli osd pool create "$pool" "$PG_NUM" "$PG_NUM" >/dev/null 2>&1 \
            || die "cannot create pool $pool"
    done
    # `rbd pool init` enables the rbd application and validates the pool (a self-managed
    # snapshot round trip); done here, the first `rbd create` in each pool is not 2 s slower.
    # The three run in parallel (each waits ~2 s for an osdmap round trip).
    local pids=()
    for pool in "${POOLS[@]}"; do
        timeout 60 rbd -c "$CONF" pool init "$pool" >"$DIR/log/pool-init-$pool.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || die "'rbd pool init ${POOLS[$i]}' failed, see $DIR/log/pool-init-${POOLS[$i]}.log"
    done

    phase "pools created"
    wait_until "$deadline" "the OSD to come up and rbd to answer" usable
    t1=$(date +%s.%N)
    ceph_cli health 2>/dev/null | sed 's/^/ceph-dev: /' >&2 || true
    printf 'ceph-dev: ready in %.1f s (CEPH_CONF=%s)\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$CONF"
}

# A directory we may delete: absent, empty, or holding a ceph.conf written by this script.
ours() {
    [[ ! -e $DIR ]] || [[ -z $(ls -A "$DIR") ]] || grep -qs '^# Written by scripts/ceph-dev.sh' "$CONF"
}

cmd_stop() {
    ours || die "$DIR was not made by ceph-dev.sh; not touching it"
    kill_daemons
    rm -rf "$DIR"
    log "stopped, removed $DIR"
}

cmd_status() {
    local d
    for d in mon.a osd.0; do
        if pid_alive "$DIR/run/$d.pid"; then
            echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"
        else
            echo "$d: not running"
        fi
    done
    running || exit 1
    ceph_cli -s || exit 1
    usable || { echo "not usable yet (OSD down or rbd not answering)"; exit 1; }
}

cmd_env() {
    echo "export CEPH_CONF=$CONF"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: $0 start|stop|status|env [DIR]" >&2; exit 2 ;;
esac
