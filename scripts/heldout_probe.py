"""Probe a model on held-out *train* images (the early-stopping images, never val): design checks, not results.

    python scripts/heldout_probe.py window --model default --objects 50 --scales 0.5,0.75,1,1.5 --mins 64
    python scripts/heldout_probe.py prior --model default --objects 30
    python scripts/heldout_probe.py clicks --model default --objects 20 --rounds 10
    python scripts/heldout_probe.py coarse --model default --objects 30 --protocol lasso --erosion 0.15,0.3

``window``: mean IoU of one human-like scribble and of one click per object, for each
start-window rule of pass 1 (``roi.CONTEXT_SCALE`` × ``roi.CONTEXT_MIN``), per train set.
``prior``: the true mask moved by 2-10 % of its size in a random direction (the neighbour's
answer), its eroded core as the stroke, the moved mask as ``prior`` (as propagation passes it)
or as ``previous`` (as a correction round does): IoU of the moved mask itself, of the model's
answers, and of the model given the seed alone.
``clicks``: the standard click protocol (``training.noc``) for ``--rounds`` clicks: IoU after 1, 5
and the last click, and NoC@85.
``coarse``: a rough-mask protocol (``strokes.simulate_stroke(mask, --protocol)``, default coarse): IoU of the rough
mask itself, of the model given it as the stroke, and given its core (eroded by each of ``--erosion``,
a comma list) as the stroke and the mask as ``prior`` (as "Rough masks" gives it).
The held-out images are those of ``training/configs/default.toml`` (its seed and val_fraction).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_segmentello import roi
from napari_segmentello.data import CocoInstances
from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.seeds import EROSION, seed_from_mask
from napari_segmentello.strokes import simulate_stroke
from training.config import load_config
from training.dataset import open_sources, split_items
from training.evaluate import evaluate
from training.noc import interact_clicks, model_method, noc

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"


def held_out(objects: int) -> list[tuple[CocoInstances, list[int]]]:
    """Each train set with a seeded sample of its held-out objects."""
    cfg = load_config(CONFIG)
    sources = open_sources(cfg)
    _, held = split_items(sources, cfg.val_fraction, cfg.seed)
    out = []
    for s, source in enumerate(sources):
        items = [i for t, i in held if t == s]
        pick = np.random.default_rng(s).choice(items, min(objects, len(items)), replace=False)
        out.append((source, sorted(pick.tolist())))
    return out


def probe_window(refiner: Refiner, sets, scales: list[float], mins: list[int]) -> None:
    rules = [(s, m) for s in scales for m in mins]
    print("set | prompt | " + " | ".join(f"scale {s} min {m}" for s, m in rules))
    for source, items in sets:
        for protocol in ("human-scribble", "click"):
            row = []
            for scale, minimum in rules:
                roi.CONTEXT_SCALE, roi.CONTEXT_MIN = scale, minimum  # read by roi.start_context on every call
                records, _ = evaluate(refiner, source, items, protocol=protocol, seed=0, baselines=[])
                row.append(np.mean([r["metrics"]["model"]["iou"] for r in records]))
            print(f"{source.ann_file.parent.parent.name} | {protocol} | " + " | ".join(f"{v:.3f}" for v in row))


def _table(refiner: Refiner, sets, header: str, figures) -> None:
    """One row per train set: its object count and the mean of ``figures(item, inst)`` (a list; None skips it)."""
    print(f"set | objects | {header}")
    for source, items in sets:
        rows, image_id = [], None
        for i in items:
            inst = source[i]
            if inst.image_id != image_id:  # once per image, as evaluate does
                refiner.set_image(inst.image)
                image_id = inst.image_id
            row = figures(i, inst)
            if row is not None:
                rows.append(row)
        mean = np.mean(rows, axis=0)
        print(f"{source.ann_file.parent.parent.name} | {len(rows)} | " + " | ".join(f"{v:.3f}" for v in mean))


def probe_prior(refiner: Refiner, sets, erosion: float) -> None:
    def figures(item: int, inst) -> list[float] | None:
        rng = np.random.default_rng(item)
        step, angle = rng.uniform(0.02, 0.1) * np.sqrt(inst.mask.sum()), rng.uniform(0, 2 * np.pi)
        prior = ndi.shift(inst.mask, (step * np.sin(angle), step * np.cos(angle)), order=0)
        if not prior.any():
            return None
        seed = seed_from_mask(prior, erosion)
        answers = (refiner.predict(seed, prior=prior), refiner.predict(seed, previous=prior), refiner.predict(seed))
        return [iou(inst.mask, prior), *(iou(inst.mask, a) for a in answers)]

    header = "moved mask IoU | model (seed + prior) | model (seed + previous) | model (seed only)"
    _table(refiner, sets, header, figures)


def probe_clicks(refiner: Refiner, sets, rounds: int) -> None:
    def figures(item: int, inst) -> list[float]:
        curve = interact_clicks(model_method(refiner), inst.mask, rounds)[0]
        return [curve[0], curve[min(4, rounds - 1)], curve[-1], noc(curve, 0.85, rounds)]

    _table(refiner, sets, f"IoU@1 | IoU@5 | IoU@{rounds} | NoC@85", figures)


def probe_coarse(refiner: Refiner, sets, erosions: list[float], protocol: str) -> None:
    def figures(item: int, inst) -> list[float]:
        rough = simulate_stroke(inst.mask, protocol, np.random.default_rng([0, inst.ann_id]))
        answers = [refiner.predict(rough), *(refiner.predict(seed_from_mask(rough, e), prior=rough) for e in erosions)]
        return [iou(inst.mask, rough), *(iou(inst.mask, a) for a in answers)]

    cores = " | ".join(f"model (core {e:g} + prior)" for e in erosions)
    _table(refiner, sets, f"rough mask IoU | model (as stroke) | {cores}", figures)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=("window", "prior", "clicks", "coarse"))
    p.add_argument("--model", default="default")
    p.add_argument("--objects", type=int, default=50, help="held-out objects per train set")
    p.add_argument("--scales", default=str(roi.CONTEXT_SCALE))
    p.add_argument("--mins", default=str(roi.CONTEXT_MIN))
    p.add_argument("--rounds", type=int, default=10, help="clicks per object (clicks probe)")
    p.add_argument("--erosion", default=str(EROSION), help="seed erosion (prior; coarse: a comma list)")
    p.add_argument("--protocol", default="coarse", help="the simulated rough mask (coarse probe): coarse, lasso, ...")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    refiner = Refiner(args.model, args.device)
    sets = held_out(args.objects)
    if args.probe == "window":
        probe_window(refiner, sets, [float(v) for v in args.scales.split(",")], [int(v) for v in args.mins.split(",")])
    elif args.probe == "prior":
        probe_prior(refiner, sets, float(args.erosion))
    elif args.probe == "coarse":
        probe_coarse(refiner, sets, [float(e) for e in args.erosion.split(",")], args.protocol)
    else:
        probe_clicks(refiner, sets, args.rounds)


if __name__ == "__main__":
    main()
