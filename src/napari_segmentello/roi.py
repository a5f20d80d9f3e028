"""Region of interest around a stroke: the one crop rule shared by training and inference.

The model never sees the whole image, only a square window centred on the
stroke and enlarged by a context margin, resized to the model's working size.
Training cuts its samples with these same functions (from the *stroke*, never
from the ground-truth box), so what the model learns is what it is asked at
inference. Cost follows the stroke's extent, not the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.transform import downscale_local_mean, resize


@dataclass(frozen=True)
class ROI:
    """A square window ``[y0, y0+size) x [x0, x0+size)`` in image pixels; it may overhang the image."""

    y0: int
    x0: int
    size: int

    def clipped(self, shape: tuple[int, int]) -> tuple[slice, slice, slice, slice]:
        """Slices of the in-bounds part: (image rows, image cols, window rows, window cols)."""
        h, w = shape
        ys, xs = max(self.y0, 0), max(self.x0, 0)
        ye, xe = min(self.y0 + self.size, h), min(self.x0 + self.size, w)
        if ye <= ys or xe <= xs:
            raise ValueError(f"ROI {self} does not overlap an image of shape {shape}")
        return (
            slice(ys, ye),
            slice(xs, xe),
            slice(ys - self.y0, ye - self.y0),
            slice(xs - self.x0, xe - self.x0),
        )

    def inside(self, shape: tuple[int, int]) -> np.ndarray:
        """size×size boolean window: True where it covers the image."""
        out = np.zeros((self.size, self.size), bool)
        _, _, wy, wx = self.clipped(shape)
        out[wy, wx] = True
        return out


def stroke_bbox(stroke: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` (end-exclusive) of the nonzero pixels of a 2D stroke."""
    if stroke.ndim != 2:
        raise ValueError(f"stroke must be 2D, got shape {stroke.shape}")
    rows = np.flatnonzero(stroke.any(axis=1))
    if rows.size == 0:
        raise ValueError("the stroke is empty: paint at least one pixel over the object")
    cols = np.flatnonzero(stroke.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def roi_from_stroke(stroke: np.ndarray, *, margin: float = 0.4, min_size: int = 32) -> ROI:
    """Square window centred on the stroke's box, ``(1 + 2*margin)`` times its longer side.

    The margin gives the network the object's context: a stroke inside an
    object rarely reaches its boundary, so the window must.
    """
    y0, y1, x0, x1 = stroke_bbox(stroke)
    side = max(y1 - y0, x1 - x0)
    size = max(int(min_size), int(math.ceil(side * (1.0 + 2.0 * margin))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return ROI(int(math.floor(cy - size / 2.0)), int(math.floor(cx - size / 2.0)), size)


def crop(array: np.ndarray, roi: ROI, fill: float = 0) -> np.ndarray:
    """The window of ``array`` (H×W or H×W×C), padded with ``fill`` where it overhangs."""
    out = np.full((roi.size, roi.size, *array.shape[2:]), fill, dtype=array.dtype)
    iy, ix, wy, wx = roi.clipped(array.shape[:2])
    out[wy, wx] = np.asarray(array[iy, ix])  # works for dask/zarr too: only the window is read
    return out


def paste(dst: np.ndarray, window: np.ndarray, roi: ROI) -> np.ndarray:
    """Write the in-bounds part of ``window`` (size×size) into ``dst`` in place; returns ``dst``."""
    iy, ix, wy, wx = roi.clipped(dst.shape[:2])
    dst[iy, ix] = window[wy, wx]
    return dst


def _block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Average f×f blocks of a square window more than 4× the target ``size`` (f = side // (2·size)).

    The Gaussian anti-aliasing of :func:`resize` costs O(side² · factor): seconds for a
    4000-px window. Block means do the bulk of the shrinking in one pass, leaving at most
    2-4× to the exact resize. The last ``side % f`` rows/columns are dropped (under half a
    pixel at the working size).
    """
    factor = image.shape[0] // (2 * size)
    if factor < 2:
        return image
    keep = image.shape[0] - image.shape[0] % factor
    factors = (factor, factor, *(1,) * (image.ndim - 2))
    return downscale_local_mean(image[:keep, :keep], factors)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float image (H×W or H×W×C) to size×size, anti-aliased when shrinking."""
    image = _block_mean(image, size)
    out_shape = (size, size, *image.shape[2:])
    shrinking = image.shape[0] > size
    return resize(image, out_shape, order=1, anti_aliasing=shrinking, preserve_range=True).astype(np.float32)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask to size×size by area coverage (>= half covered is kept)."""
    return resize_image(mask.astype(np.float32), size) >= 0.5
