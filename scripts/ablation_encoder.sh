#!/usr/bin/env bash
# Issue 13's ablation: same data, same prompts, same CPU minutes for each arm:
#   tuned  - lite0-128, ImageNet encoder finetuned at lr/10
#   frozen - lite0-128, ImageNet encoder frozen (batch statistics too)
#   tiny   - tiny16-128 from scratch (the current default's architecture, stroke windows)
# then each scored on acdc-scribbles' real strokes and coco-mini val standard clicks.
# Usage: bash scripts/ablation_encoder.sh [MINUTES] [OUT]   (default 10 minutes per arm, runs/ablation)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
out=${2:-runs/ablation}
py=${PYTHON:-.venv-test/bin/python}
config=training/configs/default.toml
no_box='protocol={human-scribble = 0.41, clicks = 0.24, coarse = 0.12, study = 0.12, lasso = 0.055, scribble = 0.055}'

train() {  # NAME ARGS...
  local name=$1; shift
  [ -f "$out/$name/last.pt" ] && return 0
  "$py" -m training.run --config "$config" --time-budget "$minutes" --out "$out/$name" "$@"
}
train tuned
train frozen --set encoder_lr_scale=0
train tiny --model tiny16-128 --set 'spec={extras = ["pos", "neg", "prev"]}' --set "$no_box"

for name in tuned frozen tiny; do  # one thread each: evaluations share the cores with training
  OMP_NUM_THREADS=1 "$py" -m training.evaluate --model "$out/$name/best.pt" --dataset acdc-scribbles --split val \
    --protocol real --max-objects 100 --baselines "" --device cpu --out "$out/$name/acdc"
  OMP_NUM_THREADS=1 "$py" -m training.noc --model "$out/$name/best.pt" --dataset coco-mini --split val \
    --protocol clicks --rounds 10 --max-objects 20 --device cpu --out "$out/$name/clicks"
done
"$py" scripts/ablation_table.py "$out"
