"""How much of the object each simulated stroke protocol gives away: IoU of stroke vs ground truth.

Run from the repository root:

    .venv/bin/python scripts/stroke_stats.py                 # coco-mini val + dsb2018-nuclei val (1000 objects)
    .venv/bin/python scripts/stroke_stats.py --cap 0         # every object of both

Objects are the ``CocoInstances`` of each val split (non-crowd, >= 64 px).
Each protocol has its own generator seeded from ``--seed`` and its name, so
its numbers do not depend on which other protocols ran. "in-object" is the
fraction of stroke pixels on the object; "coverage" the fraction of the
object under the stroke.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib

import numpy as np
from tqdm import tqdm

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.strokes import PROTOCOLS


def _masks(name: str, cap: int, seed: int) -> tuple[list[np.ndarray], str]:
    """The val objects' masks (a seeded random subset of ``cap`` when there are more) and a description."""
    ds = CocoInstances(*dataset_files(name, "val"))
    items = ds.items
    note = f"all {len(items)}"
    if 0 < cap < len(items):
        keep = np.sort(np.random.default_rng(seed).choice(len(items), size=cap, replace=False))
        items = [items[i] for i in keep]
        note = f"{cap} of {len(ds.items)} (random, seed {seed})"
    masks = [ds.coco.annToMask(ds.coco.anns[ann_id]).astype(bool) for _, ann_id in tqdm(items, desc=name, leave=False)]
    return masks, note


def _protocol_row(protocol: str, masks: list[np.ndarray], seed: int) -> list[float]:
    rng = np.random.default_rng([seed, zlib.crc32(protocol.encode())])
    ious, inside, cover = [], [], []
    start = time.perf_counter()
    for mask in tqdm(masks, desc=protocol, leave=False):
        stroke = PROTOCOLS[protocol](mask, rng)
        both = float((stroke & mask).sum())
        ious.append(both / float((stroke | mask).sum()))
        inside.append(both / float(stroke.sum()))
        cover.append(both / float(mask.sum()))
    ms = 1000.0 * (time.perf_counter() - start) / len(masks)
    return [np.mean(ious), np.median(ious), np.mean(inside), np.mean(cover), ms]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cap", type=int, default=1000, help="max objects per dataset (0 = all)")
    parser.add_argument("--datasets", nargs="+", default=["coco-mini", "dsb2018-nuclei"])
    args = parser.parse_args(argv)

    print("command: " + " ".join([sys.executable, *sys.argv]))
    print("| dataset (val) | objects | protocol | mean IoU | median IoU | in-object | coverage | ms/stroke |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.datasets:
        masks, note = _masks(name, args.cap, args.seed)
        for protocol in PROTOCOLS:
            iou, med, inside, cover, ms = _protocol_row(protocol, masks, args.seed)
            print(f"| {name} | {note} | {protocol} | {iou:.3f} | {med:.3f} | {inside:.3f} | {cover:.3f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
