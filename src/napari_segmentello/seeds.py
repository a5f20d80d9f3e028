"""A mask's eroded core as its stroke: how a carried mask (propagation) or a rough mask becomes a seed.

The model is asked for the object under a stroke; a whole mask given as the stroke
reads as "the object is at least all this" and the answer grows past a rough edge.
Its core, kept away from the edge that may be wrong, is a stroke inside the object,
and the mask itself goes in as the ``prior`` that pass 2 refines.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.morphology import isotropic_erosion, skeletonize

from napari_segmentello.roi import stroke_bbox

__all__ = ["EROSION", "ROUGH_EROSION", "seed_from_mask"]

# seed = mask eroded by this × its radius. First picked on DAVIS by an earlier session (J 0.61; 0.05: 0.44,
# 0.3: 0.38); checked on held-out train images (scripts/heldout_probe.py prior --erosion E): the answer to a
# moved true mask scores IoU 0.859 at 0.05 and at 0.15, 0.853 at 0.3.
EROSION = 0.15
# A rough mask's edge is further off than a carried one's, so its core is cut deeper. On held-out train images
# (scripts/heldout_probe.py coarse --objects 30 --protocol P --erosion 0.15,0.3,0.5; mean of the five sets)
# coarse masks scored IoU 0.779 / 0.779 / 0.776 and lassos 0.646 / 0.680 / 0.663.
ROUGH_EROSION = 0.3


SEED_SIDE = 512  # px: a larger mask is eroded on every k-th pixel (a 3000-px mask took 0.9 s at full size)


def seed_from_mask(mask: np.ndarray, erosion: float = EROSION) -> np.ndarray:
    """``mask`` eroded by ``erosion`` × its equivalent radius (at least 1 px); its skeleton if that empties it.

    The seed must lie inside the object on the next plane too, so it keeps away from
    the edge that may move; a thin object keeps its skeleton rather than vanishing.
    Only the mask's box (grown by a pixel of background) is eroded, so the cost follows
    the object, not the frame; a box of more than ``SEED_SIDE`` px a side is eroded
    subsampled, then grown back and kept inside the mask (the core moves a few pixels).
    """
    mask = np.asarray(mask, bool)
    seed = np.zeros_like(mask)
    if not mask.any():
        return seed
    y0, y1, x0, x1 = stroke_bbox(mask)
    box = slice(max(y0 - 1, 0), y1 + 1), slice(max(x0 - 1, 0), x1 + 1)
    local = mask[box]
    radius = max(1.0, erosion * math.sqrt(np.count_nonzero(local) / math.pi))
    step = math.ceil(max(local.shape) / SEED_SIDE)
    if step > 1:
        small = isotropic_erosion(local[::step, ::step], radius / step)
        core = np.kron(small, np.ones((step, step), bool))[: local.shape[0], : local.shape[1]] & local
    else:
        core = isotropic_erosion(local, radius)
    seed[box] = core if core.any() else skeletonize(local)
    return seed
