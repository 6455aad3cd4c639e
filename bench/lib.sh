# Shared by the bench scripts (source it): builds the release binary and
# starts `snapstack serve [EXTRA_ARGS…]` on a free port with its data under
# WORK; sets URL and SERVER_PID (the caller's cleanup kills it). Admin
# password: bench-pw. The admin project's compute and volume quotas are
# lifted (benches make more servers, volumes and snapshots than OpenStack's
# defaults allow).
start_snapstack() {
  local work=$1
  shift
  cargo build --release --quiet -p snapstack
  local bin=${CARGO_TARGET_DIR:-target}/release/snapstack
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  URL=http://127.0.0.1:$port
  HOME=$work "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" \
    --admin-password bench-pw "$@" > "$work/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "$URL/identity/v3" && { lift_quotas; return 0; }
    sleep 0.1
  done
  echo "snapstack did not start; see $work/serve.log" >&2
  return 1
}

# Lifts the admin project's compute and volume quotas (-1: unlimited).
lift_quotas() {
  local auth='{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"bench-pw"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}'
  local reply token project
  reply=$(curl -si "$URL/identity/v3/auth/tokens" -H 'Content-Type: application/json' -d "$auth")
  token=$(printf '%s' "$reply" | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r')
  project=$(printf '%s' "$reply" | sed -n '/^{/,$p' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"]["project"]["id"])')
  curl -sf -X PUT "$URL/compute/v2.1/os-quota-sets/$project" -H "X-Auth-Token: $token" \
    -H 'Content-Type: application/json' -d '{"quota_set":{"instances":-1,"cores":-1,"ram":-1}}' >/dev/null
  curl -sf -X PUT "$URL/volume/v3/$project/os-quota-sets/$project" -H "X-Auth-Token: $token" \
    -H 'Content-Type: application/json' -d '{"quota_set":{"volumes":-1,"snapshots":-1,"gigabytes":-1}}' >/dev/null
}
