"""Answers as probability windows: one object's probabilities over its ROI, and how windows combine into
one window or one label image (overlaps to the most probable object, so order does not matter)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_segmentello.label_masks import selector
from napari_segmentello.roi import ROI, crop, paste


@dataclass(frozen=True)
class Window:
    """One object's probability map over its ROI (roi.size × roi.size, float32)."""

    roi: ROI
    prob: np.ndarray

    def over(self, rows: slice, cols: slice) -> np.ndarray:
        """This window's probabilities on the image region (rows, cols); 0 where it does not reach."""
        region = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.float32)
        at = ROI(self.roi.y0 - rows.start, self.roi.x0 - cols.start, self.roi.size)
        return paste(region, self.prob, at) if at.overlaps(region.shape) else region


def union(a: Window, b: Window) -> Window:
    """One window holding both: the bounding square of their ROIs, the higher probability where they overlap."""
    y0, x0 = min(a.roi.y0, b.roi.y0), min(a.roi.x0, b.roi.x0)
    size = max(w.roi.y0 + w.roi.size - y0 for w in (a, b))
    size = max(size, *(w.roi.x0 + w.roi.size - x0 for w in (a, b)))
    rows, cols = slice(y0, y0 + size), slice(x0, x0 + size)
    return Window(ROI(y0, x0, size), np.maximum(a.over(rows, cols), b.over(rows, cols)))


def assigned(windows: list[tuple[Any, Window]], shape: tuple[int, int], dtype: Any, threshold: float) -> np.ndarray:
    """A label image of the windows' masks (``prob > threshold``) under their ids (id None: True), ascending.

    Where masks overlap the highest probability wins and ties go to the earlier (lower) id, so the
    result does not depend on processing order.
    """
    out = np.zeros(shape, dtype)
    placed: dict[Any, Window] = {}
    for value, window in windows:
        key = True if value is None else value  # the merged object's label
        rows, cols, wy, wx = window.roi.clipped(shape)
        prob = window.prob[wy, wx]
        claim = prob > threshold
        current = out[rows, cols]
        rival = np.zeros_like(prob)
        for other in np.unique(current[claim & (current != 0)]):
            held = current == other
            rival[held] = placed[other].over(rows, cols)[held]
        current[claim & ((current == 0) | (prob > rival))] = key
        placed[key] = window
    return out


def within_reach(window: Window, labels: np.ndarray, box: tuple[slice, slice], value: Any, reach: float) -> Window:
    """``window`` with its probability zeroed beyond ``reach`` × √area (city-block) of the rough mask
    ``value`` of ``labels`` (whose bounding box is ``box``)."""
    mask = selector(value)(labels[box])
    pixels = max(1, round(reach * math.sqrt(mask.sum())))
    near = ndi.distance_transform_cdt(~np.pad(mask, pixels + 1), metric="taxicab") <= pixels
    top, left = box[0].start - pixels - 1, box[1].start - pixels - 1  # image position of near[0, 0]
    roi = window.roi
    y0, y1 = max(top, roi.y0), min(top + near.shape[0], roi.y0 + roi.size)
    x0, x1 = max(left, roi.x0), min(left + near.shape[1], roi.x0 + roi.size)
    keep = np.zeros((roi.size, roi.size), bool)
    if y1 > y0 and x1 > x0:
        keep[y0 - roi.y0 : y1 - roi.y0, x0 - roi.x0 : x1 - roi.x0] = near[y0 - top : y1 - top, x0 - left : x1 - left]
    return Window(roi, window.prob * keep)


def excluding(window: Window, excluded: Any) -> Window:
    """``window`` with no probability on its object's certain "not this" pixels, wherever they were painted."""
    if excluded is None:
        return window
    return Window(window.roi, np.where(crop(excluded, window.roi) != 0, 0, window.prob).astype(np.float32))
