#!/usr/bin/env bash
# The README's test command: set everything up from scratch and run the whole suite
# under a virtual X server. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${SEGMENTELLO_TEST_VENV:-.venv-test}
bash scripts/setup_env.sh "$venv" "testing,training"
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1400x900x24" "$venv/bin/python" -m pytest "$@"
