#!/usr/bin/env bash
# Takes docs/screenshot.png: the real window under Xvfb, unlocked by typing the passphrase,
# with two local nodes chatting (gui/examples/demo.rs). Not part of CI.
#
# Needs (Debian): xvfb xdotool imagemagick libxcursor1 libxi6 libxkbcommon-x11-0, and Mesa's
# OpenGL (libgl1-mesa-dri libglx-mesa0). Installs them when run as root and they are missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/encrypto-target}"

need=()
command -v Xvfb > /dev/null || need+=(xvfb)
command -v xdotool > /dev/null || need+=(xdotool)
command -v import > /dev/null || need+=(imagemagick)
for lib in libxcursor1 libxi6 libxkbcommon-x11-0 libgl1-mesa-dri libglx-mesa0; do
    dpkg -s "$lib" > /dev/null 2>&1 || need+=("$lib")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "==> apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

[ -n "${SCREENSHOT_NO_BUILD:-}" ] || cargo build -p encrypto-gui --example demo

work="$(mktemp -d)"
display=":${SCREENSHOT_DISPLAY:-77}"
passphrase="demo passphrase"
cleanup() {
    [ -n "${demo_pid:-}" ] && kill "$demo_pid" 2> /dev/null || true
    [ -n "${xvfb_pid:-}" ] && kill "$xvfb_pid" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

Xvfb "$display" -screen 0 1100x720x24 -nolisten tcp > "$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 50); do
    DISPLAY="$display" xdotool getmouselocation > /dev/null 2>&1 && break
    sleep 0.1
done

ENCRYPTO_DEMO_PASSPHRASE="$passphrase" DISPLAY="$display" LIBGL_ALWAYS_SOFTWARE=1 \
    "$CARGO_TARGET_DIR/debug/examples/demo" "$work/data" > "$work/demo.log" 2>&1 &
demo_pid=$!

# Xvfb has no window manager: find the window and focus it before typing.
window=""
for _ in $(seq 100); do
    window="$(DISPLAY="$display" xdotool search --name '^Encrypto' 2> /dev/null | head -n 1 || true)"
    [ -n "$window" ] && break
    sleep 0.2
done
if [ -z "$window" ]; then
    echo "the window did not open:" >&2
    cat "$work/demo.log" >&2
    exit 1
fi
sleep 1.5
DISPLAY="$display" xdotool windowfocus --sync "$window"
DISPLAY="$display" xdotool mousemove --window "$window" 550 360
# The unlock screen focuses its passphrase field: type, Enter.
sleep 0.5
DISPLAY="$display" xdotool type --delay 20 "$passphrase"
DISPLAY="$display" xdotool key Return
# Let the nodes connect and the conversation play out.
sleep "${SCREENSHOT_WAIT:-12}"
DISPLAY="$display" import -window root docs/screenshot.png
echo "wrote docs/screenshot.png"
