"""The bundled sample: scikit-image's ``coins`` photo, three project-drawn scribbles, their reference masks.

Deliberately free of napari and Qt imports: the headless CLI demo loads the same
sample, and napari's LayerData tuples are plain tuples. The PNGs are made by
``scripts/make_sample.py``.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
from skimage import data
from skimage.io import imread

_DATA = files("napari_segmentello") / "data"


def _read_labels(name: str) -> np.ndarray:
    with (_DATA / name).open("rb") as fh:
        return np.asarray(imread(fh), dtype=np.uint8)


def load_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image uint8 H×W, strokes uint8 H×W labels 1..3, reference uint8 H×W labels 1..3)``."""
    return data.coins(), _read_labels("coins_strokes.png"), _read_labels("coins_reference.png")


def make_sample_data() -> list[tuple]:
    """napari sample-data contribution: the photo as an Image layer and the strokes as a Labels layer."""
    image, strokes, _ = load_sample()
    return [
        (image, {"name": "coins"}, "image"),
        (strokes, {"name": "coins strokes", "opacity": 0.8}, "labels"),
    ]
