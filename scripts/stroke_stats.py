"""Simulated strokes beside real ones (calibration on acdc-scribbles), and how much of the object each gives away.

Run from the repository root:

    .venv/bin/python scripts/stroke_stats.py                      # calibration table: 300 acdc-scribbles objects
    .venv/bin/python scripts/stroke_stats.py --max-objects 0      # every acdc-scribbles object
    .venv/bin/python scripts/stroke_stats.py --coverage           # also: IoU/coverage on coco-mini + dsb2018-nuclei val

Calibration: every simulator draws one stroke over the same ground-truth
masks whose real strokes (the annotator's ``scribble``) are measured by
``strokes.stroke_measures``. Per object: brush width = stroke area / skeleton
length (skimage skeletonize); length = skeleton length / object extent,
extent = the longer side of the object's bounding box (not sqrt(area));
in-object = fraction of stroke pixels on the object; strokes = 8-connected
components. The background rows compare the slice's
real ``negative_scribble`` with ``background_strokes`` on the same object.

Each protocol has its own generator seeded from ``--seed`` and its name, so
its numbers do not depend on which other protocols ran.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.strokes import PROTOCOLS, background_strokes, stroke_measures

CALIBRATION_SET = "acdc-scribbles"
STATS = ("brush width (px)", "length / extent", "in-object", "strokes")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _subset(n: int, cap: int, seed: int) -> tuple[np.ndarray, str]:
    """Indices of a seeded random subset of ``cap`` of ``n`` items (all when ``cap`` is 0 or more than ``n``)."""
    if 0 < cap < n:
        return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)), f"{cap} of {n} (seed {seed})"
    return np.arange(n), f"all {n}"


def _summary(rows: list[tuple[float, ...]]) -> list[str]:
    """``median [q25, q75]`` of each column."""
    table = np.asarray(rows, float)
    q25, med, q75 = np.percentile(table, [25, 50, 75], axis=0)
    return [f"{m:.2f} [{a:.2f}, {b:.2f}]" for m, a, b in zip(med, q25, q75, strict=True)]


def _simulated(
    draw: Callable[[np.ndarray, np.random.Generator], np.ndarray], masks: list[np.ndarray], rng: np.random.Generator
) -> tuple[list[tuple[float, ...]], float]:
    """Measures of one simulated stroke per mask, and the milliseconds per stroke."""
    start = time.perf_counter()
    strokes = [draw(mask, rng) for mask in masks]
    ms = 1000.0 * (time.perf_counter() - start) / len(masks)
    return [stroke_measures(s, m) for s, m in zip(strokes, masks, strict=True) if s.any()], ms


def calibration_table(max_objects: int, seed: int) -> None:
    """Real acdc-scribbles strokes beside every simulator on the same objects, as a markdown table."""
    ds = CocoInstances(*dataset_files(CALIBRATION_SET, "val"), min_area=10)
    keep, note = _subset(len(ds), max_objects, seed)
    objects = [ds[int(i)] for i in tqdm(keep, desc=CALIBRATION_SET, leave=False)]
    masks = [o.mask for o in objects]
    print(f"\n{CALIBRATION_SET} val, {note} objects; median [IQR] per object\n")
    print("| strokes | " + " | ".join(STATS) + " | ms/stroke |")
    print("|---" * (len(STATS) + 2) + "|")
    real = [stroke_measures(o.scribble, o.mask) for o in objects]
    print("| **real (annotator)** | " + " | ".join(_summary(real)) + " | - |")
    for name, draw in PROTOCOLS.items():
        rows, ms = _simulated(draw, masks, _rng(seed, name))
        print(f"| {name} | " + " | ".join(_summary(rows)) + f" | {ms:.1f} |")
    negatives = [stroke_measures(o.negative_scribble, o.mask) for o in objects if o.negative_scribble.any()]
    print("| **real background (annotator)** | " + " | ".join(_summary(negatives)) + " | - |")
    rows, ms = _simulated(background_strokes, masks, _rng(seed, "background"))
    print("| background | " + " | ".join(_summary(rows)) + f" | {ms:.1f} |")


def coverage_table(datasets: list[str], cap: int, seed: int) -> None:
    """How much of the object each protocol gives away: IoU, in-object fraction and coverage, as markdown."""
    print("\n| dataset (val) | objects | protocol | mean IoU | median IoU | in-object | coverage | ms/stroke |")
    print("|---|---|---|---|---|---|---|---|")
    for name in datasets:
        ds = CocoInstances(*dataset_files(name, "val"))
        keep, note = _subset(len(ds.items), cap, seed)
        anns = [ds.coco.anns[ds.items[int(i)][1]] for i in keep]
        masks = [ds.coco.annToMask(ann).astype(bool) for ann in tqdm(anns, desc=name, leave=False)]
        for protocol, draw in PROTOCOLS.items():
            rng = _rng(seed, protocol)
            start = time.perf_counter()
            strokes = [draw(mask, rng) for mask in masks]
            ms = 1000.0 * (time.perf_counter() - start) / len(masks)
            both = np.array([(s & m).sum() for s, m in zip(strokes, masks, strict=True)], float)
            iou = both / np.array([(s | m).sum() for s, m in zip(strokes, masks, strict=True)], float)
            inside = np.mean(both / np.array([s.sum() for s in strokes], float))
            cover = np.mean(both / np.array([m.sum() for m in masks], float))
            print(
                f"| {name} | {note} | {protocol} | {iou.mean():.3f} | {np.median(iou):.3f} | {inside:.3f} "
                f"| {cover:.3f} | {ms:.1f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-objects", type=int, default=300, help="acdc-scribbles objects to compare (0 = all)")
    parser.add_argument("--coverage", action="store_true", help="also print the IoU/coverage table of --datasets")
    parser.add_argument("--cap", type=int, default=1000, help="max objects per --datasets dataset (0 = all)")
    parser.add_argument("--datasets", nargs="+", default=["coco-mini", "dsb2018-nuclei"])
    args = parser.parse_args(argv)

    print("command: " + " ".join([sys.executable, *sys.argv]))
    calibration_table(args.max_objects, args.seed)
    if args.coverage:
        coverage_table(args.datasets, args.cap, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
