"""Prompts to a good mask (NoC): ``python -m training.noc --model default --dataset coco-mini --split val``.

Two protocols, each method correcting its *own* errors:

- ``--protocol clicks``, the standard one (RITM, SimpleClick, SAM): click 1 at the
  object pixel farthest from its boundary (:func:`~napari_segmentello.strokes.first_click`),
  each next click at the pixel farthest from the boundary of the larger error region,
  positive in missed object, negative in false positive (:func:`~napari_segmentello.strokes.next_click`).
  The model is given the clicks as points (``Refiner.predict(clicks=...)``, as the widget
  gives them: discs for the network, only a negative click's own pixel held out of the
  answer); GrabCut as discs (:func:`~napari_segmentello.inputs.points_to_stroke`), positive
  ones sure foreground, negative ones sure background. No randomness.
- a stroke protocol (default ``scribble``, our own): round 1 is one simulated stroke
  (seeded by (seed, annotation id), the same for every method); every later round adds
  corrective clicks (:func:`~napari_segmentello.strokes.correction_strokes`: one in the
  largest missed region, one in the largest false positive).

In the stroke protocol the model is asked ``Refiner.predict(all_pos, negative=all_neg, previous=its_last_mask)``
(prompts its recipe has no channel for are left out); GrabCut is re-run from the same
kind of accumulated prompts as sure foreground/background
(:func:`training.baselines.grabcut`).

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

import numpy as np
from tqdm import tqdm

from napari_segmentello.data import CocoInstances
from napari_segmentello.engine import Refiner
from napari_segmentello.inputs import click_masks
from napari_segmentello.metrics import iou
from napari_segmentello.strokes import PROTOCOLS, correction_strokes, first_click, next_click, simulate_stroke

from training.baselines import grabcut
from training.dataset import resolve_dataset
from training.evaluate import select_objects

MODEL, GRABCUT = "model", "grabcut"
CLICKS = "clicks"  # the standard click protocol (from the first click, not from a stroke)
SHOWN_ROUNDS = (1, 3, 5, 10, 20)  # the IoU@k columns of noc.md (those within --rounds)
Click = tuple[int, int, bool]  # (row, col, positive)

# (positive strokes so far, negative strokes so far, the method's last mask or None) -> new mask
Method = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
# (the clicks so far, the method's last mask or None) -> new mask
ClickMethod = Callable[[Sequence[Click], np.ndarray | None], np.ndarray]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.noc", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    p.add_argument("--dataset", default="coco-mini", help="named dataset under the data root (default coco-mini)")
    p.add_argument("--split", default="val", help="train or val (default val)")
    p.add_argument(
        "--protocol",
        default="scribble",
        choices=sorted({*PROTOCOLS, CLICKS}),
        help="'clicks': the standard click protocol (here it means that, not the random-clicks stroke); "
        "otherwise the first stroke of a stroke session (default scribble)",
    )
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


def model_method(refiner: Refiner) -> Method:
    """The refiner as a NoC method: prompts its recipe has no channel for are not passed."""
    extras = set(refiner.spec.extras)

    def predict(pos: np.ndarray, neg: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        negative = neg if "neg" in extras and neg.any() else None
        previous = prev if "prev" in extras else None
        return refiner.predict(pos, negative=negative, previous=previous)

    return predict


def model_click_method(refiner: Refiner) -> ClickMethod:
    """The refiner given the clicks as points (``Refiner.predict(clicks=...)``), as the widget gives them.

    Its negative clicks are dropped when its recipe has no 'neg' channel, like ``model_method``'s.
    """
    extras = set(refiner.spec.extras)

    def predict(clicks: Sequence[Click], prev: np.ndarray | None) -> np.ndarray:
        given = [c for c in clicks if c[2] or "neg" in extras]
        return refiner.predict(clicks=given, previous=prev if "prev" in extras else None)

    return predict


def drawn_clicks(method: Method, shape: tuple[int, int]) -> ClickMethod:
    """A stroke method given the clicks drawn as discs (``clicks_to_strokes``): how GrabCut takes them."""
    return lambda clicks, prev: method(*clicks_to_strokes(clicks, shape), prev)


def grabcut_method(image: np.ndarray, margin: float) -> Method:
    """GrabCut as a NoC method: re-run from the prompts each round (negatives sure background), last mask unused."""
    return lambda pos, neg, prev: grabcut(image, pos, negative=neg, margin=margin)


def clicks_to_strokes(clicks: Sequence[Click], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, neg)``: the positive clicks' discs and the negative clicks' discs (``inputs.click_masks``)."""
    pos, neg, _ = click_masks(clicks, shape)
    return pos, neg


def interact_clicks(method: ClickMethod, gt: np.ndarray, rounds: int) -> tuple[list[float], list[Click]]:
    """IoU after each of ``rounds`` clicks of the standard protocol on this method's own errors, and the clicks.

    Once a mask is perfect there is nothing left to click: later rounds keep its IoU.
    """
    clicks, ious, pred = [first_click(gt)], [], None
    for round_ in range(rounds):
        if round_:
            click = next_click(gt, pred)
            if click is None:
                ious.append(ious[-1])
                continue
            clicks.append(click)
        pred = method(clicks, pred)
        ious.append(iou(gt, pred))
    return ious, clicks


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
    """The summary table: NoC and failures per target, IoU after rounds 1/3/5/10/20 (those run)."""
    keys = [target_key(t) for t in results["targets"]]
    shown = [k for k in SHOWN_ROUNDS if k <= results["rounds"]]
    if results["protocol"] == CLICKS:
        session = f"the standard click protocol from the first click, up to {results['rounds']} clicks"
    else:
        session = (
            f"first stroke `{results['protocol']}`, up to {results['rounds']} rounds "
            "(corrective clicks on each method's own errors)"
        )
    lines = [
        f"#### {results['model']} on {results['dataset']['name']} {results['dataset']['split']}",
        "",
        f"Command: `{results['command']}`.",
        "",
        f"{results['n_objects']} objects, {session}, seed {results['seed']}, device {results['device']}. "
        f"NoC@t: mean first round reaching IoU t, a failure (never reached) counts as {results['rounds']}.",
        "",
        "| method | "
        + " | ".join([*(f"NoC@{k}" for k in keys), *(f"failures@{k}" for k in keys), *(f"IoU@{r}" for r in shown)])
        + " |",
        "|---" * (2 * len(keys) + len(shown) + 1) + "|",
    ]
    for name, s in results["methods"].items():
        cells = [f"{s['noc'][k]:.2f}" for k in keys] + [str(s["failures"][k]) for k in keys]
        cells += [f"{s['mean_iou'][r - 1]:.4f}" for r in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
    unit = "clicks" if results["protocol"] == CLICKS else "round (strokes)"
    ax.set(xlabel=unit, ylabel="mean IoU", title=f"{results['n_objects']} objects", xticks=rounds)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    refiner: Refiner, instances: CocoInstances, indices: list[int], *, protocol: str, rounds: int, seed: int
) -> list[dict[str, Any]]:
    """Per-object records with each method's IoU per round (and, for the click protocol, its clicks)."""
    model, clicker = model_method(refiner), model_click_method(refiner)
    records, image_id = [], None
    for index in tqdm(indices, desc="objects"):
        inst = instances[index]
        if inst.image_id != image_id:
            refiner.set_image(inst.image)
            image_id = inst.image_id
        methods = {MODEL: model, GRABCUT: grabcut_method(inst.image, refiner.spec.roi_margin)}
        record = {"image_id": inst.image_id, "ann_id": inst.ann_id, "area": int(inst.mask.sum())}
        if protocol == CLICKS:
            clickers = {MODEL: clicker, GRABCUT: drawn_clicks(methods[GRABCUT], inst.mask.shape)}
            sessions = {name: interact_clicks(method, inst.mask, rounds) for name, method in clickers.items()}
            record["iou"] = {name: ious for name, (ious, _) in sessions.items()}
            record["clicks"] = {
                name: [[int(r), int(c), bool(p)] for r, c, p in cl] for name, (_, cl) in sessions.items()
            }
        else:
            first = simulate_stroke(inst.mask, protocol, np.random.default_rng([seed, inst.ann_id]))
            record["iou"] = {  # each method's corrections drawn from the same seeded stream, on its own errors
                name: interact(method, inst.mask, first, rounds, np.random.default_rng([seed, inst.ann_id, 1]))
                for name, method in methods.items()
            }
        records.append(record)
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
