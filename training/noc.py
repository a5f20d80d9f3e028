"""Strokes to a good mask (NoC): ``python -m training.noc --model default --dataset coco-mini --split val``.

The interactive protocol of RITM/SimpleClick with strokes: round 1 is one simulated
stroke (seeded by (seed, annotation id), the same for every method); every later round
adds corrective clicks on the method's *own* current errors
(:func:`~napari_segmentello.strokes.correction_strokes`: one in the largest missed
region, one in the largest false positive), accumulated as positive and negative
strokes. The model is asked ``Refiner.predict(all_pos, negative=all_neg,
previous=its_last_mask)`` (prompts its recipe has no channel for are left out);
GrabCut is re-run from the same kind of accumulated strokes (:func:`grabcut_strokes`).

NoC@t is the first round whose IoU reaches t; an object that never does counts as the
number of rounds (RITM's convention, so a failure is not rewarded), and is also counted
in failures@t. Writes ``noc.json`` (summary + per-object IoU curves), ``noc.md`` and
``noc_curve.png`` (mean IoU per round).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from napari_segmentello.data import CocoInstances
from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.strokes import PROTOCOLS, correction_strokes, simulate_stroke

from training.baselines import stroke_window
from training.dataset import resolve_dataset
from training.evaluate import select_objects

MODEL, GRABCUT = "model", "grabcut"
SHOWN_ROUNDS = (1, 3, 5)  # the IoU@k columns of noc.md

# (positive strokes so far, negative strokes so far, the method's last mask or None) -> new mask
Method = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.noc", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    p.add_argument("--dataset", default="coco-mini", help="named dataset under the data root (default coco-mini)")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument("--protocol", default="scribble", choices=sorted(PROTOCOLS), help="first stroke (default scribble)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per object, the first stroke included (default 10)")
    p.add_argument("--targets", default="0.85,0.90", help="comma list of IoU targets (default 0.85,0.90)")
    p.add_argument("--max-objects", type=int, help="a seeded random subset of N objects (default: all)")
    p.add_argument("--max-images", type=int, help="only the first N images")
    p.add_argument("--min-area", type=int, default=64, help="skip objects smaller than this (pixels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--out", type=Path, default=Path("runs/noc"), help="output folder")
    return p


def parse_targets(text: str) -> list[float]:
    """``"0.85,0.90"`` -> ``[0.85, 0.9]``; each target must be in (0, 1]."""
    try:
        targets = [float(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise ValueError(f"--targets must be a comma list of numbers, got {text!r}") from err
    if not targets or not all(0 < t <= 1 for t in targets):
        raise ValueError(f"--targets must be IoU values in (0, 1], got {text!r}")
    return sorted(targets)


def target_key(target: float) -> str:
    """0.85 -> ``"85"``: the NoC@85 naming of the papers."""
    return f"{target * 100:g}"


def noc(ious: Sequence[float], target: float, max_rounds: int) -> int:
    """The first (1-based) round whose IoU reaches ``target``; ``max_rounds`` if none does (RITM's convention)."""
    for round_, value in enumerate(ious[:max_rounds], start=1):
        if value >= target:
            return round_
    return max_rounds


def grabcut_strokes(
    image: np.ndarray, pos: np.ndarray, neg: np.ndarray, *, margin: float = 0.4, iterations: int = 5
) -> np.ndarray:
    """GrabCut on the positive strokes' ROI (the model's window) with positive and negative strokes.

    Labels as :func:`training.baselines.grabcut`, plus the negative strokes: positive
    strokes are sure foreground (``GC_FGD``), negative ones sure background (``GC_BGD``,
    winning where they overlap: the later correction), the rest of the ROI probable
    background. Negative strokes outside the window are outside the model's view too.
    """
    region, rgb, local_pos = stroke_window(image, pos, margin)
    local_neg = np.asarray(neg, bool)[region]
    labels = np.full(local_pos.shape, cv2.GC_PR_BGD, np.uint8)
    labels[local_pos] = cv2.GC_FGD
    labels[local_neg] = cv2.GC_BGD
    out = np.zeros(np.shape(pos), bool)
    if not (labels == cv2.GC_PR_BGD).any():  # nothing left to decide
        out[region] = labels == cv2.GC_FGD
        return out
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    img8 = np.ascontiguousarray(np.round(rgb * 255).astype(np.uint8))
    cv2.grabCut(img8, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    out[region] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out


def model_method(refiner: Refiner) -> Method:
    """The refiner as a NoC method: prompts its recipe has no channel for are not passed."""
    extras = set(refiner.spec.extras)

    def predict(pos: np.ndarray, neg: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        negative = neg if "neg" in extras and neg.any() else None
        previous = prev if "prev" in extras else None
        return refiner.predict(pos, negative=negative, previous=previous)

    return predict


def grabcut_method(image: np.ndarray, margin: float) -> Method:
    """GrabCut as a NoC method: re-run from the strokes each round, its last mask unused."""
    return lambda pos, neg, prev: grabcut_strokes(image, pos, neg, margin=margin)


def interact(method: Method, gt: np.ndarray, first: np.ndarray, rounds: int, rng: np.random.Generator) -> list[float]:
    """IoU after each of ``rounds`` rounds: the first stroke, then corrections on this method's own errors."""
    pos, neg, pred = first.copy(), np.zeros_like(first), None
    ious = []
    for round_ in range(rounds):
        if round_:
            add_pos, add_neg = correction_strokes(gt, pred, rng)
            pos, neg = pos | add_pos, neg | add_neg
        pred = method(pos, neg, pred)
        ious.append(iou(gt, pred))
    return ious


def summarize(records: list[dict[str, Any]], methods: list[str], targets: list[float], rounds: int) -> dict[str, Any]:
    """Per method: mean NoC and failure count per target, and the mean IoU of every round."""
    out = {}
    for m in methods:
        curves = np.array([r["iou"][m] for r in records])
        out[m] = {
            "noc": {target_key(t): float(np.mean([noc(c, t, rounds) for c in curves])) for t in targets},
            "failures": {target_key(t): int(sum(c.max() < t for c in curves)) for t in targets},
            "mean_iou": curves.mean(axis=0).tolist(),
        }
    return out


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """The summary table: NoC per target, IoU after rounds 1/3/5, failures at the highest target."""
    keys = [target_key(t) for t in results["targets"]]
    shown = [k for k in SHOWN_ROUNDS if k <= results["rounds"]]
    lines = [
        f"#### {results['model']} on {results['dataset']['name']} {results['dataset']['split']}",
        "",
        f"Command: `{results['command']}`.",
        "",
        f"{results['n_objects']} objects, first stroke `{results['protocol']}`, up to {results['rounds']} rounds "
        f"(corrective clicks on each method's own errors), seed {results['seed']}, device {results['device']}. "
        f"NoC@t: mean first round reaching IoU t, a failure counts as {results['rounds']}.",
        "",
        "| method | "
        + " | ".join([*(f"NoC@{k}" for k in keys), *(f"IoU@{r}" for r in shown), f"failures@{keys[-1]}"])
        + " |",
        "|---" * (len(keys) + len(shown) + 2) + "|",
    ]
    for name, s in results["methods"].items():
        cells = [f"{s['noc'][k]:.2f}" for k in keys] + [f"{s['mean_iou'][r - 1]:.4f}" for r in shown]
        lines.append(f"| {name} | " + " | ".join([*cells, str(s["failures"][keys[-1]])]) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot_curve(results: dict[str, Any], path: Path) -> None:
    """Mean IoU per round, one line per method, the targets as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = np.arange(1, results["rounds"] + 1)
    for name, s in results["methods"].items():
        ax.plot(rounds, s["mean_iou"], "o-", label=name)
    for t in results["targets"]:
        ax.axhline(t, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="round (strokes)", ylabel="mean IoU", title=f"{results['n_objects']} objects", xticks=rounds)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    refiner: Refiner, instances: CocoInstances, indices: list[int], *, protocol: str, rounds: int, seed: int
) -> list[dict[str, Any]]:
    """Per-object records with each method's IoU per round."""
    model = model_method(refiner)
    records, image_id = [], None
    for index in tqdm(indices, desc="objects"):
        inst = instances[index]
        if inst.image_id != image_id:
            refiner.set_image(inst.image)
            image_id = inst.image_id
        first = simulate_stroke(inst.mask, protocol, np.random.default_rng([seed, inst.ann_id]))
        methods = {MODEL: model, GRABCUT: grabcut_method(inst.image, refiner.spec.roi_margin)}
        curves = {  # each method's corrections drawn from the same seeded stream, on its own errors
            name: interact(method, inst.mask, first, rounds, np.random.default_rng([seed, inst.ann_id, 1]))
            for name, method in methods.items()
        }
        records.append({"image_id": inst.image_id, "ann_id": inst.ann_id, "area": int(inst.mask.sum()), "iou": curves})
    return records


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targets = parse_targets(args.targets)
        if args.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
        images_dir, ann_file = resolve_dataset({"dataset": args.dataset, "split": args.split})
        instances = CocoInstances(images_dir, ann_file, min_area=args.min_area, max_images=args.max_images)
        indices = select_objects(len(instances), args.max_objects, args.seed)
        refiner = Refiner(args.model, device=args.device)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    records = evaluate(refiner, instances, indices, protocol=args.protocol, rounds=args.rounds, seed=args.seed)
    results = {
        "model": str(args.model),
        "spec": refiner.spec.to_dict(),
        "command": "python -m training.noc " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": {
            "name": args.dataset,
            "split": args.split,
            "images_dir": str(images_dir),
            "ann_file": str(ann_file),
            "skipped": dict(instances.skipped),
        },
        "protocol": args.protocol,
        "rounds": args.rounds,
        "targets": targets,
        "seed": args.seed,
        "device": str(refiner.device),
        "n_objects": len(records),
        "convention": f"NoC@t = first round with IoU >= t; never reached -> {args.rounds} (and a failure)",
        "methods": summarize(records, [MODEL, GRABCUT], targets, args.rounds),
        "objects": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noc.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, args.out / "noc.md")
    plot_curve(results, args.out / "noc_curve.png")
    print((args.out / "noc.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
