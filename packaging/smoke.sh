#!/usr/bin/env bash
# Smoke-test a built bundle offscreen: it starts, reports its version and renders its window.
#   packaging/smoke.sh [BUNDLE_DIR]     (default: build/dist/runtimed-inspector)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUNDLE=${1:-"$ROOT/build/dist/runtimed-inspector"}
EXE="$BUNDLE/runtimed-inspector"
PYTHON=${PYTHON:-python3}
export QT_QPA_PLATFORM=offscreen
# Keep the smoke run's logs out of the user's own log directory.
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
export RUNTIMED_INSPECTOR_LOG_DIR="$SCRATCH/logs"

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

[ -x "$EXE" ] || fail "no executable at $EXE (run packaging/build.sh first)"

want=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/inspector/__init__.py")
got=$(timeout 60 "$EXE" --version) || fail "--version exited non-zero"
case "$got" in
    *"$want"*) echo "smoke: --version -> $got" ;;
    *) fail "--version printed '$got', expected it to contain $want" ;;
esac

shot="$SCRATCH/window.png"
timeout 120 "$EXE" gui --screenshot "$shot" --quit-after 2 || fail "gui --screenshot exited non-zero"
[ -s "$shot" ] || fail "gui did not write $shot"
"$PYTHON" "$ROOT/packaging/check_png.py" "$shot" || fail "screenshot does not look like a rendered window"
# The demo runs the testbed and its kernel from inside the bundle (entry.py routes
# `-m ipykernel_launcher` to the bundled ipykernel), so it proves the bundle is self-contained.
if "$EXE" --help 2>/dev/null | grep -qE '^ +demo\b|[{,]demo[,}]'; then
    timeout 300 "$EXE" demo --headless > "$SCRATCH/demo.json" || fail "demo --headless exited non-zero"
    "$PYTHON" - "$SCRATCH/demo.json" <<'PY' || fail "demo --headless did not print a snapshot with widget comms"
import json, sys
snapshot = json.load(open(sys.argv[1], encoding="utf-8"))
comms = snapshot.get("comms")
assert comms, "no comms in the demo snapshot"
print(f"smoke: demo --headless -> {len(snapshot.get('cells', []))} cells, {len(comms)} comms")
PY
else
    echo "smoke: this build has no demo command; skipped the demo run"
fi
echo "smoke: OK"
