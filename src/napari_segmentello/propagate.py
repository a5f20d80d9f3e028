"""Propagation through a stack: one stroke on one plane segments the object up and down a volume or movie.

The stroke's plane is refined first; then each refined plane, eroded, becomes the stroke
for its neighbour (the object moves and changes little between adjacent planes, and the
erosion keeps the seed inside it even where it shifts or shrinks). A direction stops when
the object vanishes or changes abruptly, the signs that the walk left the object or
jumped to another one. The leading axis may be z or t alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from skimage.morphology import isotropic_erosion, skeletonize

from napari_segmentello.engine import ModelLike, Refiner

__all__ = ["propagate", "seed_from_mask"]


class PlaneRefiner(Protocol):
    """What propagation needs of a refiner (:class:`~napari_segmentello.engine.Refiner` has it)."""

    def set_image(self, image: Any) -> None: ...

    def predict(self, stroke: Any) -> np.ndarray: ...


def seed_from_mask(mask: np.ndarray, erosion: float) -> np.ndarray:
    """``mask`` eroded by ``erosion`` × its equivalent radius (at least 1 px); its skeleton if that empties it.

    The seed must lie inside the object on the next plane too, so it keeps away from
    the edge that may move; a thin object keeps its skeleton rather than vanishing.
    """
    radius = max(1.0, erosion * math.sqrt(np.count_nonzero(mask) / math.pi))
    seed = isotropic_erosion(mask, radius)
    return seed if seed.any() else skeletonize(mask)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _continues(previous: np.ndarray, mask: np.ndarray, area_ratio: tuple[float, float], min_overlap: float) -> bool:
    """Whether ``mask`` is still the object of ``previous``: not empty, similar in size, overlapping."""
    area = np.count_nonzero(mask)
    if area == 0:
        return False
    ratio = area / np.count_nonzero(previous)
    return area_ratio[0] <= ratio <= area_ratio[1] and _iou(previous, mask) >= min_overlap


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


def _check_settings(erosion: float, min_area_ratio: float, max_area_ratio: float, min_overlap: float) -> None:
    if not 0.0 <= erosion < 1.0:
        raise ValueError(f"erosion must be in [0, 1) (a fraction of the object's radius), got {erosion}")
    if not 0.0 <= min_area_ratio <= 1.0 <= max_area_ratio:
        raise ValueError(f"need 0 <= min_area_ratio <= 1 <= max_area_ratio, got {min_area_ratio} and {max_area_ratio}")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in [0, 1], got {min_overlap}")


def propagate(
    image: Any,
    stroke: Any,
    index: int,
    *,
    model: ModelLike = "default",
    device: str = "auto",
    threshold: float = 0.5,
    refiner: PlaneRefiner | None = None,
    erosion: float = 0.15,
    min_area_ratio: float = 0.2,
    max_area_ratio: float = 3.0,
    min_overlap: float = 0.3,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Bool (Z, H, W) masks of the object under ``stroke`` (a 2D mask on plane ``index``) through the stack.

    ``image`` is (Z, H, W) or (Z, H, W, C), numpy or lazy (only visited planes are read).
    Plane ``index`` is refined from the stroke; each further plane from its neighbour's
    mask eroded by ``erosion`` × its equivalent radius. A direction stops at the first
    plane whose mask is empty, whose area is outside [``min_area_ratio``,
    ``max_area_ratio``] times its neighbour's, or whose IoU with it is below
    ``min_overlap``; that plane and the ones beyond stay False. ``refiner`` (anything
    with ``set_image``/``predict``) replaces ``model``/``device``/``threshold``.
    ``progress(done, total)`` is called after each plane is decided (planes beyond a
    stop count as decided), ending at ``(Z, Z)``.
    """
    stroke = np.asarray(stroke)
    n = _stack_shape(image, stroke)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < n:
        raise ValueError(f"index must be a plane number in [0, {n - 1}], got {index!r}")
    _check_settings(erosion, min_area_ratio, max_area_ratio, min_overlap)
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

    refiner.set_image(image[index])
    out[index] = refiner.predict(stroke)
    decided(1)
    for step in (1, -1):
        end = n if step == 1 else -1
        previous, k = out[index], index + step
        while k != end and previous.any():
            refiner.set_image(image[k])
            mask = np.asarray(refiner.predict(seed_from_mask(previous, erosion)), bool)
            if not _continues(previous, mask, (min_area_ratio, max_area_ratio), min_overlap):
                break
            out[k], previous, k = mask, mask, k + step
            decided(1)
        decided(abs(end - k))
    return out
