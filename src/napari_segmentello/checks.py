"""Checks of what a caller hands the engine (image, threshold, box): a clear ValueError naming the problem
up front, never a traceback from deep inside numpy or torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segmentello.inputs import Box

_NUMERIC = "biuf"


class WithChannelAxis:
    """A 2D (possibly lazy) array seen as H×W×1; only what is indexed gets read."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self.shape = (*array.shape, 1)
        self.ndim = 3
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(self._array[key])[..., None]


def check_numeric(array: Any, what: str) -> None:
    """``array`` holds numbers or booleans (not strings or objects)."""
    if np.dtype(array.dtype).kind not in _NUMERIC:
        raise ValueError(f"{what} must hold numbers or booleans, got dtype {array.dtype}")


def channels_last(image: Any) -> Any:
    """H×W -> H×W×1 view; H×W×C kept. No copy: numpy, dask and zarr arrays stay lazy."""
    if not all(hasattr(image, a) for a in ("shape", "dtype", "ndim", "__getitem__")):
        image = np.asarray(image)
    check_numeric(image, "image")
    if image.ndim == 2:
        return WithChannelAxis(image)
    if image.ndim == 3 and image.shape[2] > 0:
        return image
    raise ValueError(
        f"image must be 2D: H×W (grayscale) or H×W×C (channels last), got shape {tuple(image.shape)}; "
        "for a volume or a time series pass one plane at a time"
    )


def check_threshold(threshold: float) -> float:
    """The mask threshold as a float in [0, 1)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}") from None
    if not 0.0 <= value < 1.0:  # also refuses NaN
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    return value


def check_box(box: Any, shape: tuple[int, int]) -> Box:
    """``(row0, col0, row1, col1)`` clipped to the image; inverted, empty or outside boxes are a ValueError."""
    try:
        values = np.asarray(box, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"box must be 4 numbers (row0, col0, row1, col1), got {box!r}") from None
    if values.size != 4 or not np.isfinite(values).all():
        raise ValueError(f"box must be 4 finite numbers (row0, col0, row1, col1), got {box!r}")
    r0, c0, r1, c1 = (int(round(v)) for v in values)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"box {box!r} is empty or inverted: need row0 < row1 and col0 < col1 (end-exclusive pixels)")
    h, w = shape
    clipped = (max(r0, 0), max(c0, 0), min(r1, h), min(c1, w))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ValueError(f"box {box!r} lies outside the image of shape {(h, w)}")
    return clipped
