#!/usr/bin/env bash
# One command for the heartline web demo (DEV ONLY): builds the TypeScript SDK if needed,
# starts the daemon on its embedded defaults (TCP/UDP 7400, admin 7401, WebSocket 7402)
# with a dev data dir, starts the dev server (serve.mjs) and prints the URL. Ctrl-C stops
# everything it started.
#
#   DEMO_PORT=7480              the dev server's port
#   HEARTLINE_DEMO_DATA=DIR     the daemon's data dir (default examples/web/.dev-data)
#   HEARTLINE_BIN=PATH          the daemon (default target/release, then target/debug, else a release build)
#   HEARTLINE_WS_BRIDGE=1       for a daemon without the WebSocket listener: relay through the
#                               SDK's test bridge on DEMO_BRIDGE_PORT (7412) to TCP 7400
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
sdk="$repo/sdk/typescript"
port=${DEMO_PORT:-7480}
data=${HEARTLINE_DEMO_DATA:-$here/.dev-data}
bridge=${HEARTLINE_WS_BRIDGE:-0}
bridge_port=${DEMO_BRIDGE_PORT:-7412}
bin=${HEARTLINE_BIN:-}
# These steer this script, not the daemon.
unset HEARTLINE_WS_BRIDGE HEARTLINE_BIN HEARTLINE_DEMO_DATA

say() { printf '\033[1m%s\033[0m\n' "$*"; }

if [ -z "$bin" ]; then
    for profile in release debug; do
        if [ -x "$repo/target/$profile/heartline" ]; then bin="$repo/target/$profile/heartline"; break; fi
    done
fi
if [ -z "$bin" ]; then
    say "building the daemon (cargo build --release)…"
    cargo build --release --locked --bin heartline --manifest-path "$repo/Cargo.toml"
    bin="$repo/target/release/heartline"
fi

# The SDK's ES modules (dist/), rebuilt when a source is newer; the bridge needs its test build.
# stale FILE DIR...: FILE is missing or older than a file under the DIRs.
stale() { local built=$1; shift; [ ! -f "$built" ] || [ -n "$(find "$@" -newer "$built" -print -quit)" ]; }
[ -d "$sdk/node_modules" ] || (say "installing the SDK's build tools (npm ci)…" && cd "$sdk" && npm ci --no-audit --no-fund)
if stale "$sdk/dist/index.js" "$sdk/src"; then (cd "$sdk" && npm run --silent build); fi
if [ "$bridge" = 1 ] && stale "$sdk/build-test/test/support/bridge.js" "$sdk/src" "$sdk/test"; then (cd "$sdk" && npm run --silent build:test); fi

pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_port() {
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

mkdir -p "$data"
"$bin" serve --data-dir "$data" &
pids+=($!)
wait_for_port 7400 || { echo "the daemon did not start (is something else on 127.0.0.1:7400?)" >&2; exit 1; }

if [ "$bridge" = 1 ]; then
    node "$here/bridge.mjs" "$bridge_port" 7400 &
    pids+=($!)
    ws_port=$bridge_port
else
    ws_port=7402
fi
if ! wait_for_port "$ws_port"; then
    echo "nothing listens for WebSocket on 127.0.0.1:$ws_port: a daemon without the WebSocket listener? Run with HEARTLINE_WS_BRIDGE=1." >&2
    exit 1
fi

node "$here/serve.mjs" --port "$port" --ws-url "ws://127.0.0.1:$ws_port/v1/ws" --data-dir "$data" --heartline-bin "$bin" &
pids+=($!)
wait_for_port "$port" || { echo "the dev server did not start (port $port taken? set DEMO_PORT)" >&2; exit 1; }
say "heartline demo: http://127.0.0.1:$port/   (dev only; Ctrl-C stops the daemon and the dev server)"

# Whichever stops first (or Ctrl-C) ends the demo.
wait -n "${pids[@]}"
