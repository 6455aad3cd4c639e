# Shared by the bench scripts (source it): builds the release binary and
# starts `snapstack serve [EXTRA_ARGS…]` on a free port with its data under
# WORK; sets URL and SERVER_PID (the caller's cleanup kills it). Admin
# password: bench-pw.
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
    curl -sf "$URL/identity/v3" >/dev/null && return 0
    sleep 0.1
  done
  echo "snapstack did not start; see $work/serve.log" >&2
  return 1
}
