#!/usr/bin/env bash
# Install, start and always stop the real runtimed 2.9.0 around a command, with the project's
# own tooling (tools/real-runtimed).
#   .ci/real_daemon.sh [COMMAND...]     default command: python -m pytest -q tests/real_daemon
# The command sees RUNTIMED_REAL_SOCKET and RTD_PREFIX, RTD_STATE, RTD_PID, RTD_IPC_DIR.
# RTD_PREFIX: where runtimed is installed (default /opt/real-runtimed when that is writable,
# else build/real-runtimed in this checkout). Every run gets a state dir of its own under
# build/ (socket, HOME, TMPDIR, kernel IPC dir), so parallel runs cannot break each other.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$REPO/tools/real-runtimed
if [ -z "${RTD_PREFIX:-}" ]; then
  RTD_PREFIX=/opt/real-runtimed
  { [ -w "$RTD_PREFIX" ] || { [ ! -e "$RTD_PREFIX" ] && [ -w /opt ]; }; } || RTD_PREFIX=$REPO/build/real-runtimed
fi
export RTD_PREFIX
# under build/ unless that makes the socket path too long for a Unix socket (~100 bytes)
STATE_BASE=$REPO/build
[ ${#STATE_BASE} -le 60 ] || STATE_BASE=${TMPDIR:-/tmp}
mkdir -p "$STATE_BASE"
STATE=$(mktemp -d "$STATE_BASE/rtd.XXXXXX")
cleanup() { "$TOOLS/stop.sh" "$STATE" || true; rm -rf "$STATE"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$TOOLS/setup.sh"
# a uv cache shared between runs: pool envs are then built in seconds
"$TOOLS/start.sh" "$STATE" --uv-cache "$RTD_PREFIX/uv-cache"
# shellcheck disable=SC1091
. "$STATE/daemon.env"
export RUNTIMED_REAL_SOCKET=$RUNTIMED_SOCKET_PATH
if [ "$#" -gt 0 ]; then
  "$@"
else
  python -m pytest -q tests/real_daemon
fi
