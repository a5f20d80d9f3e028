"""``napari-segmentello demo``: the README's main job on the bundled sample.

Headless it refines the sample strokes, prints each object's IoU against the
bundled reference and writes an overlay PNG; with ``--gui`` it opens napari with
the sample loaded and the widget docked (napari is imported only then).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_overlay.png"), help="overlay PNG to write")
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--gui", action="store_true", help="open napari with the sample and the widget instead")


def overlay(image: np.ndarray, labels: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """RGB uint8 picture: refined objects tinted, their outlines in yellow, strokes in red."""
    from skimage.color import gray2rgb, label2rgb
    from skimage.segmentation import find_boundaries

    rgb = gray2rgb(image) if image.ndim == 2 else image[..., :3]
    out = label2rgb(labels, image=rgb, alpha=0.3, bg_label=0, image_alpha=1.0)
    out[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    out[strokes > 0] = (1.0, 0.0, 0.0)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    from napari_segmentello._sample_data import load_sample

    if args.gui:
        return _run_gui()
    from skimage.io import imsave

    from napari_segmentello.engine import refine_labels
    from napari_segmentello.metrics import iou

    image, strokes, reference = load_sample()
    start = time.perf_counter()
    refined = refine_labels(image, strokes, model=args.model, device=args.device)
    elapsed = time.perf_counter() - start
    ids = [int(i) for i in np.unique(strokes) if i]
    for i in ids:
        print(
            f"object {i}: IoU refined {iou(reference == i, refined == i):.3f}"
            f"  (stroke alone {iou(reference == i, strokes == i):.3f})"
        )
    mean = float(np.mean([iou(reference == i, refined == i) for i in ids]))
    print(f"mean IoU {mean:.3f} over {len(ids)} objects in {elapsed * 1000:.0f} ms (model {args.model!r})")
    imsave(args.output, overlay(image, refined, strokes), check_contrast=False)
    print(f"overlay written to {args.output}")
    return 0


def _run_gui() -> int:
    import napari

    from napari_segmentello._sample_data import make_sample_data

    viewer = napari.Viewer()
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget("napari-segmentello", "Stroke refiner")
    napari.run()
    return 0
