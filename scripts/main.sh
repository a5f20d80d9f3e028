#!/usr/bin/env bash
# The README's main job: set everything up, refine the bundled sample headless (prints
# IoU against its reference, writes an overlay PNG); with a display, open napari with
# the widget docked and the sample loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SEGMENTELLO_VENV:-.venv}
bash scripts/setup_env.sh "$venv" "all,training"
"$venv/bin/napari-segmentello" demo -o demo_overlay.png
if [ -n "${DISPLAY:-}" ]; then
  exec "$venv/bin/napari-segmentello" demo --gui
fi
