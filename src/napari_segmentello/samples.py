"""Training samples: one object -> (model input, target), cut exactly as the engine cuts it.

Shared by ``training`` (the dataset behind ``training.run``) and :mod:`napari_segmentello.finetune`
(the user's own labels), so a finetuned model sees the very inputs the original was trained on:
a stroke simulated by the core (``strokes.simulate_stroke``), the window around the *stroke*
prepared by ``inputs.prepare_window`` (the function the engine calls at inference, never the
ground-truth box), and the target cut with the same ROI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import disk

from napari_segmentello.inputs import prepare_window
from napari_segmentello.roi import crop, resize_mask
from napari_segmentello.strokes import correction_strokes, simulate_stroke

__all__ = ["Sample", "make_sample", "perturb_mask"]


def perturb_mask(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible earlier prediction of ``gt`` for a correction round: eroded, dilated or bitten.

    The change is 4–15 % of the object's size, worked out on its padded bounding box only.
    """
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    r = max(1, int(round(rng.uniform(0.04, 0.15) * np.sqrt(np.count_nonzero(gt)))))
    box = (
        slice(max(rows[0] - 2 * r, 0), rows[-1] + 2 * r + 1),
        slice(max(cols[0] - 2 * r, 0), cols[-1] + 2 * r + 1),
    )
    local = gt[box]
    kind = rng.choice(["erode", "dilate", "bites"])
    if kind == "erode":
        changed = ndimage.distance_transform_edt(local) > r
        if not changed.any():  # too thin to erode: it would vanish, grow it instead
            changed = ndimage.distance_transform_edt(~local) <= r
    elif kind == "dilate":
        changed = ndimage.distance_transform_edt(~local) <= r
    else:  # bites: discs on the contour, each one removed from or added to the object
        changed = local.copy()
        edge = np.argwhere(local & ~ndimage.binary_erosion(local))
        for cy, cx in edge[rng.choice(len(edge), size=rng.integers(1, 4))]:
            changed[disk((cy, cx), r, shape=local.shape)] = bool(rng.integers(2))
        if not changed.any():
            changed = local
    out = np.zeros_like(gt)
    out[box] = changed
    return out


@dataclass(frozen=True)
class Sample:
    """One training pair in window coordinates, plus the prompts it was made from (full frame)."""

    x: np.ndarray  # C×S×S float32 model input
    y: np.ndarray  # S×S bool target
    stroke: np.ndarray  # H×W bool
    neg: np.ndarray | None
    prev: np.ndarray | None


def make_sample(
    image: np.ndarray,
    gt: np.ndarray,
    spec: Any,
    protocol: str | dict[str, float],
    rng: np.random.Generator,
    *,
    lo: np.ndarray,
    hi: np.ndarray,
    correction: bool = False,
) -> Sample:
    """Simulate the prompts for one object and cut input and target around the stroke."""
    stroke = simulate_stroke(gt, protocol, rng)
    neg = prev = None
    if correction:
        prev = perturb_mask(gt, rng)
        pos, neg = correction_strokes(gt, prev, rng)
        stroke = stroke | pos
    x, roi = prepare_window(image, stroke, spec, lo, hi, neg=neg, prev=prev)
    y = resize_mask(crop(gt, roi), spec.working_size)
    return Sample(x, y, stroke, neg, prev)
