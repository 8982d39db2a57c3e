#!/usr/bin/env bash
# Re-render the window screenshots in this directory from the demo testbed (real kernel, real
# widgets), offscreen, at 1024x700 and 1600x1000, light and dark. Look at every one afterwards.
#   docs/screenshots/refresh.sh            (from the checkout, with .venv installed)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/.venv/bin/runtimed-inspector"
export QT_QPA_PLATFORM=offscreen

shot() {  # shot NAME WxH THEME [demo args...]
  local name="$1" size="$2" theme="$3"
  shift 3
  RUNTIMED_INSPECTOR_WINDOW_SIZE="$size" RUNTIMED_INSPECTOR_THEME="$theme" \
    "$bin" demo --screenshot "$here/$name" --quit-after 16 "$@"
}

for theme in light dark; do
  suffix=""; [ "$theme" = dark ] && suffix="-dark"
  shot "main-window$suffix.png" 1600x1000 "$theme"
  shot "main-window-1024$suffix.png" 1024x700 "$theme"
  shot "demo-divergence$suffix.png" 1600x1000 "$theme" --fault doc-drop-update:IntSliderModel
  shot "demo-divergence-1024$suffix.png" 1024x700 "$theme" --fault doc-drop-update:IntSliderModel
done
cp "$here/main-window.png" "$here/demo.png"  # the metainfo's third screenshot

# the attach view, listing a testbed daemon and its room
tmp="$(mktemp -d /tmp/rti-shots-XXXXXX)"
"$bin" testbed --socket "$tmp/rt.sock" --notebook "$root/inspector/testbed/samples/widgets-demo.ipynb" \
  --keep-alive 60 >"$tmp/testbed.log" 2>&1 &
bed=$!
trap 'kill "$bed" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do [ -S "$tmp/rt.sock" ] && break; sleep 0.1; done
for theme in light dark; do
  suffix=""; [ "$theme" = dark ] && suffix="-dark"
  RUNTIMED_INSPECTOR_WINDOW_SIZE=1024x700 RUNTIMED_INSPECTOR_THEME="$theme" \
    "$bin" gui --socket "$tmp/rt.sock" --screenshot "$here/attach$suffix.png" --quit-after 4
done
