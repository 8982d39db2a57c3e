#!/usr/bin/env bash
# Install everything into a virtualenv of its own and run the whole test suite: lint, the
# Qt-free core contract, unit/integration tests against the testbed daemon with a real kernel,
# offscreen GUI tests, and integration tests against the real runtimed 2.9.0 daemon, which
# tools/real-runtimed installs and .ci/real_daemon.sh starts and always stops.
#   ./run-tests.sh [pytest args...]
#   SKIP_REAL_DAEMON=1   leave the real daemon out (its tests are then skipped)
#   RUN_TIMEOUT=S        the whole pytest run must end within S seconds (default 1500)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
RUN_TIMEOUT=${RUN_TIMEOUT:-1500}
say() { printf '\n==> %s\n' "$*"; }

say "virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[gui,test]"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Debian packages the tests use: desktop-file and AppStream validators (resource tests) and
# tshark (the Wireshark export is decoded by the real dissector).
need=()
command -v desktop-file-validate >/dev/null || need+=(desktop-file-utils)
command -v appstreamcli >/dev/null || need+=(appstream)
command -v tshark >/dev/null || need+=(tshark)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing ${need[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

say "ruff"
ruff check .
say "import contract: the core never imports Qt"
lint-imports

export QT_QPA_PLATFORM=offscreen
# A run that never ends never lands: pytest-timeout bounds each test, tests/conftest.py bounds
# the exit after the summary, and this bounds the whole run. SIGABRT makes Python's
# faulthandler print every thread's stack before it dies, so a hang says where it hung.
export PYTHONFAULTHANDLER=1
guarded_pytest() {
  local rc=0
  timeout -s ABRT -k 30 "$RUN_TIMEOUT" python -m pytest -q -p no:cacheprovider "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "run-tests.sh: FAILED: the test run did not end within ${RUN_TIMEOUT} s and was stopped (stacks above)" >&2
    return 124
  fi
  return "$rc"
}
export -f guarded_pytest
export RUN_TIMEOUT

if [ "${SKIP_REAL_DAEMON:-0}" = 1 ]; then
  say "tests (SKIP_REAL_DAEMON=1: the real-daemon tests are skipped)"
  guarded_pytest "$@"
else
  say "tests (with the real runtimed 2.9.0 daemon)"
  .ci/real_daemon.sh bash -c 'guarded_pytest "$@"' guarded_pytest "$@"
fi
