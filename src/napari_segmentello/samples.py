"""Training samples: one object -> (model input, target), cut exactly as the engine cuts it.

Shared by ``training`` (the dataset behind ``training.run``) and :mod:`napari_segmentello.finetune`
(the user's own labels), so a finetuned model sees the very inputs the original was trained on:
a stroke simulated by the core (``strokes.simulate_stroke``), the window around the *stroke*
prepared by ``inputs.prepare_window`` (the function the engine calls at inference, never the
ground-truth box), and the target cut with the same ROI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.draw import disk

from napari_segmentello.inputs import Box, prepare_window, window_input
from napari_segmentello.roi import (
    ROI,
    crop,
    focus_roi,
    next_context,
    prompt_extent,
    resize_mask,
    start_context,
    stroke_bbox,
)
from napari_segmentello.seeds import seed_from_mask
from napari_segmentello.strokes import (
    ROUGH_PROTOCOLS,
    background_strokes,
    coarse_stroke,
    correction_strokes,
    human_scribble_stroke,
    jittered_box,
    pick_protocol,
    simulate_stroke,
)

__all__ = [
    "BOX_PROTOCOL",
    "DEFAULT_MIX",
    "PromptMix",
    "Sample",
    "carried_sample",
    "context_windows",
    "make_sample",
    "neighbour_scribbles",
    "perturb_mask",
]

BOX_PROTOCOL = "box"  # a protocol name for object-aware models: the object's (jittered) box, no stroke
ROUGH_SEED_EROSION = (0.15, 0.5)  # a rough mask's core in training: eroded by U(this) × its radius
CARRIED_CHANGE = (0.005, 0.06)  # a carried mask: the truth changed by U(this) × its size (IoU about 0.8-0.99)
CARRIED_EXACT = 0.2  # share of carried masks that are the truth itself (an object that did not move)
NEIGHBOUR_REACH = 1.0  # neighbours painted in training: boxes within this × the object's extent of its box
NEIGHBOUR_LIMIT = 8  # at most this many (the nearest): their strokes cost a scribble each
NEIGHBOUR_KEEP = 0.75  # each one painted with this chance (annotators skip some)
NEIGHBOUR_MIN_PIXELS = 16  # nobody scribbles on a speck
CARRIED_SEED_EROSION = (0.1, 0.25)  # its core, around propagation's seeds.EROSION


def perturb_mask(gt: np.ndarray, rng: np.random.Generator, change: tuple[float, float] = (0.04, 0.15)) -> np.ndarray:
    """A plausible earlier prediction of ``gt`` for a correction round: eroded, dilated, bitten or moved.

    The change is ``change`` (a range, default 4–15 %) of the object's size, at least a pixel, worked
    out on its padded bounding box only.
    A moved mask is the neighbouring plane's or frame's answer, as propagation passes it:
    without it the network made such priors worse (held-out train images, masks shifted
    2-10 % of their size: IoU 0.86 in, 0.82 out; coco 0.83 in, 0.69 out).
    """
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    r = max(1, int(round(rng.uniform(*change) * np.sqrt(np.count_nonzero(gt)))))
    box = (
        slice(max(rows[0] - 2 * r, 0), rows[-1] + 2 * r + 1),
        slice(max(cols[0] - 2 * r, 0), cols[-1] + 2 * r + 1),
    )
    local = gt[box]
    kind = rng.choice(["erode", "dilate", "bites", "move"])
    if kind == "move":  # by r in a random direction; the 2r padding keeps it inside the box
        angle = rng.uniform(0.0, 2.0 * np.pi)
        changed = ndimage.shift(local, (r * np.sin(angle), r * np.cos(angle)), order=0, mode="constant", cval=False)
        if not changed.any():
            changed = local
    elif kind == "erode":
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
    stroke: np.ndarray  # H×W bool (all False for a box alone)
    neg: np.ndarray | None
    prev: np.ndarray | None
    box: Box | None = None
    roi: ROI | None = None


@dataclass(frozen=True)
class PromptMix:
    """How often an object-aware sample gets background "not this" strokes, and is cut as a pass-2 window.

    ``window_jitter`` scales a pass-1 window about its centre by ``2**u``, u uniform in
    ``[-window_jitter, window_jitter]``: the rule ties the window to the prompts' extent, and a
    network that only ever sees that ratio learns object size from the window, not the image
    (small objects under short strokes come out far too large).
    ``rough_prior``: how often a rough mask (``strokes.ROUGH_PROTOCOLS``) comes as the engine takes
    one from "Rough masks" (the mask as the prior, a core of it as the stroke) rather than as a stroke.
    ``carried``: the share of samples made as propagation hands a plane over (:func:`carried_sample`).
    ``neighbours``: how often the objects around it are painted too, as "not this" (:func:`neighbour_scribbles`;
    drawn by the caller, which knows the image's other objects).
    """

    negative: float = 0.5
    focus: float = 0.4
    window_jitter: float = 0.0
    rough_prior: float = 0.0
    carried: float = 0.0
    neighbours: float = 0.0


DEFAULT_MIX = PromptMix()


def neighbour_scribbles(gt: np.ndarray, others: Iterable[np.ndarray], rng: np.random.Generator) -> np.ndarray | None:
    """Human-like scribbles on the object's neighbours, off the object: the "not this" other ids give.

    In a labels layer each id's strokes are every other object's "not this" (``Refiner.predict_labels``).
    Such strokes lie on the neighbours, often right beside the object's edge, unlike the background
    strokes that keep their distance; a model that never saw them ignored them (``heldout_probe.py
    neighbours``: 0.671 alone, 0.672 with them). Each neighbour is painted with ``NEIGHBOUR_KEEP``'s chance.
    """
    out = np.zeros(gt.shape, bool)
    for mask in others:
        if rng.random() < NEIGHBOUR_KEEP and mask.sum() >= NEIGHBOUR_MIN_PIXELS:
            out |= human_scribble_stroke(mask, rng)
    out &= ~gt
    return out if out.any() else None


def earlier_mask(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An earlier answer to correct: half the time close (:func:`perturb_mask`), half a coarse mask at IoU 0.5-0.95.

    Earlier answers only ever close to the truth teach a model to copy its previous mask; in correction
    rounds and in pass 2 the previous mask can be far off, and the clicks and the image must win.
    """
    return coarse_stroke(gt, rng) if rng.random() < 0.5 else perturb_mask(gt, rng)


def context_windows(gt: np.ndarray, prompt_box: tuple[int, int, int, int], size: int) -> list[ROI]:
    """Pass 1's windows for an object, the engine's growth rule with the ground truth as the prediction."""
    rois = [start_context(prompt_box)]
    while (grown := next_context(rois[-1], resize_mask(crop(gt, rois[-1]), size), gt.shape, len(rois) - 1)) is not None:
        rois.append(grown)
    return rois


def _scaled(roi: ROI, factor: float) -> ROI:
    """``roi`` scaled about its centre (at least 16 px)."""
    size = max(16, int(round(roi.size * factor)))
    centre_y, centre_x = roi.y0 + roi.size / 2, roi.x0 + roi.size / 2
    return ROI(int(round(centre_y - size / 2)), int(round(centre_x - size / 2)), size)


def carried_sample(
    image: np.ndarray, gt: np.ndarray, spec: Any, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> Sample:
    """A plane as propagation hands it over: a mask close to the truth as the prior, its core as the stroke.

    Cut in the prior's focus window, as the engine refines a prior (one pass, no "not this").
    Without such samples the model, given the exact true mask as the prior, returned IoU 0.87-0.94
    on held-out train images (five sets), and propagation lost a little of a good mask on every frame.
    """
    prev = gt.copy() if rng.random() < CARRIED_EXACT else perturb_mask(gt, rng, CARRIED_CHANGE)
    stroke = seed_from_mask(prev, rng.uniform(*CARRIED_SEED_EROSION))
    roi = focus_roi(stroke_bbox(prev))
    x = window_input(image, roi, spec, lo, hi, pos=stroke, prev=prev)
    return Sample(x, resize_mask(crop(gt, roi), spec.working_size), stroke, None, prev, None, roi)


def _object_sample(
    image: np.ndarray,
    gt: np.ndarray,
    spec: Any,
    protocol: str | dict[str, float],
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    correction: bool,
    mix: PromptMix,
    others: np.ndarray | None,
) -> Sample:
    """An object-aware sample: prompts, then one of the engine's windows (a pass-1 step or the focus window)."""
    if mix.carried > 0 and rng.random() < mix.carried:  # no draw at 0: earlier mixes keep their samples
        return carried_sample(image, gt, spec, rng, lo, hi)
    name = protocol if isinstance(protocol, str) else pick_protocol(protocol, rng, also=(BOX_PROTOCOL,))
    box = jittered_box(gt, rng) if name == BOX_PROTOCOL else None
    stroke = np.zeros(gt.shape, bool) if box is not None else simulate_stroke(gt, name, rng)
    neg = background_strokes(gt, rng) if rng.random() < mix.negative else None
    if others is not None:
        neg = others if neg is None else neg | others
    prev = None
    if name in ROUGH_PROTOCOLS and rng.random() < mix.rough_prior:
        # the core's depth varies, so the chosen inference erosion is not the only one the network knows
        prev, stroke = stroke, seed_from_mask(stroke, rng.uniform(*ROUGH_SEED_EROSION))
    elif correction:
        prev = earlier_mask(gt, rng)
        pos, fix = correction_strokes(gt, prev, rng)
        stroke, neg = stroke | pos, fix if neg is None else neg | fix
    if rng.random() < mix.focus:  # pass 2: a coarse mask (as pass 1 would give) in its focus window
        prev = earlier_mask(gt, rng) if prev is None else prev
        roi = focus_roi(stroke_bbox(prev if prev.any() else gt))
    else:  # pass 1, from where the prompts are
        earlier = stroke_bbox(prev) if prev is not None and prev.any() else None
        extent = prompt_extent(stroke_bbox(stroke) if stroke.any() else None, box, earlier)
        windows = context_windows(gt, extent, spec.working_size)
        roi = windows[int(rng.integers(len(windows)))]
        if mix.window_jitter > 0:
            roi = _scaled(roi, 2.0 ** rng.uniform(-mix.window_jitter, mix.window_jitter))
    x = window_input(image, roi, spec, lo, hi, pos=stroke, neg=neg, prev=prev, box=box)
    y = resize_mask(crop(gt, roi), spec.working_size)
    return Sample(x, y, stroke, neg, prev, box, roi)


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
    mix: PromptMix = DEFAULT_MIX,
    others: np.ndarray | None = None,
) -> Sample:
    """Simulate the prompts for one object and cut input and target as the engine would for that model.

    ``others``: strokes on the objects around it (:func:`neighbour_scribbles`), added to an
    object-aware model's "not this".
    """
    if spec.context == "object":
        return _object_sample(image, gt, spec, protocol, rng, lo, hi, correction, mix, others)
    if others is not None:
        raise ValueError(f"neighbours' strokes need an object-aware model (context 'object'), got {spec.context!r}")
    stroke = simulate_stroke(gt, protocol, rng)
    neg = prev = None
    if correction:
        prev = perturb_mask(gt, rng)
        pos, neg = correction_strokes(gt, prev, rng)
        stroke = stroke | pos
    x, roi = prepare_window(image, stroke, spec, lo, hi, neg=neg, prev=prev)
    y = resize_mask(crop(gt, roi), spec.working_size)
    return Sample(x, y, stroke, neg, prev, roi=roi)
