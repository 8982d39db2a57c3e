#!/usr/bin/env bash
# Install the real runtimed 2.9.0 daemon (protocol v4) for the real-daemon tests, by package name:
#   PyPI      runtimed==2.9.0 (its prebuilt daemon and PyO3 bindings), uv and ruff (put on the
#             daemon's PATH so it never fetches them), a cp313 wheelhouse for its offline pool envs
#   Debian 13 libc6 libgcc-s1 libssl3t64 and python3.13, downloaded as .debs through a private
#             apt root and extracted into the prefix (the wheel needs glibc >= 2.39, Debian 12
#             has 2.36; the pools need CPython 3.13). The host's apt state and libc are untouched.
#   Debian 12 patchelf, python3-venv, python3-pip, ... on the host, only when missing (needs root).
# Idempotent: every step checks what is there, so a rerun only verifies.
#   setup.sh [--prefix DIR]        env: RTD_PREFIX, RTD_HOST_PYTHON (default /usr/bin/python3)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${RTD_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/real-runtimed}
[ "${1:-}" = --prefix ] && { PREFIX=$2; shift 2; }
[ $# -eq 0 ] || { echo "setup.sh: unknown argument '$1' (usage: setup.sh [--prefix DIR])" >&2; exit 2; }
case "$PREFIX" in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
HOSTPY=${RTD_HOST_PYTHON:-/usr/bin/python3}
VERSION=2.9.0
UV=0.13.9     # 2.9.0 accepts a system uv at least as new as its pinned 0.13.5
RUFF=0.15.11  # the exact ruff 2.9.0 pins; any other makes it download its own

T0=$SECONDS
STEP=start
step() { STEP=$*; echo "[setup +$((SECONDS - T0))s] $*"; }
die() { echo "setup.sh: $*" >&2; exit 1; }
trap 'echo "setup.sh: FAILED during: $STEP" >&2' ERR

[ "$(uname -m)" = x86_64 ] || die "the runtimed wheel is x86_64 only; this is $(uname -m)"
command -v dpkg-deb >/dev/null || die "needs a Debian system (dpkg-deb not found)"

step "host packages"
need=()
[ -x "$HOSTPY" ] || need+=(python3)
"$HOSTPY" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
"$HOSTPY" -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v patchelf >/dev/null || need+=(patchelf)
command -v setsid >/dev/null || need+=(util-linux)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing host packages; run: sudo apt-get install -y ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$PREFIX"/{bin,path,dl}
# A prefix of its own keeps pip's cache: a new prefix never reuses another one's downloads.
export PIP_CACHE_DIR=$PREFIX/dl/pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1

# Download Debian 13 .debs by name with apt pointed at a private root (host lists untouched).
trixie_debs() {
  local dest=$1; shift
  local root=$PREFIX/dl/trixie-apt mirror
  mirror=${TRIXIE_MIRROR:-$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } \
    | grep -v -- -security | head -n 1 || true)}
  [ -n "$mirror" ] || die "no Debian archive in the host's apt sources; set TRIXIE_MIRROR"
  mkdir -p "$root"/etc/apt/{sources.list.d,preferences.d,apt.conf.d,trusted.gpg.d} \
           "$root"/var/lib/apt/lists/partial "$root"/var/cache/apt/archives/partial "$root"/var/lib/dpkg "$dest"
  touch "$root/var/lib/dpkg/status"
  : > "$root/etc/apt/sources.list"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg > "$root/etc/apt/sources.list.d/trixie.sources"
  local o=(-q -o Dir="$root" -o Dir::Etc="$root/etc/apt" -o Dir::State="$root/var/lib/apt"
           -o Dir::State::status="$root/var/lib/dpkg/status" -o Dir::Cache="$root/var/cache/apt"
           -o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
  if [ -z "$(find "$root/var/lib/apt/lists/.updated" -mmin -1440 2>/dev/null)" ]; then
    apt-get "${o[@]}" update >/dev/null || die "apt-get update of Debian 13 ($mirror) failed"
    touch "$root/var/lib/apt/lists/.updated"
  fi
  (cd "$dest" && apt-get "${o[@]}" download "$@" >/dev/null) || die "cannot download Debian 13 packages: $*"
}

step "Debian 13 libc6 libgcc-s1 libssl3t64 -> trixie-libc"
LIBS=$PREFIX/trixie-libc/usr/lib/x86_64-linux-gnu
if [ ! -x "$LIBS/ld-linux-x86-64.so.2" ] || [ ! -e "$LIBS/libssl.so.3" ]; then
  rm -rf "$PREFIX/dl/debs-libc" "$PREFIX/trixie-libc"
  trixie_debs "$PREFIX/dl/debs-libc" libc6 libgcc-s1 libssl3t64
  for d in "$PREFIX"/dl/debs-libc/*.deb; do dpkg-deb -x "$d" "$PREFIX/trixie-libc"; done
fi

step "PyPI runtimed==$VERSION -> wheel/"
if [ "$(cat "$PREFIX/wheel/.version" 2>/dev/null)" != "$VERSION" ]; then
  rm -rf "$PREFIX/wheel" "$PREFIX"/dl/runtimed-*.whl
  "$HOSTPY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_39_x86_64 -d "$PREFIX/dl" "runtimed==$VERSION"
  "$HOSTPY" -m zipfile -e "$PREFIX"/dl/runtimed-"$VERSION"-*.whl "$PREFIX/wheel"
  echo "$VERSION" > "$PREFIX/wheel/.version"
fi

step "patched copy of the daemon -> bin/runtimed"
# Interpreter and DT_RPATH (transitive, unlike RUNPATH) point at the Debian 13 libs: the daemon
# re-executes itself for its helpers, so it must be a real executable, not 'ld.so prog'.
if [ "$(patchelf --print-interpreter "$PREFIX/bin/runtimed" 2>/dev/null)" != "$LIBS/ld-linux-x86-64.so.2" ] \
   || ! "$PREFIX/bin/runtimed" --version 2>/dev/null | grep -q "$VERSION"; then
  cp "$PREFIX/wheel/runtimed/_bin/runtimed" "$PREFIX/bin/runtimed.tmp"
  chmod +x "$PREFIX/bin/runtimed.tmp"
  patchelf --set-interpreter "$LIBS/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$LIBS" "$PREFIX/bin/runtimed.tmp"
  mv "$PREFIX/bin/runtimed.tmp" "$PREFIX/bin/runtimed"
fi
DV=$("$PREFIX/bin/runtimed" --version 2>&1) || die "the patched daemon does not run: $DV"
echo "            $DV"

step "PyPI uv==$UV ruff==$RUFF -> tools-venv, on the daemon's PATH"
if ! "$PREFIX/tools-venv/bin/uv" --version 2>/dev/null | grep -q " $UV" \
   || ! "$PREFIX/tools-venv/bin/ruff" --version 2>/dev/null | grep -q " $RUFF"; then
  rm -rf "$PREFIX/tools-venv"
  "$HOSTPY" -m venv "$PREFIX/tools-venv"
  "$PREFIX/tools-venv/bin/pip" install -q "uv==$UV" "ruff==$RUFF"
fi
ln -sfn "$PREFIX/tools-venv/bin/uv" "$PREFIX/path/uv"
ln -sfn "$PREFIX/tools-venv/bin/ruff" "$PREFIX/path/ruff"

step "Debian 13 python3.13 -> trixie-py (the daemon's pools run 'uv venv --python 3.13')"
PY=$PREFIX/trixie-py/usr/bin/python3.13
if [ ! -x "$PY" ] || ! "$PY" -c 'import ssl, sqlite3, ctypes' 2>/dev/null; then
  rm -rf "$PREFIX/dl/debs-py" "$PREFIX/trixie-py"
  trixie_debs "$PREFIX/dl/debs-py" python3.13-minimal libpython3.13-minimal libpython3.13-stdlib \
    libexpat1 libffi8 libbz2-1.0 liblzma5 libzstd1 zlib1g libsqlite3-0 libncursesw6 libtinfo6 \
    libreadline8t64 libuuid1 libdb5.3t64 libssl3t64 libc6 libgcc-s1 media-types netbase tzdata
  for d in "$PREFIX"/dl/debs-py/*.deb; do dpkg-deb -x "$d" "$PREFIX/trixie-py"; done
  PL=$PREFIX/trixie-py/usr/lib/x86_64-linux-gnu
  patchelf --set-interpreter "$PL/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$PL" "$PY"
fi
# On PATH as its real directory: a venv's 'home' must be where the interpreter lives.
echo "$PREFIX/trixie-py/usr/bin" > "$PREFIX/.py313-dir"
"$PY" -c 'import sys, ssl; print("            Python", sys.version.split()[0])'

step "wheelhouse (cp313, pinned by constraints.txt) for the daemon's offline pool envs"
missing=$(grep -E '^[A-Za-z]' "$HERE/constraints.txt" | while IFS='=' read -r name _ ver; do
  ls "$PREFIX/wheelhouse/${name}-${ver}-"*.whl >/dev/null 2>&1 || echo "$name"; done)
if [ -n "$missing" ]; then
  plat=()
  for p in manylinux_2_36 manylinux_2_34 manylinux_2_28 manylinux_2_26 manylinux_2_17 manylinux2014 \
           manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do plat+=(--platform "${p}_x86_64"); done
  mkdir -p "$PREFIX/wheelhouse"
  "$HOSTPY" -m pip download -q -d "$PREFIX/wheelhouse" --only-binary=:all: --python-version 3.13 \
    --implementation cp "${plat[@]}" -c "$HERE/constraints.txt" ipykernel ipywidgets anywidget nbformat pyarrow uv
fi
echo "            $(ls "$PREFIX"/wheelhouse/*.whl | wc -l) wheels"

step "self-check: the wheel's bindings import"
RTD_PREFIX=$PREFIX "$HERE/pyrt.sh" -c 'import runtimed' || die "the wheel's Python bindings do not import"
echo "daemon=$PREFIX/bin/runtimed version=$VERSION" > "$PREFIX/.installed"
step "done: $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
