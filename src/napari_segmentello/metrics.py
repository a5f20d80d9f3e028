"""Mask quality metrics on boolean H×W masks, ground truth first.

Region scores (pixel accuracy, IoU, Dice) barely move when a boundary is a
few pixels off on a large object; Boundary IoU and the contour distances
(Hausdorff, HD95) are what show a refiner's precision. See docs/metrics.md
for the definitions and the empty-mask conventions.

Everything outside the union bounding box of the two masks is background in
both, so every metric is computed on that crop only: morphology and distance
transforms then cost what the objects cost, not what the image costs. The
erosions treat pixels outside the crop (and outside the image) as
background, which is exactly what they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

METRIC_KEYS = ("pixel_accuracy", "iou", "dice", "boundary_iou", "hausdorff", "hd95")


@dataclass(frozen=True)
class _Pair:
    """Both masks cropped to their union bounding box, and the full image shape."""

    gt: np.ndarray
    pred: np.ndarray
    shape: tuple[int, int]

    @property
    def diagonal(self) -> float:
        return float(np.hypot(*self.shape))


def _as_mask(mask: np.ndarray, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be a 2D (H×W) mask, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        return mask != 0
    raise ValueError(f"{what} must be a boolean (or integer 0/1) mask, got dtype {mask.dtype}; threshold it first")


def _pair(gt: np.ndarray, pred: np.ndarray) -> _Pair:
    gt, pred = _as_mask(gt, "gt"), _as_mask(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} and pred shape {pred.shape} differ")
    union = gt | pred
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        box = (slice(0, 0), slice(0, 0))
    else:
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return _Pair(gt[box], pred[box], gt.shape)


def boundary_width(shape: tuple[int, int], dilation_ratio: float = 0.02, dilation_px: int | None = None) -> int:
    """Band width d in pixels: ``dilation_px`` if given, else ``round(dilation_ratio × diagonal)``, at least 1."""
    if dilation_px is not None:
        if int(dilation_px) != dilation_px or dilation_px < 1:
            raise ValueError(f"dilation_px must be a positive integer, got {dilation_px!r}")
        return int(dilation_px)
    if dilation_ratio <= 0:
        raise ValueError(f"dilation_ratio must be positive, got {dilation_ratio!r}")
    return max(1, int(round(dilation_ratio * float(np.hypot(*shape)))))


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Mask pixels within ``width`` pixels (chessboard distance) of the background, image border included.

    That is the mask minus its erosion by a (2·width+1)² square, the band
    ``G_d ∩ G`` of Cheng et al. 2021.
    """
    eroded = ndimage.minimum_filter(mask.view(np.uint8), size=2 * width + 1, mode="constant", cval=0)
    return mask & (eroded == 0)


def contour(mask: np.ndarray) -> np.ndarray:
    """The mask's own boundary pixels: those with a 4-neighbour in the background (or off the image)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _pixel_accuracy(p: _Pair) -> float:
    return 1.0 - np.count_nonzero(p.gt ^ p.pred) / (p.shape[0] * p.shape[1])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _dice(p: _Pair) -> float:
    total = np.count_nonzero(p.gt) + np.count_nonzero(p.pred)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(p.gt & p.pred) / total


def _boundary_iou(p: _Pair, width: int) -> float:
    return _iou(boundary_band(p.gt, width), boundary_band(p.pred, width))


def _contour_distances(p: _Pair) -> np.ndarray | None:
    """Distances from each contour pixel of either mask to the other's contour; None if a mask is empty."""
    if not (p.gt.any() and p.pred.any()):
        return None
    cg, cp = contour(p.gt), contour(p.pred)
    to_pred = ndimage.distance_transform_edt(~cp)[cg]
    to_gt = ndimage.distance_transform_edt(~cg)[cp]
    return np.concatenate([to_pred, to_gt])


def _hausdorff(p: _Pair, dists: np.ndarray | None) -> float:
    if dists is None:
        return 0.0 if not (p.gt.any() or p.pred.any()) else p.diagonal
    return float(dists.max())


def _hd95(p: _Pair, dists: np.ndarray | None) -> float:
    if dists is None:
        return _hausdorff(p, dists)
    return float(np.percentile(dists, 95))


def pixel_accuracy(gt: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of all image pixels on which the masks agree."""
    return _pixel_accuracy(_pair(gt, pred))


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union; 1.0 when both masks are empty (nothing to find, nothing found)."""
    p = _pair(gt, pred)
    return _iou(p.gt, p.pred)


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice = 2|G∩P| / (|G|+|P|); 1.0 when both masks are empty."""
    return _dice(_pair(gt, pred))


def boundary_iou(
    gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02, dilation_px: int | None = None
) -> float:
    """Boundary IoU (Cheng et al. 2021): IoU of the inner boundary bands of both masks.

    The band is each mask minus its erosion by d pixels, d from
    :func:`boundary_width` (``dilation_ratio`` of the image diagonal, or a
    fixed ``dilation_px``). 1.0 when both masks are empty, 0.0 when only one is.
    """
    p = _pair(gt, pred)
    return _boundary_iou(p, boundary_width(p.shape, dilation_ratio, dilation_px))


def hausdorff(gt: np.ndarray, pred: np.ndarray) -> float:
    """Symmetric Hausdorff distance (pixels) between the two masks' contours.

    0.0 when both are empty; the image diagonal when only one is: the
    largest distance two pixels of the image can have, so a missed or
    hallucinated object gets the worst finite score and averages stay finite.
    """
    p = _pair(gt, pred)
    return _hausdorff(p, _contour_distances(p))


def hd95(gt: np.ndarray, pred: np.ndarray) -> float:
    """95th percentile of all contour-to-other-contour distances, both directions pooled.

    Like :func:`hausdorff` but robust to a few stray pixels; same empty-mask
    conventions. Never larger than the Hausdorff distance.
    """
    p = _pair(gt, pred)
    return _hd95(p, _contour_distances(p))


def mask_metrics(gt: np.ndarray, pred: np.ndarray, *, boundary_px: tuple[int, ...] = ()) -> dict[str, float]:
    """All metrics of :data:`METRIC_KEYS` at once (one crop, one set of distances).

    Each width ``k`` in ``boundary_px`` adds ``"boundary_iou_{k}px"``, Boundary
    IoU with a fixed k-pixel band (the thin-band variant that matches the
    seed study's numbers, see docs/metrics.md).
    """
    p = _pair(gt, pred)
    dists = _contour_distances(p)
    out = {
        "pixel_accuracy": _pixel_accuracy(p),
        "iou": _iou(p.gt, p.pred),
        "dice": _dice(p),
        "boundary_iou": _boundary_iou(p, boundary_width(p.shape)),
        "hausdorff": _hausdorff(p, dists),
        "hd95": _hd95(p, dists),
    }
    for k in boundary_px:
        out[f"boundary_iou_{k}px"] = _boundary_iou(p, boundary_width(p.shape, dilation_px=k))
    return {key: float(v) for key, v in out.items()}
