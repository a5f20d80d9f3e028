#!/usr/bin/env bash
# Shared set-up for the README's two commands: Debian packages for a virtual display,
# then a virtual environment with the CPU build of PyTorch pinned and this package.
# Usage: scripts/setup_env.sh VENV_DIR EXTRAS   (e.g. .venv "all,training")
set -euo pipefail
venv=$1
extras=$2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# Xvfb + Mesa (software OpenGL) + the X libraries Qt's xcb platform needs. Qt's
# "offscreen" platform has no OpenGL, so napari can only draw under a real (virtual) X server.
debs="xvfb xauth libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
libdbus-1-3 libfontconfig1"
missing=$(for d in $debs; do dpkg-query -W -f='${Status}\n' "$d" 2>/dev/null | grep -q "ok installed" || echo "$d"; done)
if [ -n "$missing" ]; then
  echo "Installing Debian packages: $missing"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The CPU build, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[$extras]"
