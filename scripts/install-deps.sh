#!/usr/bin/env bash
# Installs what Snapstack needs on Debian 12 (bookworm), skipping what is
# already there: Debian packages (QEMU 7.2, Ceph 16, build tools), and a
# Python virtualenv at .venv with the real `openstack` CLI.
#
#   scripts/install-deps.sh            everything
#   SNAPSTACK_SKIP_APT=1 scripts/...   only the venv
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[install-deps] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(
  # QEMU from bookworm (7.2): system emulator, qemu-img, the rbd block driver
  qemu-system-x86 qemu-utils qemu-block-extra
  # Ceph 16: a dev cluster (mon + memstore OSD) and librbd/librados headers
  ceph-mon ceph-osd ceph-common librbd-dev librados-dev
  # bindgen for our librbd bindings
  libclang-dev clang pkg-config
  # the test guest: kernel from Debian, busybox, syslinux boot disk
  busybox-static cpio e2fsprogs syslinux syslinux-common mtools
  gcc libc6-dev
  # the network data plane (netplane): namespaces, bridges, nftables, DHCP; and what its
  # tests drive (ping, curl, iperf3 for bench/network.sh)
  iproute2 nftables dnsmasq-base procps iputils-ping curl iperf3
  # prlimit for qemu-img under limits; python for the openstack CLI
  util-linux python3 python3-venv
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A preinstalled newer qemu-utils (a backport) does not match Debian's
# qemu-system-x86 7.2: replace it with bookworm's.
if command -v qemu-img >/dev/null && ! qemu-img --version | head -1 | grep -q 'version 7\.2'; then
  missing+=(qemu-utils)
fi

# The test guest's kernel comes from `apt-get download`, which needs package
# lists even when every package is already installed.
if [ "${SNAPSTACK_SKIP_APT:-0}" != 1 ] && ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  say "apt package lists are empty: apt-get update"
  $SUDO apt-get update -qq
fi

if [ "${SNAPSTACK_SKIP_APT:-0}" != 1 ] && [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  pinned=()
  for p in "${missing[@]}"; do
    case "$p" in
      qemu-utils|qemu-block-extra|qemu-system-x86) pinned+=("$p/bookworm") ;;
      *) pinned+=("$p") ;;
    esac
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --allow-downgrades \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pinned[@]}" >/dev/null
fi

OSC_VERSION=10.5.0
installed_osc=$(.venv/bin/pip show python-openstackclient 2>/dev/null || true)
if [ ! -x .venv/bin/openstack ] || ! grep -q "^Version: $OSC_VERSION\$" <<<"$installed_osc"; then
  say "creating .venv with python-openstackclient $OSC_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "python-openstackclient==$OSC_VERSION"
fi
say "ready: $(qemu-img --version | head -1); $(.venv/bin/openstack --version 2>&1)"
