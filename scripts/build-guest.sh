#!/usr/bin/env bash
# Builds Snapstack's test guest from Debian packages (see guest/README.md).
#
#   scripts/build-guest.sh [OUTDIR]        (default: build/guest/)
#
# Produces in OUTDIR:
#   guest.raw, guest.qcow2  one bootable 64 MiB disk (MBR, syslinux on a FAT
#                           partition, the record log in partition 2)
#   vmlinuz, initrd.img     the same kernel and initramfs, for -kernel/-initrd
#   cmdline                 the kernel command line the disk boots with
#   kernel-release          e.g. 6.1.0-56-amd64
#   seqwriter               the guest's writer (static, also runs on the host)
#   guest-noagent.qcow2     the same disk booting with snapstack.agent=off (no
#                           guest agent), for the "no agent" paths
#
# Nothing is installed on the host and nothing is mounted: the kernel package
# is fetched with `apt-get download` into OUTDIR/cache and unpacked with
# `dpkg-deb -x`; the FAT partition is made with mtools and syslinux's mtools
# installer.  Idempotent: does nothing when the outputs are newer than every
# input.  Environment:
#   SNAPSTACK_GUEST_KERNEL_DEB=/path/linux-image-…_amd64.deb  use this package
#   SNAPSTACK_GUEST_CMDLINE="…"   kernel command line (default: see CMDLINE)
#
# Needs (Debian): busybox-static cpio dpkg apt gcc libc6-dev mtools syslinux
# syslinux-common qemu-utils python3 gzip util-linux(flock)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/build/guest}")
GUEST=$ROOT/guest
CMDLINE=${SNAPSTACK_GUEST_CMDLINE:-console=ttyS0,115200 quiet}

DISK_MIB=64          # virtual size of the disk
BOOT_START=2048      # partition 1 (FAT16, syslinux, kernel, initrd)
BOOT_SECTORS=63488   #   = 31 MiB, ends at 32 MiB
DATA_START=65536     # partition 2 (type 0xDA): the record log, 32 MiB
DATA_SECTORS=65536   #   header + 65535 records

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb gcc cpio gzip mformat mcopy syslinux qemu-img python3 flock; do
	command -v "$tool" >/dev/null || die "$tool not found (see the package list at the top of $0)"
done
[ -x /bin/busybox ] || die "/bin/busybox not found (apt-get install busybox-static)"
case " $(/bin/busybox --list | tr '\n' ' ') " in *" depmod "*) ;; *) die "/bin/busybox has no depmod applet (install busybox-static)" ;; esac
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR_BIN" ] || die "$MBR_BIN not found (apt-get install syslinux-common)"

mkdir -p "$OUT/cache"
exec 9>"$OUT/.lock"
flock 9

# --- the kernel package --------------------------------------------------
find_kernel_deb() {
	if [ -n "${SNAPSTACK_GUEST_KERNEL_DEB:-}" ]; then
		[ -f "$SNAPSTACK_GUEST_KERNEL_DEB" ] || die "SNAPSTACK_GUEST_KERNEL_DEB=$SNAPSTACK_GUEST_KERNEL_DEB does not exist"
		realpath "$SNAPSTACK_GUEST_KERNEL_DEB"
		return
	fi
	local pkg deb
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		deb=$(ls -t "$OUT"/cache/linux-image-*.deb 2>/dev/null | head -n1 || true)
		[ -n "$deb" ] || die "apt-cache knows no linux-image-amd64 (run apt-get update)"
		log "apt-cache knows no linux-image-amd64; using cached $(basename "$deb")"
		echo "$deb"
		return
	fi
	deb=$(ls "$OUT"/cache/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		log "downloading $pkg"
		local sandbox=()
		[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
		(cd "$OUT/cache" && apt-get -q "${sandbox[@]}" download "$pkg" >&2) ||
			die "apt-get download $pkg failed (stale package lists? run apt-get update)"
		deb=$(ls "$OUT"/cache/"${pkg}"_*.deb | head -n1)
	fi
	echo "$deb"
}
KERNEL_DEB=$(find_kernel_deb)

# --- up to date? -----------------------------------------------------------
STAMP=$OUT/.built
OUTPUTS=(guest.raw guest.qcow2 guest-noagent.qcow2 vmlinuz initrd.img cmdline kernel-release seqwriter)
up_to_date() {
	[ -f "$STAMP" ] || return 1
	[ "$(cat "$STAMP")" = "$KERNEL_DEB|$CMDLINE" ] || return 1
	local f
	for f in "${OUTPUTS[@]}"; do [ -f "$OUT/$f" ] || return 1; done
	# Files only: an editor's rename (sed -i on the README) touches the directory.
	# Removing a file from guest/ therefore needs a rebuild by hand (rm .built).
	[ -z "$(find "$GUEST" "${BASH_SOURCE[0]}" "$KERNEL_DEB" /bin/busybox -newer "$STAMP" ! -type d ! -name README.md -print -quit)" ]
}
if up_to_date; then
	log "up to date: $OUT"
	exit 0
fi

WORK=$OUT/work
rm -rf "$WORK"
mkdir -p "$WORK"

# --- the writer --------------------------------------------------------------
log "compiling seqwriter"
gcc -static -O2 -Wall -Wextra -o "$WORK/seqwriter" "$GUEST/seqwriter.c"
log "compiling snapstack-qga"
gcc -static -O2 -Wall -Wextra -o "$WORK/snapstack-qga" "$GUEST/qga.c"

# --- kernel and modules ------------------------------------------------------
log "unpacking $(basename "$KERNEL_DEB")"
dpkg-deb -x "$KERNEL_DEB" "$WORK/kernel"
KVER=$(ls "$WORK/kernel/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || die "expected one kernel release in the package, got: $KVER"
MODDIR=$WORK/kernel/lib/modules/$KVER
/bin/busybox depmod -b "$WORK/kernel" "$KVER"

# Prints the module files (paths relative to MODDIR) that must be loaded for
# the named modules, dependencies first, each once.
declare -A LOADED=()
ORDER=()
add_module_file() {
	local file=$1 dep line
	[ -n "${LOADED[$file]:-}" ] && return
	LOADED[$file]=1
	line=$(grep -m1 "^$file:" "$MODDIR/modules.dep") || die "$file missing from modules.dep"
	for dep in ${line#*:}; do add_module_file "$dep"; done
	ORDER+=("$file")
}
while read -r name; do
	case "$name" in '' | '#'*) continue ;; esac
	file=$(grep -m1 -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | cut -d: -f1) || true
	[ -n "$file" ] || die "module $name not found in $KVER"
	add_module_file "$file"
done <"$GUEST/modules.list"

# --- initramfs ---------------------------------------------------------------
log "building the initramfs (${#ORDER[@]} modules)"
RD=$WORK/initramfs
mkdir -p "$RD"/{bin,dev,etc,lib/modules,proc,run,sbin,sys,tmp}
cp -a "$GUEST/rootfs/." "$RD/"
cp /bin/busybox "$RD/bin/busybox"
cp "$WORK/seqwriter" "$RD/bin/seqwriter"
cp "$WORK/snapstack-qga" "$RD/bin/snapstack-qga"
: >"$RD/etc/modules.order"
for file in "${ORDER[@]}"; do
	base=$(basename "$file")
	case "$base" in
	*.ko) cp "$MODDIR/$file" "$RD/lib/modules/$base" ;;
	*.ko.xz) xz -dc "$MODDIR/$file" >"$RD/lib/modules/${base%.xz}"; base=${base%.xz} ;;
	*.ko.zst) zstd -qdc "$MODDIR/$file" >"$RD/lib/modules/${base%.zst}"; base=${base%.zst} ;;
	*) die "unexpected module file $file" ;;
	esac
	echo "$base" >>"$RD/etc/modules.order"
done
(cd "$RD" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$WORK/initrd.img"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
echo "$CMDLINE" >"$WORK/cmdline"
echo "$KVER" >"$WORK/kernel-release"

# --- boot partition (FAT16 + syslinux, via mtools: no mount) -----------------
log "building the disk"
P1=$WORK/boot-part.img
truncate -s $((BOOT_SECTORS * 512)) "$P1"
mformat -i "$P1" -T "$BOOT_SECTORS" -h 64 -s 32 -H "$BOOT_START" -v SNAPSTACK ::
syslinux --install "$P1"
sed "s|@CMDLINE@|$CMDLINE|" "$GUEST/syslinux.cfg" >"$WORK/syslinux.cfg"
mcopy -i "$P1" "$WORK/syslinux.cfg" "$WORK/vmlinuz" "$WORK/initrd.img" ::

# --- the whole disk: MBR boot code + partition table, partition 1, log header --
RAW=$WORK/guest.raw
truncate -s "${DISK_MIB}M" "$RAW"
python3 - "$RAW" "$MBR_BIN" "$BOOT_START" "$BOOT_SECTORS" "$DATA_START" "$DATA_SECTORS" <<'PY'
import struct, sys
raw, mbr_bin = sys.argv[1], sys.argv[2]
boot_start, boot_sectors, data_start, data_sectors = map(int, sys.argv[3:7])
code = open(mbr_bin, "rb").read()[:440]
def entry(active, ptype, start, count):
    # CHS fields saturated: syslinux's MBR and SeaBIOS use LBA (EDD).
    return struct.pack("<B3sB3sII", 0x80 if active else 0, b"\xfe\xff\xff", ptype,
                       b"\xfe\xff\xff", start, count)
sector = bytearray(512)
sector[:len(code)] = code
sector[440:444] = b"SNAP"  # disk signature
sector[446:462] = entry(True, 0x0E, boot_start, boot_sectors)   # FAT16 (LBA)
sector[462:478] = entry(False, 0xDA, data_start, data_sectors)  # non-FS data: the log
sector[510:512] = b"\x55\xaa"
with open(raw, "r+b") as f:
    f.write(sector)
PY
dd if="$P1" of="$RAW" bs=512 seek="$BOOT_START" conv=notrunc,sparse status=none
"$WORK/seqwriter" --format-image "$RAW" >&2
qemu-img convert -f raw -O qcow2 "$RAW" "$WORK/guest.qcow2"

# --- the same disk without the guest agent (only syslinux.cfg differs) ---------
sed "s|@CMDLINE@|$CMDLINE snapstack.agent=off|" "$GUEST/syslinux.cfg" >"$WORK/syslinux.cfg"
mcopy -o -i "$P1" "$WORK/syslinux.cfg" ::
cp --sparse=always "$RAW" "$WORK/noagent.raw"
dd if="$P1" of="$WORK/noagent.raw" bs=512 seek="$BOOT_START" conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$WORK/noagent.raw" "$WORK/guest-noagent.qcow2"

# --- publish -----------------------------------------------------------------
for f in "${OUTPUTS[@]}"; do
	mv -f "$WORK/$f" "$OUT/$f"
done
rm -rf "$WORK"
echo "$KERNEL_DEB|$CMDLINE" >"$STAMP"
log "done: $OUT (kernel $KVER)"
