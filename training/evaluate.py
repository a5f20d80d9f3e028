"""Evaluate a refiner the way it is used: ``python -m training.evaluate --model default --dataset coco-mini``.

Every object gets one prompt, the same for every method and every run: a
simulated stroke (seeded by (seed, annotation id)), the annotator's recorded
strokes (``--protocol real``: acdc-scribbles' ``scribble`` + ``negative_scribble``;
``--protocol real-all``: the same, with the other objects' strokes of the image as
"not this" too, as one labels layer with an id per structure gives them)
or the object's box with a few pixels of jitter (``--protocol box``). The model is
run through the real inference path (:class:`napari_segmentello.engine.Refiner`
on the full image) and the baselines on the same prompt's ROI, given the same
prompt (GrabCut takes strokes as sure foreground/background, a box in its
rectangle mode, a rough mask (``strokes.ROUGH_PROTOCOLS``) as probable foreground).
Writes ``results.json`` (summary + per object), ``results.md``
and a qualitative ``grid.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segmentello.data import CocoInstances, Instance
from napari_segmentello.engine import Refiner, strokes_exclude_each_other, takes_rough_masks
from napari_segmentello.inputs import intensity_range, to_model_image
from napari_segmentello.metrics import METRIC_KEYS, mask_metrics
from napari_segmentello.roi import crop, roi_from_stroke
from napari_segmentello.strokes import PROTOCOLS, ROUGH_PROTOCOLS, jittered_box, simulate_stroke

from training.baselines import BASELINES, BOX_BASELINES, ROUGH_BASELINES, box_mask
from training.dataset import resolve_dataset

MODEL = "model"  # the method name of the refiner in the results
THIN_BAND = 1  # px: the study-comparable Boundary IoU (see docs/metrics.md)
KEYS = (*METRIC_KEYS, f"boundary_iou_{THIN_BAND}px")
REAL, REAL_ALL, BOX = "real", "real-all", "box"  # the protocols that are not simulated strokes
# What each recorded-stroke protocol hands over, in words for the tables.
REAL_PROTOCOLS = {
    REAL: 'the stroke over the object and the background ("not this") strokes of its slice',
    REAL_ALL: "the stroke over the object, with the strokes over the slice's other structures and its background "
    'strokes as "not this" (every structure painted, as one labels layer with an id per structure gives them)',
}
PROTOCOL_CHOICES = sorted([*PROTOCOLS, *REAL_PROTOCOLS, BOX])


@dataclass(frozen=True)
class Prompt:
    """What the user gave for one object: a stroke (with optional "not this" strokes) or a box.

    ``others``: the strokes painted over the image's other objects (``real-all``), kept apart from
    ``negative`` since only object-aware models take them as "not this" (:meth:`Refiner.predict_labels`).
    """

    stroke: np.ndarray | None = None
    negative: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    others: np.ndarray | None = None

    @property
    def not_this(self) -> np.ndarray | None:
        """Every pixel painted as not this object: the negative strokes and the other objects' strokes."""
        if self.others is None:
            return self.negative
        return self.others if self.negative is None else self.negative | self.others

    def shown(self, shape: tuple[int, int]) -> np.ndarray:
        """The prompt's pixels as drawn in the grid: the stroke, or the box's rectangle."""
        return box_mask(shape, self.box) if self.box is not None else self.stroke


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", type=Path, help="checkpoint file (e.g. runs/NAME/best.pt)")
    which.add_argument("--model", help="bundled model name (napari-segmentello models) or checkpoint path")
    p.add_argument("--dataset", default="coco-mini", help="named dataset under the data root (default coco-mini)")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--ann-file", type=Path, help="COCO instances JSON instead of --dataset/--split")
    p.add_argument("--data-root", type=Path, help="images folder of --ann-file (default <ann-file>/../../images)")
    p.add_argument(
        "--protocol",
        default="study",
        choices=PROTOCOL_CHOICES,
        help="simulated stroke, 'real' (recorded human strokes), 'real-all' (those of every structure of the image) "
        "or 'box' (jittered object box); default study",
    )
    p.add_argument("--max-objects", type=int, help="a seeded random subset of N objects (default: all)")
    p.add_argument("--max-images", type=int, help="only the first N images")
    p.add_argument("--min-area", type=int, default=64, help="skip objects smaller than this (pixels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument(
        "--baselines",
        help="comma list, or '' for none (default: grabcut,randomwalker,identity; for boxes and rough masks "
        "grabcut,identity)",
    )
    p.add_argument("--grid", type=int, default=6, help="objects in the qualitative grid (0: none)")
    p.add_argument("--grid-out", type=Path, help="where to write the grid PNG (default OUT/grid.png)")
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="output folder")
    return p


def select_objects(n: int, max_objects: int | None, seed: int) -> list[int]:
    """Indices to evaluate: all, or a seeded random subset kept in dataset order (images stay together)."""
    if max_objects is None or max_objects >= n:
        return list(range(n))
    if max_objects < 1:
        raise ValueError(f"--max-objects must be >= 1, got {max_objects}")
    return sorted(np.random.default_rng(seed).choice(n, size=max_objects, replace=False).tolist())


def baseline_registry(protocol: str) -> dict[str, Callable[..., np.ndarray]]:
    """The baselines that can take this protocol's prompt (a box is not a stroke, nor a rough mask)."""
    return BOX_BASELINES if protocol == BOX else ROUGH_BASELINES if protocol in ROUGH_PROTOCOLS else BASELINES


def parse_baselines(text: str | None, protocol: str) -> list[str]:
    """The ``--baselines`` list (default: every baseline of the protocol); unknown names are a ValueError."""
    valid = baseline_registry(protocol)
    names = list(valid) if text is None else [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in valid]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown} for protocol {protocol!r}; valid: {list(valid)}")
    return names


def make_prompt(inst: Instance, protocol: str, seed: int, others: np.ndarray | None = None) -> Prompt:
    """This object's prompt: its recorded strokes, its jittered box, or a stroke seeded by (seed, annotation id).

    ``others`` (``real-all``): the recorded strokes of the image's other objects, "not this" beside the background's.
    """
    rng = np.random.default_rng([seed, inst.ann_id])
    if protocol in REAL_PROTOCOLS:
        if inst.scribble is None or not inst.scribble.any():
            raise ValueError(
                f"--protocol {protocol} needs recorded human strokes (a 'scribble' RLE per annotation, as in "
                f"acdc-scribbles); annotation {inst.ann_id} has none"
            )
        negative = inst.negative_scribble
        others = others & ~inst.scribble if protocol == REAL_ALL and others is not None else None
        return Prompt(
            stroke=inst.scribble,
            negative=negative if negative is not None and negative.any() else None,
            others=others if others is not None and others.any() else None,
        )
    if protocol == BOX:
        return Prompt(box=jittered_box(inst.mask, rng))
    return Prompt(stroke=simulate_stroke(inst.mask, protocol, rng))


def model_call(refiner: Refiner, protocol: str) -> tuple[Callable[[Prompt], np.ndarray] | None, str]:
    """How the model is asked for this protocol's prompts, and that in words for the table.

    None (and the reason) when the model has no input for the prompt: a model without a
    box channel cannot take a box; one without a 'neg' channel gets the positive stroke only.
    """
    extras = set(refiner.spec.extras)
    if protocol == BOX:
        if "box" not in extras:
            return None, "model takes no box"
        return (lambda p: refiner.predict(box=p.box)), "box"
    if protocol in ROUGH_PROTOCOLS and not takes_rough_masks(refiner.spec):
        return (lambda p: refiner.predict(p.stroke)), "rough mask as the stroke (the model takes no prior)"
    if protocol in ROUGH_PROTOCOLS:
        return (lambda p: refiner.predict(prior=p.stroke)), "rough mask as prior (its core as the stroke)"
    if protocol in REAL_PROTOCOLS and "neg" not in extras:
        return (lambda p: refiner.predict(p.stroke)), "positive stroke only (the model has no 'neg' input)"
    if protocol == REAL_ALL and strokes_exclude_each_other(refiner.spec):
        return (lambda p: refiner.predict(p.stroke, negative=p.not_this)), (
            "stroke + the other structures' and the background strokes as negative (each object's input in "
            "Refiner.predict_labels)"
        )
    if protocol == REAL_ALL:
        return (lambda p: refiner.predict(p.stroke, negative=p.negative)), (
            "stroke + background strokes (Refiner.predict_labels gives a model of the study families no other "
            "object's strokes)"
        )
    if protocol == REAL:
        return (lambda p: refiner.predict(p.stroke, negative=p.negative)), "stroke + negative strokes"
    return (lambda p: refiner.predict(p.stroke)), "stroke"


def run_baseline(fn: Callable[..., np.ndarray], image: np.ndarray, prompt: Prompt, margin: float) -> np.ndarray:
    """A baseline given the same prompt as the model: the box, or the stroke with its negative strokes."""
    if prompt.box is not None:
        return fn(image, prompt.box, margin=margin)
    return fn(image, prompt.stroke, negative=prompt.not_this, margin=margin)


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000.0


def summarize(objects: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """Mean and median of every metric, and median latency, per method that ran."""
    out = {}
    for m in methods:
        if not objects or m not in objects[0]["metrics"]:
            continue
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
    """Per-object records, and the images/masks of ``keep`` objects for the grid (the first ones, categories spread)."""
    margin = refiner.spec.roi_margin
    ask_model, _ = model_call(refiner, protocol)
    registry = baseline_registry(protocol)
    per_category = math.ceil(keep / max(1, len(instances.coco.cats)))  # the grid shows every kind of object
    records, kept = [], []
    image_id, strokes = None, {}
    for index in indices:
        inst = instances[index]
        if inst.image_id != image_id:  # once per image, as an annotator's session would
            refiner.set_image(inst.image)
            image_id = inst.image_id
            strokes = instances.scribbles(image_id) if protocol == REAL_ALL else {}
        others = [s for ann_id, s in strokes.items() if ann_id != inst.ann_id]
        prompt = make_prompt(inst, protocol, seed, np.logical_or.reduce(others) if others else None)
        preds, latency = {}, {}
        if ask_model is not None:
            preds[MODEL], latency[MODEL] = _timed(ask_model, prompt)
        for name in baselines:
            preds[name], latency[name] = _timed(run_baseline, registry[name], inst.image, prompt, margin)
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
        if len(kept) < keep and sum(k["category"] == inst.category for k in kept) < per_category:
            kept.append(
                {"image": inst.image, "gt": inst.mask, "category": inst.category, "prompt": prompt, "preds": preds}
            )
    return records, kept


def _overlay(ax: Any, window: np.ndarray, cmap: str) -> None:
    ax.imshow(np.ma.masked_where(~window, window), cmap=cmap, alpha=0.5, vmin=0, vmax=1)


def plot_grid(kept: list[dict[str, Any]], path: Path) -> None:
    """Rows = objects; columns = image, prompt (negative strokes in blue), each method but identity, ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in kept[0]["preds"] if m != "identity"]
    columns = ["image", "prompt", *methods, "ground truth"]
    fig, axes = plt.subplots(len(kept), len(columns), figsize=(2.2 * len(columns), 2.2 * len(kept)), squeeze=False)
    for row, item in zip(axes, kept, strict=True):
        shown = item["prompt"].shown(item["gt"].shape)
        roi = roi_from_stroke(item["gt"] | shown, margin=0.15)  # the object and its prompt, with context
        lo, hi = intensity_range(item["image"])
        picture = to_model_image(crop(item["image"], roi), lo, hi, 3)
        overlays = [None, shown, *(item["preds"][m] for m in methods), item["gt"]]
        for ax, title, mask in zip(row, columns, overlays, strict=True):
            ax.imshow(picture)
            if mask is not None:
                _overlay(ax, crop(mask, roi), "autumn")
            if title == "prompt" and item["prompt"].not_this is not None:
                _overlay(ax, crop(item["prompt"].not_this, roi), "winter")
            ax.set_title(item["category"] if title == "image" else title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """The summary as a Markdown table (means, with medians of IoU and HD95, and median latency)."""
    lines = [
        f"# Evaluation: {results['model']} on {results['dataset']['ann_file']}",
        "",
        f"Command: `{results['command']}`.",
        "",
        f"{results['n_objects']} objects, protocol `{results['protocol']}` (the model is given: "
        f"{results['model_prompt']}), seed {results['seed']}, device {results['device']}. Means (medians in "
        f"parentheses); latency is the median per object. `bIoU` is Boundary IoU with a 2 % band, `bIoU 1px` "
        f"the study-comparable 1-pixel band.",
        "",
        "| method | pixel acc. | IoU | Dice | bIoU | bIoU 1px | HD (px) | HD95 (px) | latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if MODEL not in results["methods"]:
        lines.append(f"| {MODEL} | {results['model_prompt']} |" + " – |" * 7)
    for name, s in results["methods"].items():
        mean, med = s["mean"], s["median"]
        cells = [f"{mean[k]:.4f} ({med[k]:.4f})" for k in ("pixel_accuracy", "iou", "dice", "boundary_iou")]
        cells.append(f"{mean[KEYS[-1]]:.4f} ({med[KEYS[-1]]:.4f})")
        cells += [f"{mean[k]:.2f} ({med[k]:.2f})" for k in ("hausdorff", "hd95")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['latency_ms_median']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def dataset_entry(args: argparse.Namespace) -> dict[str, Any]:
    """The ``resolve_dataset`` entry of the command line (a named split, or an explicit annotation file)."""
    if args.ann_file is not None:
        return {"ann_file": str(args.ann_file), **({"images_dir": str(args.data_root)} if args.data_root else {})}
    if args.data_root is not None:
        raise ValueError("--data-root is the images folder of --ann-file; pass --ann-file too")
    return {"dataset": args.dataset, "split": args.split}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        baselines = parse_baselines(args.baselines, args.protocol)
        entry = dataset_entry(args)
        images_dir, ann_file = resolve_dataset(entry)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
        "command": "python -m training.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": {
            "name": entry.get("dataset", str(ann_file)),
            "split": entry.get("split", ""),
            "images_dir": str(images_dir),
            "ann_file": str(ann_file),
            "skipped": dict(instances.skipped),
        },
        "protocol": args.protocol,
        "model_prompt": model_call(refiner, args.protocol)[1],
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
        plot_grid(kept, args.grid_out or args.out / "grid.png")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
