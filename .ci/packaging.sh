#!/usr/bin/env bash
# Optional CI step (not part of .ci/run): validate the desktop files, build the
# one-folder PyInstaller bundle from this checkout and smoke-test it offscreen.
#   bash .ci/packaging.sh
# Needs network access to PyPI for the build venv; takes a few minutes on a cold cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '\n==> %s\n' "$*"; }

APP_ID=$(sed -n 's/^APP_ID = "\(.*\)"/\1/p' inspector/__init__.py)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
   { ! command -v desktop-file-validate >/dev/null || ! command -v appstreamcli >/dev/null; }; then
  say "installing desktop-file-utils and appstream"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq desktop-file-utils appstream >/dev/null
fi

say "desktop-file-validate"
desktop-file-validate "resources/$APP_ID.desktop"
say "appstreamcli validate --no-net"
appstreamcli validate --no-net "resources/$APP_ID.metainfo.xml"

say "build the bundle"
bash packaging/build.sh

say "smoke-test the bundle offscreen"
bash packaging/smoke.sh
