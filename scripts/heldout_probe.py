"""Probe a model on held-out *train* images (the early-stopping images, never val): design checks, not results.

    python scripts/heldout_probe.py window --model default --objects 50 --scales 0.5,0.75,1,1.5 --mins 64
    python scripts/heldout_probe.py prior --model default --objects 30
    python scripts/heldout_probe.py clicks --model default --objects 20 --rounds 10
    python scripts/heldout_probe.py corrections --model default --objects 20 --rounds 10
    python scripts/heldout_probe.py coarse --model default --objects 30 --protocol lasso --erosion 0.15,0.3 \
        --rough-rounds 1,2,3,4
    python scripts/heldout_probe.py video --model default --objects 10 --frames 10 --carry 0,0.3,0.35,0.4,0.45
    python scripts/heldout_probe.py neighbours --model default --objects 20
    python scripts/heldout_probe.py clicks --model runs/x/best.pt --against default --objects 40 --rounds 10

``window``: mean IoU of one human-like scribble and of one click per object, for each
start-window rule of pass 1 (``roi.CONTEXT_SCALE`` × ``roi.CONTEXT_MIN``), per train set.
``prior``: the true mask moved by 2-10 % of its size in a random direction (the neighbour's
answer), its eroded core as the stroke, the moved mask as ``prior`` (as propagation passes it)
or as ``previous`` (as a correction round does): IoU of the moved mask itself, of the model's
answers, of the model given the seed alone, and of the answer to the true mask itself as the prior.
``clicks``: the standard click protocol (``training.noc``) for ``--rounds`` clicks: IoU after 1, 5
and the last click, and NoC@85.
``corrections``: the stroke protocol of ``training.noc`` (a first ``scribble``, then corrective clicks from
``strokes.correction_strokes`` on the model's own errors) for ``--rounds`` rounds: IoU after 1, 5 and the
last round, and NoC@85.
``coarse``: a rough-mask protocol (``strokes.simulate_stroke(mask, --protocol)``, default coarse): IoU of the rough
mask itself, of the model given it as the stroke, and given its core (eroded by each of ``--erosion``,
a comma list) as the stroke and the mask as ``prior``, and the mask alone as the prior (as "Rough masks"
gives it: the core by ``seeds.ROUGH_EROSION``) refined in each of ``--rough-rounds`` rounds
(``engine.ROUGH_ROUNDS``) and clipped at each ``--rough-reach`` (``engine.ROUGH_REACH``; 100: not clipped).
``video``: synthetic clips (:func:`clip`: the held-out image and mask warped frame by frame by a
drifting similarity and a growing smooth deformation; objects of at least 32² px) propagated
from frame 0's true mask and from a human-like scribble on it, for each ``--carry``: J-mean over
frames 1.. and J of the last frame. Camera-like motion only: tests drift, not occlusion.
``neighbours``: one human-like scribble per object, refined alone and with a human-like scribble on each
other object of its image as "not this" (as ``Refiner.predict_labels`` gives an object-aware model the
other ids' strokes); GrabCut and the random walker given the same two prompts.
The held-out images are those of ``training/configs/default.toml`` (its seed and val_fraction).
The per-object tables (prior, clicks, corrections, coarse, neighbours) end with the mean of the sets' rows
(the figure README quotes) and its standard error over the objects: at 20 objects per set the click
protocol's NoC@85 has about ±0.34, so a smaller held-out gain needs more objects before it counts.
``--against M`` (per-object probes) prints paired differences instead, ``--model`` minus ``M`` object by
object, whose standard error is several times smaller: how two checkpoints or two rules are compared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from napari_segmentello import engine, roi
from napari_segmentello.data import CocoInstances, Instance
from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.propagate import propagate
from napari_segmentello.samples import NEIGHBOUR_MIN_PIXELS
from napari_segmentello.seeds import EROSION, seed_from_mask
from napari_segmentello.strokes import human_scribble_stroke, simulate_stroke
from training.config import load_config
from training.dataset import open_sources, split_items
from training.baselines import grabcut, random_walker
from training.evaluate import evaluate
from training.noc import interact, interact_clicks, model_click_method, model_method, noc

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "default.toml"


def _pixels(source: CocoInstances, item: int) -> int:
    """The decoded mask's pixel count of item ``item``."""
    return int(mask_utils.area(source.coco.annToRLE(source.coco.anns[source.items[item][1]])))


def held_out(objects: int, min_pixels: int = 0) -> list[tuple[CocoInstances, list[int]]]:
    """Each train set with a seeded sample of its held-out objects (of at least ``min_pixels``)."""
    cfg = load_config(CONFIG)
    sources = open_sources(cfg)
    _, held = split_items(sources, cfg.val_fraction, cfg.seed)
    out = []
    for s, source in enumerate(sources):
        items = [i for t, i in held if t == s and (min_pixels == 0 or _pixels(source, i) >= min_pixels)]
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


def _table(refiner: Refiner, sets, header: str, figures, against: Refiner | None = None) -> None:
    """One row per train set: its object count and the mean of ``figures(refiner, source, item, inst)``; then
    the mean of the sets' rows (the figure README quotes) and its standard error, so a difference can be judged.

    ``figures`` returns a list of figures, or None to skip the object. With ``against`` each row is the
    paired difference, ``refiner``'s figures minus ``against``'s on the same object: its standard error is
    far smaller than that of two unpaired tables, so a small gain can be told from noise.
    """
    if against is not None:
        print("paired: each figure is the model's minus the --against model's, on the same objects")
    print(f"set | objects | {header}")
    per_set = []
    for source, items in sets:
        rows, image_id = [], None
        for i in items:
            inst = source[i]
            if inst.image_id != image_id:  # once per image, as evaluate does
                for r in (refiner,) if against is None else (refiner, against):
                    r.set_image(inst.image)
                image_id = inst.image_id
            row = figures(refiner, source, i, inst)
            if row is not None and against is not None:
                base = figures(against, source, i, inst)
                row = None if base is None else np.subtract(row, base).tolist()
            if row is not None:
                rows.append(row)
        per_set.append(np.array(rows, float))
        mean = per_set[-1].mean(axis=0)
        print(f"{source.ann_file.parent.parent.name} | {len(rows)} | " + " | ".join(f"{v:.3f}" for v in mean))
    mean, error = set_mean(per_set)
    print(f"mean of sets | {sum(map(len, per_set))} | " + " | ".join(f"{v:.3f}" for v in mean))
    print("± s.e. | | " + " | ".join(f"{v:.3f}" for v in error))


def set_mean(per_set: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the sets' mean rows (objects × figures each) and its standard error over the objects."""
    means = np.array([rows.mean(axis=0) for rows in per_set])
    spread = np.array(
        [rows.var(axis=0, ddof=1) / len(rows) if len(rows) > 1 else np.zeros(rows.shape[1]) for rows in per_set]
    )
    return means.mean(axis=0), np.sqrt(spread.sum(axis=0)) / len(per_set)


def probe_prior(refiner: Refiner, sets, erosion: float, against: Refiner | None = None) -> None:
    def figures(refiner: Refiner, source: CocoInstances, item: int, inst) -> list[float] | None:
        rng = np.random.default_rng(item)
        step, angle = rng.uniform(0.02, 0.1) * np.sqrt(inst.mask.sum()), rng.uniform(0, 2 * np.pi)
        prior = ndi.shift(inst.mask, (step * np.sin(angle), step * np.cos(angle)), order=0)
        if not prior.any():
            return None
        seed = seed_from_mask(prior, erosion)
        answers = (refiner.predict(seed, prior=prior), refiner.predict(seed, previous=prior), refiner.predict(seed))
        kept = refiner.predict(seed_from_mask(inst.mask, erosion), prior=inst.mask)  # a perfect prior: keep it
        return [iou(inst.mask, prior), *(iou(inst.mask, a) for a in answers), iou(inst.mask, kept)]

    header = "moved mask IoU | model (seed + prior) | model (seed + previous) | model (seed only) | true mask as prior"
    _table(refiner, sets, header, figures, against)


def probe_clicks(refiner: Refiner, sets, rounds: int, against: Refiner | None = None) -> None:
    def figures(refiner: Refiner, source: CocoInstances, item: int, inst) -> list[float]:
        curve = interact_clicks(model_click_method(refiner), inst.mask, rounds)[0]
        return [curve[0], curve[min(4, rounds - 1)], curve[-1], noc(curve, 0.85, rounds)]

    _table(refiner, sets, f"IoU@1 | IoU@{min(5, rounds)} | IoU@{rounds} | NoC@85", figures, against)


def probe_corrections(refiner: Refiner, sets, rounds: int, against: Refiner | None = None) -> None:
    def figures(refiner: Refiner, source: CocoInstances, item: int, inst) -> list[float]:
        first = simulate_stroke(inst.mask, "scribble", np.random.default_rng([0, inst.ann_id]))
        rng = np.random.default_rng([0, inst.ann_id, 1])
        curve = interact(model_method(refiner), inst.mask, first, rounds, rng)
        return [curve[0], curve[min(4, rounds - 1)], curve[-1], noc(curve, 0.85, rounds)]

    _table(refiner, sets, f"IoU@1 | IoU@{min(5, rounds)} | IoU@{rounds} | NoC@85", figures, against)


def probe_coarse(
    refiner: Refiner,
    sets,
    erosions: list[float],
    protocol: str,
    rounds: list[int],
    reaches: list[float],
    against: Refiner | None = None,
) -> None:
    def figures(refiner: Refiner, source: CocoInstances, item: int, inst) -> list[float]:
        rough = simulate_stroke(inst.mask, protocol, np.random.default_rng([0, inst.ann_id]))
        answers = [refiner.predict(rough), *(refiner.predict(seed_from_mask(rough, e), prior=rough) for e in erosions)]
        for n, reach in settings:
            engine.ROUGH_ROUNDS, engine.ROUGH_REACH = n, reach  # read by the engine on every rough-mask prediction
            answers.append(refiner.predict(prior=rough))
        return [iou(inst.mask, rough), *(iou(inst.mask, a) for a in answers)]

    settings = [(n, reach) for n in rounds for reach in reaches]
    cores = [f"model (core {e:g} + prior)" for e in erosions]
    cores += [f"rough mask, {n} round(s), reach {reach:g}" for n, reach in settings]
    _table(refiner, sets, f"rough mask IoU | model (as stroke) | {' | '.join(cores)}", figures, against)


def neighbour_strokes(source: CocoInstances, inst: Instance) -> np.ndarray | None:
    """A human-like scribble on each other object of ``inst``'s image (16 px or more), seeded by its annotation id."""
    out = np.zeros_like(inst.mask)
    for ann_id, mask in source.neighbours(inst).items():
        if mask.sum() >= NEIGHBOUR_MIN_PIXELS:
            out |= human_scribble_stroke(mask, np.random.default_rng([0, ann_id]))
    return out if out.any() else None


def probe_neighbours(refiner: Refiner, sets, against: Refiner | None = None) -> None:
    def figures(refiner: Refiner, source: CocoInstances, item: int, inst) -> list[float]:
        stroke = human_scribble_stroke(inst.mask, np.random.default_rng([0, inst.ann_id]))
        others = neighbour_strokes(source, inst)
        others = None if others is None else others & ~stroke
        row = []
        for negative in (None, others):
            row += [
                iou(inst.mask, refiner.predict(stroke, negative=negative)),
                iou(inst.mask, grabcut(inst.image, stroke, negative=negative)),
                iou(inst.mask, random_walker(inst.image, stroke, negative=negative)),
            ]
        return row

    alone = "model | GrabCut | random walker"
    _table(refiner, sets, f"{alone} (object alone) | {alone} (others' scribbles as not this)", figures, against)


def clip(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, frames: int, deform: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """(frames, masks): ``image`` warped about the object by a per-frame shift (2-15 % of its size), turn and
    zoom, plus a smooth random deformation growing with time (``deform`` × its size per frame)."""
    h, w = mask.shape
    cy, cx = ndi.center_of_mass(mask)
    size = np.sqrt(mask.sum())
    speed, heading = rng.uniform(0.02, 0.15) * size, rng.uniform(0, 2 * np.pi)
    turn, zoom = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
    field = np.stack([ndi.gaussian_filter(rng.standard_normal((h, w)), size / 3) for _ in range(2)])
    field *= deform * size / (np.abs(field).max() + 1e-9)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    images, masks = [], []
    for t in range(frames):
        # inverse map: where each output pixel comes from in frame 0
        scale, angle = np.exp(-zoom * t), -turn * t
        dy, dx = yy - cy - t * speed * np.sin(heading), xx - cx - t * speed * np.cos(heading)
        sy = cy + scale * (np.cos(angle) * dy + np.sin(angle) * dx) + t * field[0]
        sx = cx + scale * (-np.sin(angle) * dy + np.cos(angle) * dx) + t * field[1]
        channels = [
            ndi.map_coordinates(image[..., c].astype(np.float32), (sy, sx), order=1, mode="reflect") for c in range(3)
        ]
        images.append(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))
        masks.append(ndi.map_coordinates(mask.astype(np.float32), (sy, sx), order=1) > 0.5)
    return np.stack(images), np.stack(masks)


def probe_video(refiner: Refiner, sets, frames: int, deform: float, carries: list[float], adapt: float = 0) -> None:
    heads = [f"{start}-start carry {c:g} J | last" for start in ("true", "stroke") for c in carries]
    if adapt:
        print(f"each clip's model adapted to its first frame for {adapt:g} s (propagate(adapt=...))")
    print(f"set | clips | {' | '.join(heads)}")
    for source, items in sets:
        rows = []
        for i in items:
            inst = source[i]
            images, masks = clip(inst.image, inst.mask, np.random.default_rng(i), frames, deform)
            stroke = human_scribble_stroke(masks[0], np.random.default_rng([1, i]))
            row = []
            for prompt, refine_start in ((masks[0], False), (stroke, True)):
                for carry in carries:
                    pred = propagate(
                        images, prompt, 0, refiner=refiner, carry=carry, refine_start=refine_start, adapt=adapt
                    )
                    row += [
                        np.mean([iou(g, m) for g, m in zip(masks[1:], pred[1:], strict=True)]),
                        iou(masks[-1], pred[-1]),
                    ]
            rows.append(row)
        mean = np.mean(rows, axis=0)
        print(f"{source.ann_file.parent.parent.name} | {len(rows)} | " + " | ".join(f"{v:.3f}" for v in mean))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=("window", "prior", "clicks", "corrections", "coarse", "video", "neighbours"))
    p.add_argument("--model", default="default")
    p.add_argument("--objects", type=int, default=50, help="held-out objects per train set")
    p.add_argument("--scales", default=str(roi.CONTEXT_SCALE))
    p.add_argument("--mins", default=str(roi.CONTEXT_MIN))
    p.add_argument("--rounds", type=int, default=10, help="clicks per object (clicks probe)")
    p.add_argument("--erosion", default=str(EROSION), help="seed erosion (prior; coarse: a comma list)")
    p.add_argument("--protocol", default="coarse", help="the simulated rough mask (coarse probe): coarse, lasso, ...")
    p.add_argument("--rough-rounds", default="1,2", help="engine.ROUGH_ROUNDS values, a comma list (coarse)")
    p.add_argument("--rough-reach", default="100,0.2", help="engine.ROUGH_REACH values, a comma list (coarse)")
    p.add_argument("--frames", type=int, default=10, help="frames per synthetic clip (video probe)")
    p.add_argument("--deform", type=float, default=0.02, help="deformation per frame, × object size (video)")
    p.add_argument("--carry", default="0,0.35", help="carried-mask weights, a comma list (video probe)")
    p.add_argument("--adapt", type=float, default=0.0, help="seconds of adaptation to the first frame (video)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--against", help="a second model: paired differences, --model minus it (per-object probes)")
    args = p.parse_args()
    refiner = Refiner(args.model, args.device)
    against = Refiner(args.against, args.device) if args.against else None
    if against is not None and args.probe in ("window", "video"):
        p.error(f"--against pairs the per-object probes (all but window and video), not {args.probe}")
    sets = held_out(args.objects, min_pixels=32**2 if args.probe == "video" else 0)
    if args.probe == "window":
        probe_window(refiner, sets, [float(v) for v in args.scales.split(",")], [int(v) for v in args.mins.split(",")])
    elif args.probe == "prior":
        probe_prior(refiner, sets, float(args.erosion), against)
    elif args.probe == "video":
        carries = [float(c) for c in args.carry.split(",")]
        probe_video(refiner, sets, args.frames, args.deform, carries, args.adapt)
    elif args.probe == "coarse":
        erosions, rounds = [float(e) for e in args.erosion.split(",")], [int(n) for n in args.rough_rounds.split(",")]
        reaches = [float(r) for r in args.rough_reach.split(",")]
        probe_coarse(refiner, sets, erosions, args.protocol, rounds, reaches, against)
    elif args.probe == "neighbours":
        probe_neighbours(refiner, sets, against)
    elif args.probe == "corrections":
        probe_corrections(refiner, sets, args.rounds, against)
    else:
        probe_clicks(refiner, sets, args.rounds, against)


if __name__ == "__main__":
    main()
