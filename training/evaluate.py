"""Evaluate a refiner the way it is used: ``python -m training.evaluate --model default --dataset coco-mini``.

Every object gets one simulated stroke (seeded by (seed, annotation id), so
every method and every run sees the same strokes); the model is run through the
real inference path (:class:`napari_segmentello.engine.Refiner` on the full
image) and the baselines on the same stroke's ROI. Writes ``results.json``
(summary + per object), ``results.md`` and a qualitative ``grid.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_segmentello.data import CocoInstances
from napari_segmentello.engine import Refiner
from napari_segmentello.inputs import intensity_range, to_model_image
from napari_segmentello.metrics import METRIC_KEYS, mask_metrics
from napari_segmentello.roi import crop, roi_from_stroke
from napari_segmentello.strokes import PROTOCOLS, simulate_stroke

from training.baselines import BASELINES
from training.dataset import resolve_dataset

MODEL = "model"  # the method name of the refiner in the results
THIN_BAND = 1  # px: the study-comparable Boundary IoU (see docs/metrics.md)
KEYS = (*METRIC_KEYS, f"boundary_iou_{THIN_BAND}px")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="checkpoint file (e.g. runs/NAME/best.pt)")
    which.add_argument("--model", help="bundled model name (napari-segmentello models) or checkpoint path")
    p.add_argument("--dataset", default="coco-mini", help="named dataset under the data root (default coco-mini)")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--ann-file", type=Path, help="COCO instances JSON instead of --dataset/--split")
    p.add_argument("--data-root", type=Path, help="images folder of --ann-file (default <ann-file>/../../images)")
    p.add_argument("--protocol", default="study", choices=sorted(PROTOCOLS), help="simulated stroke (default study)")
    p.add_argument("--max-objects", type=int, help="a seeded random subset of N objects (default: all)")
    p.add_argument("--max-images", type=int, help="only the first N images")
    p.add_argument("--min-area", type=int, default=64, help="skip objects smaller than this (pixels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--baselines", default="grabcut,randomwalker,identity", help="comma list, or '' for none")
    p.add_argument("--grid", type=int, default=6, help="objects in the qualitative grid.png (0: none)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder")
    return p


def select_objects(n: int, max_objects: int | None, seed: int) -> list[int]:
    """Indices to evaluate: all, or a seeded random subset kept in dataset order (images stay together)."""
    if max_objects is None or max_objects >= n:
        return list(range(n))
    if max_objects < 1:
        raise ValueError(f"--max-objects must be >= 1, got {max_objects}")
    return sorted(np.random.default_rng(seed).choice(n, size=max_objects, replace=False).tolist())


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000.0


def summarize(objects: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Mean and median of every metric, and median latency, per method."""
    out = {}
    for m in methods:
        table = {k: np.array([o["metrics"][m][k] for o in objects]) for k in KEYS}
        latency = np.array([o["latency_ms"][m] for o in objects])
        out[m] = {
            "mean": {k: float(v.mean()) for k, v in table.items()},
            "median": {k: float(np.median(v)) for k, v in table.items()},
            "latency_ms_median": float(np.median(latency)),
        }
    return out


def evaluate(
    refiner: Refiner,
    instances: CocoInstances,
    indices: list[int],
    *,
    protocol: str,
    seed: int,
    baselines: list[str],
    keep: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-object records, and the images/masks of the first ``keep`` objects (for the grid)."""
    margin = refiner.spec.roi_margin
    records, kept = [], []
    image_id = None
    for index in indices:
        inst = instances[index]
        if inst.image_id != image_id:  # once per image, as an annotator's session would
            refiner.set_image(inst.image)
            image_id = inst.image_id
        stroke = simulate_stroke(inst.mask, protocol, np.random.default_rng([seed, inst.ann_id]))
        preds, latency = {}, {}
        preds[MODEL], latency[MODEL] = _timed(refiner.predict, stroke)
        for name in baselines:
            preds[name], latency[name] = _timed(BASELINES[name], inst.image, stroke, margin=margin)
        records.append(
            {
                "image_id": inst.image_id,
                "ann_id": inst.ann_id,
                "category": inst.category,
                "area": int(inst.mask.sum()),
                "metrics": {m: mask_metrics(inst.mask, p, boundary_px=(THIN_BAND,)) for m, p in preds.items()},
                "latency_ms": latency,
            }
        )
        if len(kept) < keep:
            kept.append({"image": inst.image, "gt": inst.mask, "stroke": stroke, "preds": preds})
    return records, kept


def plot_grid(kept: list[dict[str, Any]], path: Path) -> None:
    """Rows = objects; columns = image, stroke, ground truth, the model and each baseline but identity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in kept[0]["preds"] if m != "identity"]
    columns = ["image", "stroke", "ground truth", *methods]
    fig, axes = plt.subplots(len(kept), len(columns), figsize=(2.2 * len(columns), 2.2 * len(kept)), squeeze=False)
    for row, item in zip(axes, kept, strict=True):
        roi = roi_from_stroke(item["gt"] | item["stroke"], margin=0.15)  # the object and its stroke, with context
        lo, hi = intensity_range(item["image"])
        picture = to_model_image(crop(item["image"], roi), lo, hi, 3)
        overlays = [None, item["stroke"], item["gt"], *(item["preds"][m] for m in methods)]
        for ax, title, mask in zip(row, columns, overlays, strict=True):
            ax.imshow(picture)
            if mask is not None:
                window = crop(mask, roi)
                ax.imshow(np.ma.masked_where(~window, window), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """The summary as a Markdown table (means, with medians of IoU and HD95, and median latency)."""
    lines = [
        f"# Evaluation: {results['model']} on {results['dataset']['ann_file']}",
        "",
        f"{results['n_objects']} objects, protocol `{results['protocol']}`, seed {results['seed']}, "
        f"device {results['device']}. Means (medians in parentheses); latency is the median per object. "
        f"`bIoU` is Boundary IoU with a 2 % band, `bIoU 1px` the study-comparable 1-pixel band.",
        "",
        "| method | pixel acc. | IoU | Dice | bIoU | bIoU 1px | HD (px) | HD95 (px) | latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["methods"].items():
        mean, med = s["mean"], s["median"]
        cells = [f"{mean[k]:.4f} ({med[k]:.4f})" for k in ("pixel_accuracy", "iou", "dice", "boundary_iou")]
        cells.append(f"{mean[KEYS[-1]]:.4f} ({med[KEYS[-1]]:.4f})")
        cells += [f"{mean[k]:.2f} ({med[k]:.2f})" for k in ("hausdorff", "hd95")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['latency_ms_median']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        print(f"error: unknown baseline(s) {unknown}; valid: {list(BASELINES)}", file=sys.stderr)
        return 2
    entry = {"dataset": args.dataset, "split": args.split}
    if args.ann_file is not None:
        entry = {"ann_file": str(args.ann_file), **({"images_dir": str(args.data_root)} if args.data_root else {})}
    elif args.data_root is not None:
        print("error: --data-root is the images folder of --ann-file; pass --ann-file too", file=sys.stderr)
        return 2
    images_dir, ann_file = resolve_dataset(entry)
    instances = CocoInstances(images_dir, ann_file, min_area=args.min_area, max_images=args.max_images)
    model = args.checkpoint if args.checkpoint is not None else args.model
    refiner = Refiner(model, device=args.device)
    indices = select_objects(len(instances), args.max_objects, args.seed)
    records, kept = evaluate(
        refiner, instances, indices, protocol=args.protocol, seed=args.seed, baselines=baselines, keep=args.grid
    )
    results = {
        "model": str(model),
        "spec": refiner.spec.to_dict(),
        "dataset": {"images_dir": str(images_dir), "ann_file": str(ann_file), "skipped": dict(instances.skipped)},
        "protocol": args.protocol,
        "seed": args.seed,
        "device": str(refiner.device),
        "n_objects": len(records),
        "methods": summarize(records, [MODEL, *baselines]),
        "objects": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, args.out / "results.md")
    if kept:
        plot_grid(kept, args.out / "grid.png")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
