"""Propagation through a stack: one stroke on one plane segments the object up and down a volume or movie.

The stroke's plane is refined first. Each further plane is refined from its neighbour's
mask carried onto it by the optical flow between the two planes (so the window follows
a moving, deforming object): that mask eroded is the stroke (the seed stays inside the
object where its edge moves) and, when the model takes one, the mask itself is the
``prior`` (:meth:`Refiner.predict_proba`: kept where the image agrees). With ``carry`` > 0
each answer keeps the carried mask with that weight (``(1 - carry)·p + carry·mask > threshold``):
the network may drop a carried pixel or add one only where it is sure. That holds a trusted
start mask against drift, and equally the errors of a start refined from a stroke, so it is
off by default (the README's propagation section has both figures). With ``adapt`` seconds the
model is first finetuned, a copy in memory, on the start plane's mask (one-shot, as OSVOS adapts
to a video's first frame): it learns this object against this background before it walks, which
holds it on the object where the generic model drifts to its neighbours. A direction stops
at the first plane where the model is not confident of what it found — an empty plane,
or an object that vanished or was occluded — so nothing spills into planes without it.
The leading axis may be z or t alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from skimage.registration import optical_flow_ilk
from skimage.transform import resize

from napari_segmentello.engine import Refiner
from napari_segmentello.finetune import MIN_AREA
from napari_segmentello.finetune import adapt as finetuned
from napari_segmentello.loader import ModelLike
from napari_segmentello.models.folding import folded_for_inference
from napari_segmentello.roi import block_mean, stroke_bbox
from napari_segmentello.seeds import EROSION, seed_from_mask

__all__ = ["carried", "confidence", "propagate"]


class PlaneRefiner(Protocol):
    """What propagation needs of a refiner (:class:`~napari_segmentello.engine.Refiner` has it).

    ``spec.extras`` says whether the model takes a previous mask (``"prev"``), and so a ``prior``.
    """

    threshold: float
    spec: Any

    def set_image(self, image: Any) -> None: ...

    def predict_proba(self, stroke: Any = None, *, prior: Any = None) -> np.ndarray: ...


def confidence(prob: np.ndarray, threshold: float) -> float:
    """Mean probability inside the mask ``prob > threshold`` (0 for an empty mask).

    A network sure of an object gives its inside probabilities near 1; on a plane
    without the object the few pixels it still claims sit just above the threshold.
    """
    inside = prob[prob > threshold]
    return float(inside.mean()) if inside.size else 0.0


FLOW_SIDE = 128  # the object's neighbourhood is shrunk to about this side for the optical flow


def _shrunk(plane: np.ndarray, rows: slice, cols: slice, factor: int) -> np.ndarray:
    """The gray crop ``plane[rows, cols]`` averaged in ``factor``×``factor`` blocks (its last rows/columns
    short of a block dropped), grown to at least 8 px a side for the flow's pyramid."""
    crop = np.asarray(plane[rows, cols], np.float32)
    gray = crop @ np.full(crop.shape[2], 1 / crop.shape[2], np.float32) if crop.ndim == 3 else crop  # 10x .mean(2)
    h, w = (side - side % factor for side in gray.shape)
    small = block_mean(gray[:h, :w], factor) if factor > 1 else gray
    if min(small.shape) < 8:
        small = resize(small, tuple(max(side, 8) for side in small.shape), order=1)
    return small


def carried(mask: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``mask`` of plane ``before`` carried onto plane ``after`` by the optical flow around it.

    Lucas-Kanade flow (scikit-image, coarse to fine) on the mask's box grown by half its
    side, shrunk by block means to about ``FLOW_SIDE`` px: the mask follows an object that
    moves, turns or deforms between planes, which a centroid shift cannot. The flow is
    brought back to full size and the mask warped by torch (bilinear): a third of the time
    scikit-image's anti-aliased resize and scipy's warp took on DAVIS frames.
    """
    h, w = mask.shape
    y0, y1, x0, x1 = stroke_bbox(mask)
    grow = max(8, max(y1 - y0, x1 - x0) // 2)
    rows, cols = slice(max(y0 - grow, 0), min(y1 + grow, h)), slice(max(x0 - grow, 0), min(x1 + grow, w))
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    factor = max(1, min(math.ceil(max(shape) / FLOW_SIDE), min(shape)))
    a, b = (_shrunk(p, rows, cols, factor) for p in (before, after))
    flow = torch.from_numpy(optical_flow_ilk(b, a, radius=7, num_warp=3))  # after(x) ~ before(x + flow(x))
    span = tuple(side - side % factor for side in shape)  # the part of the crop the small images cover
    flow = torch.nn.functional.interpolate(flow[None].float(), size=span, mode="bilinear", align_corners=False)
    flow = flow * torch.tensor([span[0] / a.shape[0], span[1] / a.shape[1]]).view(1, 2, 1, 1)
    flow = torch.nn.functional.pad(flow, (0, shape[1] - span[1], 0, shape[0] - span[0]), mode="replicate")[0]
    ys, xs = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    # grid_sample's coordinates: x then y, -1..1 over the pixels' outer edges (align_corners=False)
    grid = torch.stack([(xs + flow[1] + 0.5) * (2 / shape[1]) - 1, (ys + flow[0] + 0.5) * (2 / shape[0]) - 1], -1)
    source = torch.from_numpy(np.ascontiguousarray(mask[rows, cols], np.float32))[None, None]
    local = torch.nn.functional.grid_sample(source, grid[None], mode="bilinear", align_corners=False)[0, 0] > 0.5
    out = np.zeros_like(mask)
    out[rows, cols] = local.numpy()
    return out


def _stack_shape(image: Any, stroke: np.ndarray) -> int:
    """The number of planes of ``image``; a ValueError unless it is a stack whose planes match ``stroke``."""
    shape = tuple(np.shape(image))
    if stroke.ndim != 2:
        raise ValueError(f"stroke must be a 2D (H, W) mask on one plane, got shape {stroke.shape}")
    if len(shape) == 3 and shape[:2] == stroke.shape:
        raise ValueError(
            f"image of shape {shape} looks like one 2D plane with channels (H, W, C) for this stroke of shape "
            f"{stroke.shape}; propagation needs a stack (Z, H, W) or (Z, H, W, C): use refine() for one plane"
        )
    if len(shape) not in (3, 4) or shape[1:3] != stroke.shape:
        raise ValueError(
            f"image must be a stack (Z, H, W) or (Z, H, W, C) whose planes are the stroke's shape "
            f"{stroke.shape}, got image shape {shape}"
        )
    return shape[0]


def _check_settings(erosion: float, min_confidence: float, carry: float, adapt: float) -> None:
    if isinstance(adapt, bool) or not isinstance(adapt, int | float) or not (math.isfinite(adapt) and adapt >= 0):
        raise ValueError(f"adapt must be a number of seconds >= 0 (0: no adaptation), got {adapt!r}")
    if not 0.0 <= carry < 0.5:
        raise ValueError(
            f"carry must be in [0, 0.5) (the carried mask's weight; from 0.5 on the model could never drop a "
            f"carried pixel), got {carry}"
        )
    if not 0.0 <= erosion < 1.0:
        raise ValueError(f"erosion must be in [0, 1) (a fraction of the object's radius), got {erosion}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1] (a mean probability), got {min_confidence}")


def _refined(
    refiner: PlaneRefiner, seed: np.ndarray, prior: np.ndarray | None, carry: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(the model's probability, the mask) from ``seed``, and ``prior`` when the model takes a previous mask.

    The mask is the probability blended with ``prior`` (weight ``carry``) and thresholded. The window
    follows the object through the seed (the carried previous mask, eroded); an object-aware
    model's engine cuts it around the prior itself (one pass, the prior's box plus a margin).
    Re-refining a mask cut by a stroke model's window with itself as the stroke was tried and
    removed: on the sample-coin stack it let the mask spread over neighbouring objects (IoU 0.97
    on the start plane, 0.04-0.13 two planes on).
    """
    take_prev = "prev" in refiner.spec.extras
    prob = refiner.predict_proba(seed, prior=prior if take_prev else None)
    kept = prob if prior is None else (1.0 - carry) * prob + carry * prior
    return prob, kept > refiner.threshold


def _adapted(refiner: PlaneRefiner, plane: np.ndarray, mask: np.ndarray, seconds: float, tick: Callable) -> Refiner:
    """A refiner running a copy of ``refiner``'s model finetuned on ``plane`` and its ``mask`` for ``seconds``.

    ``tick()`` runs before each step, so a progress callback that raises (a user's Stop) ends it.
    """
    model = getattr(refiner, "model", None)
    if model is None:
        raise ValueError("adapt needs a refiner with a model to finetune (a Refiner); this one has no .model")
    device = str(getattr(refiner, "device", "auto"))
    pairs = [(plane, mask.astype(np.uint8))]
    done = finetuned(pairs, model=model, minutes=seconds / 60, device=device, should_stop=lambda: bool(tick()))
    return Refiner(folded_for_inference(done.net), device, refiner.threshold)


def propagate(
    image: Any,
    stroke: Any,
    index: int,
    *,
    model: ModelLike = "default",
    device: str = "auto",
    threshold: float = 0.5,
    refiner: PlaneRefiner | None = None,
    erosion: float = EROSION,
    min_confidence: float = 0.8,
    carry: float = 0.0,
    refine_start: bool = True,
    rough: bool = False,
    adapt: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Bool (Z, H, W) masks of the object under ``stroke`` (a 2D mask on plane ``index``) through the stack.

    ``image`` is (Z, H, W) or (Z, H, W, C), numpy or lazy (only visited planes are read).
    Plane ``index`` is refined from the stroke; each further plane from its neighbour's
    mask carried onto it by the optical flow (:func:`carried`), eroded by ``erosion`` × its
    equivalent radius as the stroke (and whole as the ``prior`` if the model takes one); the
    answer keeps the carried mask with weight ``carry`` in [0, 0.5) (0: the model's answer alone; on held-out
    clips 0.35-0.45 held a true start mask best).
    A direction stops at the first plane whose carried or refined mask is empty or whose mean probability
    inside (:func:`confidence`) is below ``min_confidence``; that plane and the ones
    beyond stay False. ``refiner`` (see :class:`PlaneRefiner`) replaces
    ``model``/``device``/``threshold``. With ``refine_start=False`` the stroke is taken
    as plane ``index``'s finished mask (an existing label to carry on), with ``rough`` as a rough mask of the
    object there (refined as :meth:`Refiner.predict_proba` refines a ``prior`` alone). With ``adapt`` > 0 a
    copy of the model is finetuned for that many seconds on plane ``index`` and its mask
    (:func:`finetune.adapt`) and walks the stack in its place (``refiner`` needs a ``model`` then, as
    :class:`Refiner` has). ``progress(done, total)`` is called after each plane is decided (planes beyond a
    stop count as decided) and before each adaptation step, ending at ``(Z, Z)``; an exception it raises (a
    user's Stop) ends the walk. A start mask under ``finetune.MIN_AREA`` pixels is too small to learn from:
    it walks unadapted.
    """
    stroke = np.asarray(stroke)
    n = _stack_shape(image, stroke)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < n:
        raise ValueError(f"index must be a plane number in [0, {n - 1}], got {index!r}")
    _check_settings(erosion, min_confidence, carry, adapt)
    if refiner is None:
        refiner = Refiner(model, device, threshold)
    index = int(index)
    out = np.zeros((n, *stroke.shape), bool)
    done = 0

    def decided(planes: int) -> None:
        nonlocal done
        done += planes
        if progress is not None:
            progress(done, n)

    start = np.asarray(image[index])  # read once: refined here and the flow's first "before" both ways
    if refine_start:
        refiner.set_image(start)
        start_mask = refiner.predict_proba(prior=stroke != 0) if rough else _refined(refiner, stroke != 0, None)[0]
        out[index] = start_mask > refiner.threshold
    else:
        out[index] = stroke != 0
    decided(1)
    if adapt > 0 and np.count_nonzero(out[index]) >= MIN_AREA:
        refiner = _adapted(refiner, start, out[index], adapt, lambda: decided(0))
    for step in (1, -1):
        end = n if step == 1 else -1
        before, previous, k = start, out[index], index + step
        while k != end and previous.any():
            plane = np.asarray(image[k])
            prior = carried(previous, before, plane)
            if not prior.any():
                break
            refiner.set_image(plane)
            prob, mask = _refined(refiner, seed_from_mask(prior, erosion), prior, carry)
            if not mask.any() or confidence(prob, refiner.threshold) < min_confidence:
                break
            out[k], before, previous, k = mask, plane, mask, k + step
            decided(1)
        decided(abs(end - k))
    return out
