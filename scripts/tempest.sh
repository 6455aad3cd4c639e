#!/usr/bin/env bash
# Runs OpenStack's conformance suite, tempest (PyPI), against a running Snapstack.
#
#   scripts/tempest.sh [--url URL] [--password PW] [--workspace DIR] [-- [--list IDS] TEMPEST-RUN-ARGS…]
#
#   SNAPSTACK_ADMIN_PASSWORD=secret scripts/tempest.sh --url http://127.0.0.1:8774 \
#       -- --list docs/interop/interop-2020.06-compute-no-network.txt
#   scripts/tempest.sh --url http://127.0.0.1:8774 -- --regex 'tempest.api.compute.keypairs'
#
# What it does, each time:
#   1. installs tempest (and python-openstackclient) into the project venv `.venv`;
#   2. creates, as the admin, what tempest needs and finds by id: two public images from
#      the project's guest image (`$SNAPSTACK_GUEST_DIR/guest.qcow2`, default build/guest)
#      and two flavors; existing ones (same names) are reused;
#   3. writes `<workspace>/etc/tempest.conf`: admin credentials, dynamic credentials, no
#      network service, and feature flags for what Snapstack does not have (each one is
#      listed with its reason in docs/conformance.md), then runs `tempest run` there with
#      the arguments after `--` (default: the interop list). Tests are never edited.
#
# Results stay in the workspace (default var/tempest): `stestr last`, `tempest.log`.
# Env: SNAPSTACK_URL, SNAPSTACK_ADMIN_USER/PROJECT/PASSWORD, SNAPSTACK_GUEST_DIR,
# TEMPEST_VERSION (default 47.0.0), TEMPEST_CONCURRENCY (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

url=${SNAPSTACK_URL:-http://127.0.0.1:8774}
admin_user=${SNAPSTACK_ADMIN_USER:-admin}
admin_project=${SNAPSTACK_ADMIN_PROJECT:-admin}
password=${SNAPSTACK_ADMIN_PASSWORD:-}
workspace=$root/var/tempest
guest_dir=${SNAPSTACK_GUEST_DIR:-$root/build/guest}
tempest_version=${TEMPEST_VERSION:-47.0.0}
concurrency=${TEMPEST_CONCURRENCY:-2}

while [ $# -gt 0 ]; do
  case $1 in
    --url) url=$2; shift 2 ;;
    --password) password=$2; shift 2 ;;
    --workspace) workspace=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
list=
if [ $# -eq 0 ]; then
  # The interop guideline's list (a copy of the project workspace's
  # ../shared/conformance/, so that a clone alone can run it).
  list=${SNAPSTACK_INTEROP_LIST:-$root/docs/interop/interop-2020.06-compute-no-network.txt}
elif [ "$1" = --list ]; then
  list=$2
  shift 2
fi
if [ -z "$password" ]; then
  echo "the admin password is needed: --password or SNAPSTACK_ADMIN_PASSWORD" >&2
  exit 2
fi
say() { echo "tempest.sh: $*" >&2; }

# 1. tempest in the venv.
[ -x .venv/bin/python ] || python3 -m venv .venv
installed=$(.venv/bin/pip show tempest 2>/dev/null || true)
if ! grep -q "^Version: $tempest_version\$" <<<"$installed"; then
  say "installing tempest $tempest_version into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "tempest==$tempest_version"
fi
if [ ! -x .venv/bin/openstack ]; then
  .venv/bin/pip install -q --disable-pip-version-check python-openstackclient
fi

# 2. Images and flavors, as the admin.
export OS_AUTH_URL=$url/identity/v3 OS_USERNAME=$admin_user OS_PASSWORD=$password \
  OS_PROJECT_NAME=$admin_project OS_USER_DOMAIN_NAME=Default \
  OS_PROJECT_DOMAIN_NAME=Default OS_IDENTITY_API_VERSION=3 OS_REGION_NAME=RegionOne
unset OS_CLOUD
osc() { .venv/bin/openstack "$@"; }
image_id() {
  local id
  id=$(osc image list --public --name "$1" -f value -c ID | head -1)
  if [ -z "$id" ]; then
    [ -f "$guest_dir/guest.qcow2" ] || {
      echo "no guest image at $guest_dir/guest.qcow2: scripts/build-guest.sh" >&2
      exit 2
    }
    id=$(osc image create --public --disk-format qcow2 --container-format bare \
      --file "$guest_dir/guest.qcow2" -f value -c id "$1")
  fi
  echo "$id"
}
flavor_id() { # name ram disk
  local id
  id=$(osc flavor list --all -f value -c ID -c Name | awk -v n="$1" '$2 == n {print $1}' | head -1)
  if [ -z "$id" ]; then
    id=$(osc flavor create --vcpus 1 --ram "$2" --disk "$3" -f value -c id "$1")
  fi
  echo "$id"
}
image_ref=$(image_id tempest-guest)
image_ref_alt=$(image_id tempest-guest-alt)
flavor_ref=$(flavor_id tempest-tiny 256 1)
flavor_ref_alt=$(flavor_id tempest-tiny-alt 320 1)
# The storage protocol the volume backend reports (`file`, or `ceph` on the rbd pool):
# tempest's volume-type tests ask for it in extra specs, which place a volume only
# on a backend that has it.
storage_protocol=$(osc volume backend pool list --long -f json |
  .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["Capabilities"]["storage_protocol"])')
say "image_ref=$image_ref image_ref_alt=$image_ref_alt flavor_ref=$flavor_ref flavor_ref_alt=$flavor_ref_alt"

# 3. tempest.conf and the run.
if [ ! -f "$workspace/.stestr.conf" ]; then
  mkdir -p "$(dirname "$workspace")"
  # A unique name: tempest refuses a name its registry (~/.tempest) already
  # has, e.g. another checkout's `tempest` workspace, and says so on stdout.
  .venv/bin/tempest init --name "snapstack-$(date +%s)-$$" "$workspace" >/dev/null
fi
sed -e "s|@URL@|$url|g" -e "s|@ADMIN_USER@|$admin_user|g" \
  -e "s|@ADMIN_PROJECT@|$admin_project|g" -e "s|@ADMIN_PASSWORD@|$password|g" \
  -e "s|@IMAGE_REF@|$image_ref|g" -e "s|@IMAGE_REF_ALT@|$image_ref_alt|g" \
  -e "s|@FLAVOR_REF@|$flavor_ref|g" -e "s|@FLAVOR_REF_ALT@|$flavor_ref_alt|g" \
  -e "s|@WORKSPACE@|$workspace|g" -e "s|@STORAGE_PROTOCOL@|$storage_protocol|g" \
  scripts/tempest.conf.in >"$workspace/etc/tempest.conf"
say "config: $workspace/etc/tempest.conf"
if [ -n "$list" ]; then
  # A list of bare test ids (as the interop guideline gives them): each one becomes an
  # anchored regex that ignores the `[id-…,attrs]` suffix tempest adds.
  sed -e '/^[[:space:]]*$/d' -e 's/[.]/\\./g' -e 's/^/^/' -e 's/$/(\\[.*\\])?$/' \
    "$list" >"$workspace/include-list.txt"
  set -- --include-list "$workspace/include-list.txt" "$@"
fi
cd "$workspace"
start=$(date +%s)
status=0
"$root/.venv/bin/tempest" run --concurrency "$concurrency" "$@" || status=$?
say "took $(($(date +%s) - start)) s; details: (cd $workspace && $root/.venv/bin/stestr last --subunit | $root/.venv/bin/subunit2pyunit)"
exit $status
