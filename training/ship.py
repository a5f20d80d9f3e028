"""Bundle a trained checkpoint as a named model: ``python -m training.ship runs/default/best.pt --name default``.

Writes ``src/napari_segmentello/weights/NAME.pt`` in half precision (after checking
on real held-out inputs that probabilities move by less than
``checkpoint.HALF_PROB_ATOL``; otherwise it keeps float32), with the training
provenance, and, with ``--metrics-from runs/report/NAME``, the model's own *val*
metrics from :mod:`training.report`'s evaluations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segmentello.checkpoint import HALF_PROB_ATOL, load_checkpoint, load_model_from_checkpoint, save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.inputs import intensity_range
from napari_segmentello.samples import make_sample

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "napari_segmentello" / "weights"
SHOWN = ("iou", "boundary_iou", "boundary_iou_1px", "hd95")  # the val metrics a checkpoint carries


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="trained checkpoint (e.g. runs/default/best.pt)")
    p.add_argument("--name", required=True, help="bundled model name (the file's stem)")
    p.add_argument("--metrics-from", type=Path, help="training.report output folder of this model")
    p.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--objects", type=int, default=32, help="held-out objects for the half-precision check")
    return p


def half_drift(path: Path, objects: int) -> float:
    """Largest probability change from storing ``path`` in float16, on coco-mini *train* objects' windows.

    Train objects, because this is a check of the storage, not a result; any
    real inputs will do and the val split stays for reporting.
    """
    full = load_model_from_checkpoint(path)
    state = {k: v.half().float() if v.is_floating_point() else v for k, v in full.state_dict().items()}
    rounded = load_model_from_checkpoint(path)
    rounded.load_state_dict(state)
    instances = CocoInstances(*dataset_files("coco-mini", "train"), max_images=20)
    rng = np.random.default_rng(0)
    worst = 0.0
    with torch.inference_mode():
        for i in range(min(objects, len(instances))):
            inst = instances[i]
            lo, hi = intensity_range(inst.image)
            x = make_sample(inst.image, inst.mask, full.spec, "scribble", rng, lo=lo, hi=hi).x  # its own windows
            batch = torch.from_numpy(x[None])
            a, b = torch.sigmoid(full(batch)), torch.sigmoid(rounded(batch))
            worst = max(worst, float((a - b).abs().max()))
    return worst


def val_metrics(folder: Path) -> dict[str, Any]:
    """``{dataset: {protocol: {metric: mean}}}`` of the model from a training.report folder."""
    out: dict[str, Any] = {}
    for results in sorted(folder.glob("*/*/results.json")):
        r = json.loads(results.read_text())
        mean = r["methods"]["model"]["mean"]
        dataset, protocol = results.parent.parent.name, results.parent.name
        out.setdefault(f"{dataset}/val", {})[protocol] = {k: round(mean[k], 4) for k in SHOWN}
    if not out:
        raise ValueError(f"no */*/results.json under {folder}; run python -m training.report first")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    drift = half_drift(args.checkpoint, args.objects)
    half = drift < HALF_PROB_ATOL
    print(
        f"float16 storage moves probabilities by at most {drift:.2e} (bound {HALF_PROB_ATOL}): "
        f"storing {'float16' if half else 'float32'}"
    )
    metrics = {"training": ckpt.metrics}
    if args.metrics_from is not None:
        metrics |= val_metrics(args.metrics_from)
    provenance = {**ckpt.provenance, "shipped_from": str(args.checkpoint), "half_precision_drift": drift}
    model = load_model_from_checkpoint(args.checkpoint)
    out = save_checkpoint(
        args.weights_dir / f"{args.name}.pt", model, provenance=provenance, metrics=metrics, half=half
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
