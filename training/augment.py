"""Image augmentation of training objects: a mirror image and a grayscale copy, drawn per sample.

Why: the refiner meets images no one here trains on, grayscale scans (MRI, EM, brightfield)
as often as photos, yet most of its training objects are COCO colour photos; and an object
and its mirror image are equally likely. Both changes keep the object's mask exact, so the
strokes, clicks and boxes are simulated on the changed image as on any other.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LUMA", "augmented"]

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma weights


def _grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W, 1) luma of an RGB(A) image in its own dtype: a 1-channel image, as a grayscale file loads."""
    gray = image[..., :3].astype(np.float32) @ LUMA
    if np.issubdtype(image.dtype, np.integer):
        gray = np.rint(gray)
    return gray.astype(image.dtype)[..., None]


def augmented(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, flip_prob: float = 0.0, gray_prob: float = 0.0
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(image, mask, changed)``: left-right mirrored with ``flip_prob``, RGB made gray with ``gray_prob``.

    ``image`` is H×W×C, ``mask`` H×W or K×H×W (masks of the same frame, mirrored alike).
    A probability of 0 draws nothing from ``rng``, so configs without augmentation keep
    their samples. ``changed`` tells the caller the intensity range it cached for the
    original image no longer applies.
    """
    changed = False
    if flip_prob > 0 and rng.random() < flip_prob:
        image, mask, changed = image[:, ::-1], mask[..., ::-1], True
    if gray_prob > 0 and rng.random() < gray_prob and image.shape[2] >= 3:
        image, changed = _grayscale(image), True
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), changed
