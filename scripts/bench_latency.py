"""Per-object latency of ``refine()`` on real coco-mini val objects with simulated scribbles.

    .venv/bin/python scripts/bench_latency.py [--model default|PATH | --random-init tiny16-32] [--n 50]

*cold* is the first call in the process (checkpoint load and first forward included);
*warm* are the following calls with the model cached. ``refine()`` recomputes the
image's intensity range per call; ``Refiner.predict`` (image set once) shows what
the SAM-style object saves. Images are loaded before timing, so disk reads are not counted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.engine import Refiner, refine
from napari_segmentello.models import build_model
from napari_segmentello.strokes import simulate_stroke


def summary(name: str, seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"{name}: median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms (n={ms.size})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", default="default", help="bundled model name or checkpoint path")
    choice.add_argument("--random-init", metavar="ARCH", help="benchmark a random-init model of this architecture")
    parser.add_argument("--n", type=int, default=50, help="number of objects")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = CocoInstances(*dataset_files("coco-mini", "val"))
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(data), size=min(args.n, len(data)), replace=False)
    objects = []
    for i in picks:
        item = data[int(i)]
        objects.append((item.image, simulate_stroke(item.mask, "scribble", rng)))
    sizes = [int(np.sqrt(img.shape[0] * img.shape[1])) for img, _ in objects]
    print(f"{len(objects)} coco-mini val objects, images ~{int(np.median(sizes))} px (geometric side, median)")

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.random_init:
            torch.manual_seed(args.seed)
            model = save_checkpoint(Path(tmp) / f"{args.random_init}-random.pt", build_model(args.random_init))
            print(f"model: random-init {args.random_init} (latency only; masks are meaningless)")
        else:
            print(f"model: {model}")

        start = time.perf_counter()
        refine(*objects[0], model=model, device=args.device)
        print(f"cold (first call, model load included): {(time.perf_counter() - start) * 1000:.0f} ms")

        warm = []
        for image, stroke in objects:
            start = time.perf_counter()
            refine(image, stroke, model=model, device=args.device)
            warm.append(time.perf_counter() - start)
        print(summary("warm refine()", warm))

        refiner, reuse = Refiner(model, args.device), []
        for image, stroke in objects:
            refiner.set_image(image)
            start = time.perf_counter()
            refiner.predict(stroke)
            reuse.append(time.perf_counter() - start)
        print(summary(f"warm Refiner.predict() on {refiner.device}", reuse))


if __name__ == "__main__":
    main()
