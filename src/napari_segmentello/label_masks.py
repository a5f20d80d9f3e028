"""Label images as objects: each id with its bounding box, and lazy per-object masks over the full frame.

A labels layer may be large and its strokes sparse, so an object's mask (its own pixels, its "not this",
a left-out stroke part) is a view that builds only the windows cut from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from napari_segmentello.seeds import ROUGH_EROSION, seed_from_mask


def _box(rows: np.ndarray, cols: np.ndarray) -> tuple[slice, slice]:
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


def label_objects(labels: np.ndarray, *, merge: bool) -> list[tuple[Any, tuple[slice, slice]]]:
    """(label id, bounding box) per nonzero id; ``merge`` makes all nonzero pixels one object (id None).

    Strokes are sparse, so the nonzero pixels are grouped once rather than the
    frame scanned per id (and any id value works, unlike ``ndimage.find_objects``).
    """
    flat = np.flatnonzero(labels)
    if flat.size == 0:
        what = "stroke" if merge else "label image"
        raise ValueError(f"the {what} is empty (all zeros): paint at least one pixel over the object")
    rows, cols = np.divmod(flat, labels.shape[1])
    if merge:
        return [(None, _box(rows, cols))]
    values = labels[rows, cols]
    order = np.argsort(values, kind="stable")
    values, rows, cols = values[order], rows[order], cols[order]
    ids, starts = np.unique(values, return_index=True)
    ends = [*starts[1:], values.size]
    return [(i, _box(rows[s:e], cols[s:e])) for i, s, e in zip(ids, starts, ends, strict=True)]


def selector(value: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The test for one object's pixels: ``== value``, or any nonzero for the merged object (None)."""
    return (lambda a: a != 0) if value is None else (lambda a: a == value)


def seed_labels(labels: np.ndarray, regions: dict[Any, tuple[slice, slice]]) -> np.ndarray:
    """Each object's pixels of ``labels`` replaced by their core (``seeds.ROUGH_EROSION``), under its id.

    Each is eroded within its box grown by a pixel, so that the box's edge is background as on the full frame.
    """
    out = np.zeros_like(labels)
    h, w = labels.shape
    for value, (rows, cols) in regions.items():
        box = slice(max(rows.start - 1, 0), min(rows.stop + 1, h)), slice(max(cols.start - 1, 0), min(cols.stop + 1, w))
        region = selector(value)(labels[box])
        out[box][seed_from_mask(region, ROUGH_EROSION)] = labels[box][region][0]
    return out


def either(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The union of two optional masks (None when both are absent)."""
    if a is None or b is None:
        return b if a is None else a
    return (a != 0) | (b != 0)


class Selected:
    """One object's pixels of a label image as a lazy bool H×W mask: only the windows cut from it are compared."""

    dtype = np.dtype(bool)

    def __init__(self, labels: np.ndarray, value: Any) -> None:
        self._labels, self._select = labels, selector(value)
        self.shape = labels.shape

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return self._select(self._labels[key])


class NotThis:
    """One object's "not this" as a lazy bool H×W mask: the other ids' strokes, and the shared negative if any.

    Each label id is its own object, so what the user painted as another object is not this one.
    """

    dtype = np.dtype(bool)

    def __init__(self, labels: np.ndarray, value: Any, negative: np.ndarray | None) -> None:
        self._labels, self._value, self._negative = labels, value, negative
        self.shape = labels.shape

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        block = np.asarray(self._labels[key])
        out = (block != 0) & (block != self._value)
        return out if self._negative is None else out | (np.asarray(self._negative[key]) != 0)


class Placed:
    """A small bool mask placed at (``row``, ``col``) of an H×W frame, lazily: only windows cut from it are built."""

    dtype = np.dtype(bool)

    def __init__(self, mask: np.ndarray, row: int, col: int, shape: tuple[int, int]) -> None:
        self._mask, self._row, self._col, self.shape = mask, row, col, shape

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = (range(*k.indices(n)) for k, n in zip(key, self.shape, strict=True))
        out = np.zeros((len(rows), len(cols)), bool)
        h, w = self._mask.shape
        top, left = self._row - rows.start, self._col - cols.start  # the mask's place in ``out``
        ys, xs = max(top, 0), max(left, 0)
        ye, xe = min(top + h, out.shape[0]), min(left + w, out.shape[1])
        if ye > ys and xe > xs:
            out[ys:ye, xs:xe] = self._mask[ys - top : ye - top, xs - left : xe - left]
        return out
