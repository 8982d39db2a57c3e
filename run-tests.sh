#!/usr/bin/env bash
# Install everything into a virtualenv of its own and run the whole test suite:
# lint, the Qt-free core contract, unit/integration tests against the testbed daemon with a
# real kernel, offscreen GUI tests, and - when the real-runtimed tools are beside this
# checkout - integration tests against the real runtimed 2.9.0 daemon.
#   ./run-tests.sh [pytest args...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
say() { printf '\n==> %s\n' "$*"; }

say "virtualenv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[gui,test]"
# shellcheck disable=SC1091
. "$VENV/bin/activate"

# Desktop-file and AppStream validators for the resource tests (Debian packages).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
   { ! command -v desktop-file-validate >/dev/null || ! command -v appstreamcli >/dev/null; }; then
  say "installing desktop-file-utils and appstream"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq desktop-file-utils appstream >/dev/null
fi

say "ruff"
ruff check .
say "import contract: the core never imports Qt"
lint-imports

export QT_QPA_PLATFORM=offscreen
TOOLS=${RTD_TOOLS:-$(dirname "$ROOT")/shared/tools/real-runtimed}
if [ -x "$TOOLS/setup.sh" ] && [ "${SKIP_REAL_DAEMON:-0}" != 1 ]; then
  say "tests (with the real runtimed 2.9.0 daemon)"
  RTD_TOOLS=$TOOLS .ci/real_daemon.sh python -m pytest -q -p no:cacheprovider "$@"
else
  if [ "${CI:-}" = true ] && [ "${SKIP_REAL_DAEMON:-0}" != 1 ]; then
    echo "run-tests.sh: the real-runtimed tools are missing at $TOOLS; CI needs them" >&2
    exit 2
  fi
  say "tests (real-daemon tests skipped: no real-runtimed tools at $TOOLS)"
  python -m pytest -q -p no:cacheprovider "$@"
fi
