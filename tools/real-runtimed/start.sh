#!/usr/bin/env bash
# Start the real runtimed (installed by setup.sh) with everything it writes under STATE_DIR and
# return once it is usable: the socket answers a ping and a uv pool env is ready.
#   start.sh STATE_DIR [--timeout S] [--uv-cache DIR] [--prefix DIR]
#   env: RTD_PREFIX, RTD_START_TIMEOUT (default 240), RTD_UV_CACHE, RUST_LOG (default info)
# Writes STATE_DIR/daemon.env (sourceable: RUNTIMED_SOCKET_PATH, RTD_PID, RTD_BLOB_PORT, ...).
# Stop it with stop.sh STATE_DIR; if start.sh fails or is interrupted it stops the daemon itself.
#
# Isolation: HOME, XDG_*, TMPDIR, the socket and uv's cache are in STATE_DIR. The kernels' IPC
# sockets are not: runtimed puts them in /tmp/runt-<uid>/ whatever TMPDIR says, and a starting
# daemon deletes every kernel-*-ipc-* file there. RUNTIMED_WORKSPACE_PATH (the daemon's per-
# worktree mode) moves them to /tmp/runt-<uid>/wt-<hash of STATE_DIR>/, one directory per state
# dir, so two daemons started from two state dirs never touch each other's kernels.
set -Eeuo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${RTD_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/real-runtimed}
TIMEOUT=${RTD_START_TIMEOUT:-240}
UV_CACHE=${RTD_UV_CACHE:-}
STATE=
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --uv-cache) UV_CACHE=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    -*) echo "start.sh: unknown option '$1'" >&2; exit 2 ;;
    *) STATE=$1; shift ;;
  esac
done
die() { echo "start.sh: $*" >&2; exit 1; }
[ -n "$STATE" ] || die "usage: start.sh STATE_DIR [--timeout S] [--uv-cache DIR] [--prefix DIR]"
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
BIN=$PREFIX/bin/runtimed
[ -x "$BIN" ] && [ -e "$PREFIX/.py313-dir" ] || die "no install in $PREFIX; run setup.sh first"
SOCK=$STATE/runtimed.sock
[ ${#SOCK} -lt 100 ] || die "socket path too long for a Unix socket (${#SOCK} bytes): $SOCK"
if [ -s "$STATE/daemon.pid" ] && kill -0 "$(cat "$STATE/daemon.pid")" 2>/dev/null; then
  die "a daemon (pid $(cat "$STATE/daemon.pid")) already runs for $STATE; stop.sh $STATE first"
fi
UV_CACHE=${UV_CACHE:-$STATE/uv-cache}
mkdir -p "$STATE"/{home/.cache,home/.config/nteract,home/.local/share,run,tmp,work} "$UV_CACHE"
chmod 700 "$STATE" "$STATE/run" "$STATE/tmp"
rm -f "$SOCK" "$STATE/daemon.env" "$STATE/daemon.pid"

# Read (and watched) by the daemon: one uv pool env, no conda/pixi pools, no telemetry, no
# shell-environment import, no default data packages, cell source left alone on execute.
cat > "$STATE/home/.config/nteract/settings.json" <<JSON
{"default_runtime": "python", "default_python_env": "uv", "keep_alive_secs": 30,
 "onboarding_completed": true, "uv_pool_size": 1, "conda_pool_size": 0, "pixi_pool_size": 0,
 "install_default_data_packages": false, "import_shell_environment": false,
 "telemetry_enabled": false, "telemetry_consent_recorded": true, "disable_auto_format": true}
JSON

IPC_DIR=/tmp/runt-$(id -u)/wt-$(printf '%s' "$STATE" | sha256sum | cut -c1-12)
ENVV=(
  PATH="$PREFIX/path:$(cat "$PREFIX/.py313-dir"):/usr/bin:/bin"
  HOME="$STATE/home" USER="$(id -un)" LOGNAME="$(id -un)" LANG=C.UTF-8 SHELL=/bin/bash
  XDG_CACHE_HOME="$STATE/home/.cache" XDG_CONFIG_HOME="$STATE/home/.config"
  XDG_DATA_HOME="$STATE/home/.local/share" XDG_RUNTIME_DIR="$STATE/run" TMPDIR="$STATE/tmp"
  RUNTIMED_SOCKET_PATH="$SOCK" RUNTIMED_WORKSPACE_PATH="$STATE"
  NTERACT_TELEMETRY_DISABLE=1 CI=1 RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1
  # never download: uv and ruff are on PATH, pool envs come from the wheelhouse
  UV_PYTHON_DOWNLOADS=never UV_PYTHON_PREFERENCE=only-system UV_NO_INDEX=1
  UV_FIND_LINKS="$PREFIX/wheelhouse" UV_CACHE_DIR="$UV_CACHE"
)
T0=$SECONDS
# exec keeps one pid from here to the daemon; setsid makes it a session leader, so stop.sh
# finds its helpers (warm-env, runtime agents, kernels) by session as well as by parent.
( cd "$STATE/work" && exec setsid env -i "${ENVV[@]}" "$BIN" run --socket "$SOCK" \
    --uv-pool-size 1 --conda-pool-size 0 --pixi-pool-size 0 </dev/null >"$STATE/daemon.log" 2>&1 ) &
PID=$!
echo "$PID" > "$STATE/daemon.pid"
# The start time tells this process from a later one that got the same pid (stop.sh checks it).
START_TICKS=$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$PID/stat")
printf 'export RTD_PID=%s\nexport RTD_PID_START=%s\nexport RTD_DAEMON_BIN=%q\n' "$PID" "$START_TICKS" "$BIN" \
  > "$STATE/daemon.pid.env"

fail() {
  echo "start.sh: $*" >&2
  tail -n 25 "$STATE/daemon.log" 2>/dev/null | sed 's/^/  daemon.log: /' >&2 || true
  "$HERE/stop.sh" "$STATE" >&2 || true
  exit 1
}
trap 'fail "interrupted"' INT TERM
HOSTPY=${RTD_HOST_PYTHON:-/usr/bin/python3}
"$HOSTPY" "$HERE/probe.py" --socket "$SOCK" --wait-ready --min-uv 1 --timeout "$TIMEOUT" \
  || fail "not ready within ${TIMEOUT}s"
INFO=$("$HOSTPY" "$HERE/probe.py" --socket "$SOCK" --info) || fail "get_daemon_info failed"
BLOB_PORT=$("$HOSTPY" -c 'import json, sys; print(json.load(sys.stdin).get("blob_port"))' <<<"$INFO")
{
  cat "$STATE/daemon.pid.env"
  printf 'export RUNTIMED_SOCKET_PATH=%q\nexport RTD_STATE=%q\nexport RTD_PREFIX=%q\n' "$SOCK" "$STATE" "$PREFIX"
  printf 'export RTD_BLOB_PORT=%s\nexport RTD_LOG=%q\nexport RTD_IPC_DIR=%q\n' "$BLOB_PORT" "$STATE/daemon.log" "$IPC_DIR"
} > "$STATE/daemon.env"
trap - INT TERM
echo "start.sh: $("$BIN" --version) ready in $((SECONDS - T0)) s: pid $PID, socket $SOCK, blob port $BLOB_PORT"
