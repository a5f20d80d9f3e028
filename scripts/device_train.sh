#!/usr/bin/env bash
# Continue training `default` on a lent GPU machine (the device tool's `run`), from the repository root there.
#
# Here, once:   echo /.devdata/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#               PYTHONPATH=. python scripts/device_pack.py              # the config's data, <= 52 MiB
#               python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                   --platform manylinux_2_17_x86_64 -d .whl pycocotools     # the one package the GPU image lacks
# Then run:     bash scripts/device_train.sh MINUTES [training.run options ...]
#               with carry [".devdata", ".whl"], timeout_s >= 60 * (MINUTES + 2); the run folder comes back
#               as $OUT/run (best.pt, last.pt, log.jsonl, loss_curve.png).
# Defaults for one H200: batches of 64, 50 batches an epoch, 14 loader workers, lr 2e-4 cosine over 12 epochs,
# from the bundled weights; options given after MINUTES override them (later --set wins).
# PY (default python3) and DEVICE (default cuda) let the same script be checked on a CPU here.
set -euo pipefail
minutes=${1:?usage: device_train.sh MINUTES [training.run options]}
shift
py=${PY:-python3}
out=${OUT:-runs/device}
if [ -d .whl ] && ! "$py" -c "import pycocotools" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}src:."
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
cp -r .devdata/. "$data"
find "$data" -name '*.json.gz' -exec gunzip {} +
export SEGMENTELLO_DATA=$data PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; fi
"$py" -m training.run --config training/configs/default.toml \
  --init-checkpoint src/napari_segmentello/weights/default.pt --device "${DEVICE:-cuda}" \
  --epochs 12 --lr 2e-4 --set schedule=cosine --set patience=12 \
  --set batch_size=64 --set max_steps=50 --set workers=14 \
  --time-budget "$minutes" --out "$out/run" "$@"
