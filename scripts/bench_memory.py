"""Peak memory and time of refining one ~200-px stroke on a 10,000×10,000 uint8 image.

Run in a fresh process, so the peak RSS (``ru_maxrss``) is this job's alone::

    .venv/bin/python scripts/bench_memory.py [--model PATH] [--device auto] [--size 10000]

Without ``--model`` a random-init tiny16-32 checkpoint is written to a temporary
folder and used: the figures are about memory and time, not mask quality.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage.draw import line

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.engine import load_model, refine
from napari_segmentello.models import build_model


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**2 if sys.platform == "darwin" else 1024)


def diagonal_stroke(size: int, length: int = 200, width: int = 5) -> np.ndarray:
    """A ``length``-pixel diagonal brush stroke of ``width`` pixels in the middle of a size×size frame."""
    stroke = np.zeros((size, size), bool)
    c, half = size // 2, int(length / 2 / np.sqrt(2))
    rr, cc = line(c - half, c - half, c + half, c + half)
    for d in range(-(width // 2), width // 2 + 1):
        stroke[rr, np.clip(cc + d, 0, size - 1)] = True
    return stroke


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path or bundled name (default: random-init tiny16-32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=10_000, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = save_checkpoint(Path(tmp) / "tiny16-32-random.pt", build_model("tiny16-32"))
        net = load_model(model, args.device)
        device = next(net.parameters()).device
        print(f"model {model} on {device}; peak RSS after imports + model: {peak_rss_mb():.0f} MB")

        image = np.random.default_rng(0).integers(0, 256, (args.size, args.size), dtype=np.uint8)
        stroke = diagonal_stroke(args.size)
        before = peak_rss_mb()
        print(
            f"image {image.shape} uint8 = {image.nbytes / 1e6:.0f} MB, stroke bool = {stroke.nbytes / 1e6:.0f} MB "
            f"({int(stroke.sum())} px); one float32 copy of the image would be {image.size * 4 / 1e6:.0f} MB"
        )
        print(f"peak RSS before refine: {before:.0f} MB")
        for label in ("first", "second"):
            start = time.perf_counter()
            mask = refine(image, stroke, model=model, device=args.device)
            elapsed = time.perf_counter() - start
            print(
                f"{label} refine: {elapsed * 1000:.0f} ms, mask {int(mask.sum())} px, "
                f"peak RSS {peak_rss_mb():.0f} MB (+{peak_rss_mb() - before:.0f} MB over the inputs; "
                f"the bool result alone is {mask.nbytes / 1e6:.0f} MB)"
            )
            del mask


if __name__ == "__main__":
    main()
