#!/usr/bin/env bash
# Python with the runtimed wheel's bindings importable: the host's python3 started through the
# Debian 13 loader (the wheel's _internals.abi3.so needs glibc 2.39). A subprocess that re-runs
# sys.executable does not get the loader.
#   pyrt.sh [python args...]        env: RTD_PREFIX, RTD_HOST_PYTHON
PREFIX=${RTD_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/real-runtimed}
LIBS=$PREFIX/trixie-libc/usr/lib/x86_64-linux-gnu
[ -x "$LIBS/ld-linux-x86-64.so.2" ] || { echo "pyrt.sh: no install in $PREFIX (run setup.sh)" >&2; exit 1; }
export PYTHONPATH=$PREFIX/wheel${PYTHONPATH:+:$PYTHONPATH}
exec "$LIBS/ld-linux-x86-64.so.2" --library-path "$LIBS" "${RTD_HOST_PYTHON:-/usr/bin/python3}" "$@"
