#!/usr/bin/env bash
# Build the one-folder desktop bundle from this checkout.
#   packaging/build.sh            -> build/dist/runtimed-inspector/runtimed-inspector
# Makes its own venv under build/packaging/ (PYTHON=python3.11 to choose the interpreter),
# installs the project with its GUI extra and PyInstaller, then runs the spec.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK="$ROOT/build/packaging"
VENV="$WORK/venv"
DIST="$ROOT/build/dist"
BUNDLE="$DIST/runtimed-inspector"

start=$(date +%s)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "build.sh: $PYTHON is older than Python 3.11" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

echo "==> installing runtimed-inspector[gui,package]"
# setuptools builds in-tree; stale files in build/lib would otherwise end up in the wheel.
rm -rf "$ROOT/build/lib" "$ROOT/build/bdist."*
"$VENV/bin/python" -m pip install --quiet "$ROOT[gui,package]"

echo "==> running PyInstaller"
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK/pyinstaller" \
    "$ROOT/packaging/runtimed-inspector.spec"

if [ ! -x "$BUNDLE/runtimed-inspector" ]; then
    echo "build.sh: no executable at $BUNDLE/runtimed-inspector" >&2
    exit 1
fi

elapsed=$(( $(date +%s) - start ))
size=$(du -sh "$BUNDLE" | cut -f1)
echo "==> built in ${elapsed}s, size $size"
echo "bundle: $BUNDLE"
