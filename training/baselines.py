"""Classical baselines, run on the very window the model sees (the stroke's ROI), for a fair comparison.

Each takes a full-frame image (H×W or H×W×C, any dtype) and stroke and returns
a full-frame boolean mask; only the in-image part of the ROI
(``stroke_window``: the engine's rule, ``roi_from_stroke(stroke, margin=...)``) is processed, at
native resolution, and nothing outside it can be foreground.

- :func:`identity`: the stroke itself (what you get without refinement)
- :func:`grabcut`: OpenCV GrabCut, 5 iterations, initialised from the stroke (and negative strokes)
- :func:`grabcut_rough`: GrabCut from a rough mask (probable foreground) and its core (sure foreground)
- :func:`random_walker`: scikit-image's random walker between stroke and far-background (and negative) seeds
- :func:`grabcut_box` / :func:`box_mask`: GrabCut's rectangle mode from a box, and the box alone

The stroke baselines also take ``negative=`` (the user's "not this" strokes) as
sure background, so recorded human strokes and click sessions can be given to
them exactly as to the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import random_walker as skimage_random_walker
from skimage.transform import resize

from napari_segmentello.inputs import intensity_range, to_model_image
from napari_segmentello.roi import roi_from_stroke, stroke_bbox
from napari_segmentello.seeds import ROUGH_EROSION, seed_from_mask

GRABCUT_SEED = 0  # OpenCV's random state at each GrabCut call: an answer depends on its inputs alone


def stroke_window(
    image: np.ndarray, stroke: np.ndarray, margin: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """(image region of the ROI, its RGB in [0, 1] scaled like the model's input, the stroke there)."""
    if margin <= 0:
        raise ValueError(f"the baselines need a background band around the stroke: margin must be > 0, got {margin}")
    image = np.asarray(image)
    image = image[..., None] if image.ndim == 2 else image
    stroke = np.asarray(stroke) != 0
    if image.shape[:2] != stroke.shape:
        raise ValueError(f"image of shape {image.shape} and stroke of shape {stroke.shape} do not line up")
    rows, cols, _, _ = roi_from_stroke(stroke, margin=margin).clipped(stroke.shape)
    lo, hi = intensity_range(image)
    rgb = to_model_image(image[rows, cols], lo, hi, 3)
    return (rows, cols), rgb, stroke[rows, cols]


def _full_frame(shape: tuple[int, int], region: tuple[slice, slice], window_mask: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[region] = window_mask
    return out


def identity(
    image: np.ndarray, stroke: np.ndarray, *, negative: np.ndarray | None = None, margin: float = 0.4
) -> np.ndarray:
    """The stroke as the mask (the other arguments unused; same signature as the others)."""
    return np.asarray(stroke) != 0


def _negative_window(negative: np.ndarray | None, region: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
    """The negative strokes inside the window (none: all False); outside it they are outside the model's view too."""
    if negative is None:
        return np.zeros(shape, bool)
    negative = np.asarray(negative) != 0
    return negative[region]


def _run_grabcut(
    rgb: np.ndarray, labels: np.ndarray, rect: tuple[int, int, int, int] | None, iterations: int
) -> np.ndarray:
    """OpenCV GrabCut on a [0, 1] RGB window: with ``rect`` (x, y, w, h) from a rectangle, else from ``labels``.

    GrabCut starts its colour models by k-means from OpenCV's global random state, so without a seed of
    its own each call's answer would depend on the calls made before it (another subset, order or model).
    """
    cv2.setRNGSeed(GRABCUT_SEED)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    img8 = np.ascontiguousarray(np.round(rgb * 255).astype(np.uint8))
    mode = cv2.GC_INIT_WITH_MASK if rect is None else cv2.GC_INIT_WITH_RECT
    cv2.grabCut(img8, labels, rect, bgd, fgd, iterations, mode)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def grabcut(
    image: np.ndarray,
    stroke: np.ndarray,
    *,
    negative: np.ndarray | None = None,
    margin: float = 0.4,
    iterations: int = 5,
) -> np.ndarray:
    """GrabCut (``cv2.GC_INIT_WITH_MASK``) on the stroke's ROI.

    Initial labels, our choice: the stroke is sure foreground (``GC_FGD``),
    ``negative`` strokes sure background (``GC_BGD``, winning where they overlap:
    the later correction), the rest of the ROI probable background
    (``GC_PR_BGD``), so GrabCut grows the object where the colour models say so.
    Of the variants we tried on 60 coco-mini *train* objects (also: stroke box or
    a band around the stroke as ``GC_PR_FGD``; the ROI as a GrabCut rectangle with
    a sure-background rim) this one scored the best IoU for both study and
    scribble strokes.
    """
    region, rgb, local = stroke_window(image, stroke, margin)
    labels = np.full(local.shape, cv2.GC_PR_BGD, np.uint8)
    labels[local] = cv2.GC_FGD
    labels[_negative_window(negative, region, local.shape)] = cv2.GC_BGD
    if not (labels == cv2.GC_PR_BGD).any():  # nothing left to decide
        return _full_frame(np.shape(stroke), region, labels == cv2.GC_FGD)
    return _full_frame(np.shape(stroke), region, _run_grabcut(rgb, labels, None, iterations))


def grabcut_rough(
    image: np.ndarray,
    rough: np.ndarray,
    *,
    negative: np.ndarray | None = None,
    margin: float = 0.4,
    iterations: int = 5,
) -> np.ndarray:
    """GrabCut given a rough mask as the model is given it: the mask is probable foreground (``GC_PR_FGD``).

    Its core (:func:`seeds.seed_from_mask`, the model's stroke) is sure foreground; outside
    the mask, and ``negative`` strokes, sure background: GrabCut's use of an outline, as its
    rectangle mode is of a box. Of the outside labels tried on 20 held-out *train* objects of
    each set (those of scripts/heldout_probe.py), probable background scored mean IoU 0.52
    (coarse) / 0.30 (lasso), a probable band of 0.15 × the radius then sure background 0.75 /
    0.63, sure background 0.71 / 0.67: the simplest of the two best.
    """
    region, rgb, local = stroke_window(image, rough, margin)
    labels = np.full(local.shape, cv2.GC_BGD, np.uint8)
    labels[local] = cv2.GC_PR_FGD
    labels[seed_from_mask(local, ROUGH_EROSION)] = cv2.GC_FGD
    labels[_negative_window(negative, region, local.shape)] = cv2.GC_BGD
    if not (labels == cv2.GC_BGD).any():  # the mask fills the window: no background to learn from
        return _full_frame(np.shape(rough), region, labels != cv2.GC_BGD)
    return _full_frame(np.shape(rough), region, _run_grabcut(rgb, labels, None, iterations))


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The filled rectangle of an end-exclusive ``(row0, col0, row1, col1)`` box, clipped to ``shape``."""
    row0, col0, row1, col1 = (int(v) for v in box)
    if row1 <= row0 or col1 <= col0:
        raise ValueError(f"box (row0, col0, row1, col1) = {box} is empty or inverted")
    out = np.zeros(shape, bool)
    out[max(row0, 0) : row1, max(col0, 0) : col1] = True
    if not out.any():
        raise ValueError(f"box {box} lies outside an image of shape {shape}")
    return out


def grabcut_box(
    image: np.ndarray, box: tuple[int, int, int, int], *, margin: float = 0.4, iterations: int = 5
) -> np.ndarray:
    """GrabCut in its native rectangle mode (``cv2.GC_INIT_WITH_RECT``), on the box's ROI (the model's window rule).

    Outside the rectangle is sure background, inside is GrabCut's to decide; a
    box touching the window's edge leaves no background, so the whole box is the answer.
    """
    rect = box_mask(np.shape(image)[:2], box)
    region, rgb, local = stroke_window(image, rect, margin)
    if local.all():
        return _full_frame(rect.shape, region, local)
    y0, y1, x0, x1 = stroke_bbox(local)
    labels = np.zeros(local.shape, np.uint8)
    fg = _run_grabcut(rgb, labels, (x0, y0, x1 - x0, y1 - y0), iterations)
    return _full_frame(rect.shape, region, fg)


def random_walker(
    image: np.ndarray,
    stroke: np.ndarray,
    *,
    negative: np.ndarray | None = None,
    margin: float = 0.4,
    beta: float = 130.0,
    max_side: int = 128,
) -> np.ndarray:
    """scikit-image's random walker on the stroke's ROI.

    Seeds: the stroke is label 1; pixels farther from the stroke than the ROI's
    context margin (``margin`` × the stroke's longer side, at most half the
    largest distance in the window) are label 2; the pixels in between are
    left for the walker to decide; ``negative`` strokes in the window are label 2
    too (where they overlap the stroke, the later correction wins). Windows larger than ``max_side`` (default:
    the models' working size) are solved at that size and the result resized
    back: the solve grows faster than the pixel count (40 coco-mini train
    objects, 2 busy cores: 1.9–2.9 s per object at full size, 0.05–0.07 s at
    128 px, for a mean IoU of 0.619 and 0.623).
    """
    region, rgb, local = stroke_window(image, stroke, margin)
    neg = _negative_window(negative, region, local.shape)
    shape = local.shape
    scale = min(1.0, max_side / max(shape))
    if scale < 1.0:
        small = (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))
        rgb = resize(rgb, small, order=1, anti_aliasing=True)
        local = resize(local.astype(np.float32), small, order=1, anti_aliasing=False) > 0  # thin strokes survive
        neg = resize(neg.astype(np.float32), small, order=1, anti_aliasing=False) > 0
    y0, y1, x0, x1 = stroke_bbox(local)
    dist = ndimage.distance_transform_edt(~local)
    if dist.max() == 0:  # the stroke covers the whole window
        return _full_frame(np.shape(stroke), region, resize(local, shape, order=0))
    radius = min(margin * max(y1 - y0, x1 - x0), 0.5 * float(dist.max()))
    seeds = np.where(neg, 2, np.where(local, 1, np.where(dist > radius, 2, 0)))
    if not (seeds == 0).any():  # nothing left to decide (a tiny window)
        return _full_frame(np.shape(stroke), region, resize(local, shape, order=0))
    with warnings.catch_warnings():  # the CG solver's "probability range" note: tolerance noise, every call
        warnings.filterwarnings("ignore", "The probability range is outside", UserWarning)
        fg = skimage_random_walker(rgb, seeds, beta=beta, mode="cg_j", channel_axis=-1) == 1
    if scale < 1.0:
        fg = resize(fg.astype(np.float32), shape, order=1) >= 0.5
    return _full_frame(np.shape(stroke), region, fg)


def box_alone(image: np.ndarray, box: tuple[int, int, int, int], *, margin: float = 0.4) -> np.ndarray:
    """The filled box as the mask: what a box prompt gives without refinement (the box analogue of ``identity``)."""
    return box_mask(np.shape(image)[:2], box)


BASELINES: dict[str, Callable[..., np.ndarray]] = {  # (image, stroke, *, negative, margin) -> mask
    "identity": identity,
    "grabcut": grabcut,
    "randomwalker": random_walker,
}
ROUGH_BASELINES: dict[str, Callable[..., np.ndarray]] = {  # (image, rough mask, *, negative, margin) -> mask
    "identity": identity,
    "grabcut": grabcut_rough,
}
BOX_BASELINES: dict[str, Callable[..., np.ndarray]] = {  # (image, box, *, margin) -> mask
    "identity": box_alone,
    "grabcut": grabcut_box,
}
