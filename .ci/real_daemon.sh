#!/usr/bin/env bash
# Install, start and always stop the real runtimed 2.9.0 around a command.
#   .ci/real_daemon.sh [COMMAND...]     default command: pytest tests/real_daemon
# The command sees RUNTIMED_REAL_SOCKET (and RTD_PREFIX, RTD_TOOLS, RTD_STATE). The daemon runs
# without a network namespace so its blob server is reachable from the tests; it still never
# downloads anything (uv/ruff on its PATH, offline wheelhouse, telemetry off).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${RTD_TOOLS:-$(dirname "$REPO")/shared/tools/real-runtimed}
if [ ! -x "$TOOLS/setup.sh" ]; then
  echo "real_daemon.sh: real-runtimed tools not found at $TOOLS (set RTD_TOOLS)" >&2
  exit 2
fi
export RTD_TOOLS=$TOOLS
export RTD_PREFIX=${RTD_PREFIX:-/opt/real-runtimed}
[ -w "$(dirname "$RTD_PREFIX")" ] || export RTD_PREFIX=$REPO/build/real-runtimed
# A state dir of its own per run (unless given): two runs at once (a developer's and a test
# suite's) must not wipe each other's daemon with --fresh.
if [ -n "${RTD_STATE_DIR:-}" ]; then
  STATE=$RTD_STATE_DIR
  OWN_STATE=0
else
  mkdir -p "$REPO/build"
  STATE=$(mktemp -d "$REPO/build/rtd-state.XXXXXX")
  OWN_STATE=1
fi
cleanup() {
  "$TOOLS/stop.sh" "$STATE" || true
  if [ "$OWN_STATE" = 1 ]; then rm -rf "$STATE"; fi
}

"$TOOLS/setup.sh"
trap cleanup EXIT
"$TOOLS/start.sh" "$STATE" --fresh --no-auto-format --no-netns --uv-cache "$RTD_PREFIX/uv-cache"
# shellcheck disable=SC1091
. "$STATE/daemon.env"
export RUNTIMED_REAL_SOCKET=$RUNTIMED_SOCKET_PATH
python3 "$TOOLS/probe.py" --socket "$RUNTIMED_REAL_SOCKET"
if [ "$#" -gt 0 ]; then
  "$@"
else
  python -m pytest -q tests/real_daemon
fi
