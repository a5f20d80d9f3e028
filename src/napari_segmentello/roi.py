"""Region of interest around a stroke: the one crop rule shared by training and inference.

The model never sees the whole image, only a square window centred on the
stroke and enlarged by a context margin, resized to the model's working size.
Training cuts its samples with these same functions (from the *stroke*, never
from the ground-truth box), so what the model learns is what it is asked at
inference. Cost follows the stroke's extent, not the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import map_coordinates
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ROI:
    """A square window ``[y0, y0+size) x [x0, x0+size)`` in image pixels; it may overhang the image."""

    y0: int
    x0: int
    size: int

    def overlaps(self, shape: tuple[int, int]) -> bool:
        """Whether any of the window lies on an image of ``shape``."""
        h, w = shape
        return min(self.y0 + self.size, h) > max(self.y0, 0) and min(self.x0 + self.size, w) > max(self.x0, 0)

    def clipped(self, shape: tuple[int, int]) -> tuple[slice, slice, slice, slice]:
        """Slices of the in-bounds part: (image rows, image cols, window rows, window cols)."""
        if not self.overlaps(shape):
            raise ValueError(f"ROI {self} does not overlap an image of shape {shape}")
        h, w = shape
        ys, xs = max(self.y0, 0), max(self.x0, 0)
        ye, xe = min(self.y0 + self.size, h), min(self.x0 + self.size, w)
        return (
            slice(ys, ye),
            slice(xs, xe),
            slice(ys - self.y0, ye - self.y0),
            slice(xs - self.x0, xe - self.x0),
        )

    def inside(self, shape: tuple[int, int]) -> np.ndarray:
        """size×size boolean window: True where it covers the image."""
        out = np.zeros((self.size, self.size), bool)
        _, _, wy, wx = self.clipped(shape)
        out[wy, wx] = True
        return out


def stroke_bbox(stroke: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` (end-exclusive) of the nonzero pixels of a 2D stroke."""
    if stroke.ndim != 2:
        raise ValueError(f"stroke must be 2D, got shape {stroke.shape}")
    rows = np.flatnonzero(stroke.any(axis=1))
    if rows.size == 0:
        raise ValueError("the stroke is empty: paint at least one pixel over the object")
    cols = np.flatnonzero(stroke.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def roi_around(box: tuple[int, int, int, int], *, margin: float, min_size: int) -> ROI:
    """Square window centred on ``box`` (y0, y1, x0, x1), ``(1 + 2*margin)`` times its longer side, >= ``min_size``."""
    y0, y1, x0, x1 = box
    side = max(y1 - y0, x1 - x0)
    size = max(int(min_size), int(math.ceil(side * (1.0 + 2.0 * margin))))
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    return ROI(int(math.floor(cy - size / 2.0)), int(math.floor(cx - size / 2.0)), size)


def roi_from_stroke(stroke: np.ndarray, *, margin: float = 0.4, min_size: int = 32) -> ROI:
    """Square window centred on the stroke's box, ``(1 + 2*margin)`` times its longer side.

    The margin gives the network the object's context: a stroke inside an
    object rarely reaches its boundary, so the window must.
    """
    return roi_around(stroke_bbox(stroke), margin=margin, min_size=min_size)


# ---------------------------------------------------------------- object context (coarse to fine)
# A short stroke or a click says where the object is, not how big it is. Pass 1 starts
# from a window a few times the prompts' extent and doubles it while the predicted mask
# runs into one of its open sides; pass 2 ("focus") refines the pass-1 mask's box plus a
# margin at full working resolution. Training cuts its windows with these same functions,
# using the ground truth in place of the prediction (see samples.py).

CONTEXT_SCALE = 1.0  # start: the prompts' box plus its own size on every side (3x the extent) ...
CONTEXT_MIN = 64  # ... and at least 64 px
CONTEXT_GROWTH = 2.0
CONTEXT_STEPS = 4  # at most this many growths (64 px -> 1024 px)
FOCUS_MARGIN = 0.2
FOCUS_MIN = 24
EDGE_BAND = 1.0 / 64  # the share of the window's side that counts as "at the edge"


Extent = tuple[int, int, int, int]  # (y0, y1, x0, x1), end-exclusive, as stroke_bbox gives


def prompt_extent(stroke: Extent | None, box: tuple[int, int, int, int] | None, previous: Extent | None) -> Extent:
    """Where an object's prompts are: the union of the stroke's box, the user's box and the previous mask's box.

    ``box`` is the user's ``(row0, col0, row1, col1)``; the others are ``stroke_bbox`` extents.
    The engine and training both start pass 1 from this.
    """
    extents = [e for e in (stroke, previous) if e is not None]
    if box is not None:
        r0, c0, r1, c1 = box
        extents.append((r0, r1, c0, c1))
    if not extents:
        raise ValueError("no prompt: give a stroke, a click or a box")
    y0, y1, x0, x1 = zip(*extents, strict=True)
    return min(y0), max(y1), min(x0), max(x1)


def start_context(prompt_box: tuple[int, int, int, int]) -> ROI:
    """Pass 1's first window around the positive prompts' box."""
    return roi_around(prompt_box, margin=CONTEXT_SCALE, min_size=CONTEXT_MIN)


def _covers(roi: ROI, shape: tuple[int, int]) -> bool:
    return roi.y0 <= 0 and roi.x0 <= 0 and roi.y0 + roi.size >= shape[0] and roi.x0 + roi.size >= shape[1]


def touches_open_edge(mask: np.ndarray, roi: ROI, shape: tuple[int, int]) -> bool:
    """Whether ``mask`` (the window's S×S prediction) reaches a side of the window with more image beyond it.

    Sides on or past the image border are closed: an object may end there.
    """
    s = mask.shape[0]
    band = max(1, int(round(EDGE_BAND * s)))
    scale = s / roi.size
    _, _, wy, wx = roi.clipped(shape)
    rows = slice(int(wy.start * scale), max(int(math.ceil(wy.stop * scale)), int(wy.start * scale) + 1))
    cols = slice(int(wx.start * scale), max(int(math.ceil(wx.stop * scale)), int(wx.start * scale) + 1))
    h, w = shape
    sides = (
        (roi.y0 > 0, mask[:band, cols]),
        (roi.y0 + roi.size < h, mask[s - band :, cols]),
        (roi.x0 > 0, mask[rows, :band]),
        (roi.x0 + roi.size < w, mask[rows, s - band :]),
    )
    return any(is_open and side.any() for is_open, side in sides)


def next_context(roi: ROI, mask: np.ndarray, shape: tuple[int, int], step: int) -> ROI | None:
    """The grown window when ``mask`` (S×S, predicted in ``roi``) runs into an open side; None when done.

    Done: the mask stays inside, the window already covers the image, or ``step``
    (growths so far) reached ``CONTEXT_STEPS``. Growth keeps the centre.
    """
    if step >= CONTEXT_STEPS or _covers(roi, shape) or not touches_open_edge(mask, roi, shape):
        return None
    size = int(math.ceil(roi.size * CONTEXT_GROWTH))
    grow = (size - roi.size) // 2
    return ROI(roi.y0 - grow, roi.x0 - grow, size)


def mask_box(mask: np.ndarray, roi: ROI) -> tuple[int, int, int, int] | None:
    """Image-pixel box (y0, y1, x0, x1) of a window's S×S mask; None when it is empty."""
    if not mask.any():
        return None
    scale = roi.size / mask.shape[0]
    y0, y1, x0, x1 = stroke_bbox(mask)
    return (
        roi.y0 + int(math.floor(y0 * scale)),
        roi.y0 + int(math.ceil(y1 * scale)),
        roi.x0 + int(math.floor(x0 * scale)),
        roi.x0 + int(math.ceil(x1 * scale)),
    )


def resample_window(prob: np.ndarray, src: ROI, dst: ROI, size: int) -> np.ndarray:
    """``prob`` (S×S over window ``src``) sampled on the size×size grid of window ``dst``; 0 outside ``src``.

    Pass 1's answer becomes pass 2's coarse mask without a full-frame intermediate.
    """
    step = dst.size / size
    centres = (np.arange(size) + 0.5) * step
    scale = prob.shape[0] / src.size
    rows = (dst.y0 - src.y0 + centres) * scale - 0.5
    cols = (dst.x0 - src.x0 + centres) * scale - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(prob.astype(np.float32), grid, order=1, mode="constant", cval=0.0)


def focus_roi(box: tuple[int, int, int, int]) -> ROI:
    """Pass 2's window: the pass-1 mask's box plus a margin, so the boundary is seen at the finest scale."""
    return roi_around(box, margin=FOCUS_MARGIN, min_size=FOCUS_MIN)


def crop(array: np.ndarray, roi: ROI, fill: float = 0) -> np.ndarray:
    """The window of ``array`` (H×W or H×W×C), padded with ``fill`` where it overhangs."""
    out = np.full((roi.size, roi.size, *array.shape[2:]), fill, dtype=array.dtype)
    iy, ix, wy, wx = roi.clipped(array.shape[:2])
    out[wy, wx] = np.asarray(array[iy, ix])  # works for dask/zarr too: only the window is read
    return out


def paste(dst: np.ndarray, window: np.ndarray, roi: ROI) -> np.ndarray:
    """Write the in-bounds part of ``window`` (size×size) into ``dst`` in place; returns ``dst``."""
    iy, ix, wy, wx = roi.clipped(dst.shape[:2])
    dst[iy, ix] = window[wy, wx]
    return dst


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor``×``factor`` blocks of an H×W[×C] float image whose H and W are multiples of ``factor``.

    The same as ``skimage.transform.downscale_local_mean``, summed one axis at a time:
    6x faster on large windows, where the mean over a strided block view was most of the time.
    """
    h, w, rest = image.shape[0], image.shape[1], image.shape[2:]
    rows = image.reshape(h // factor, factor, w, *rest).sum(axis=1)
    return rows.reshape(h // factor, w // factor, factor, *rest).sum(axis=2) / np.float32(factor * factor)


def _block_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Average f×f blocks of a square window more than 4× the target ``size`` (f = side // (2·size)).

    The anti-aliased resize (:func:`resize_image`, two products with side-wide matrices) costs
    O(side² · size): too much for a 4000-px window. Block means do the bulk of the shrinking in
    one pass, leaving at most 2-4× to the exact resize. The last ``side % f`` rows/columns are
    dropped (under half a pixel at the working size).
    """
    factor, keep = _shrink(image.shape[0], size)
    return image if factor < 2 else block_mean(image[:keep, :keep], factor)


def _shrink(side: int, size: int) -> tuple[int, int]:
    """(f, kept side) of the block means that shrink a ``side``-px window towards ``size``: f = side // (2·size).

    Block means apply from f = 2; the last ``side % f`` rows/columns are dropped.
    """
    factor = side // (2 * size)
    return factor, side - side % factor if factor else side


@lru_cache(maxsize=64)
def _axis_matrix(side: int, size: int) -> torch.Tensor:
    """(size, side) linear map of one axis: a ``side``-px axis resized to ``size`` px, as a matrix.

    Shrinking is scikit-image's ``resize(order=1, anti_aliasing=True)``: a Gaussian of
    σ = (side/size − 1) / 2 (scipy's ``gaussian_filter``: truncate 4, mirror mode), then bilinear
    sampling at ``(i + 0.5) · side/size − 0.5``. Growing is the bilinear sampling alone, the edge
    held (torch's ``align_corners=False``). Both are linear, so a window is ``M_h @ X @ M_wᵀ``:
    two matrix products instead of a sliding filter.
    """
    sigma = max(0.0, (side / size - 1) / 2)
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else np.ones(1)
    weights /= weights.sum()
    rows = np.arange(side)
    blur = np.zeros((side, side))
    for offset, weight in zip(offsets, weights, strict=True):
        j = np.abs(rows + offset)  # mirror at 0: -1 -> 1
        j = np.where(j > side - 1, 2 * (side - 1) - j, j)  # mirror at the end: side -> side - 2
        np.add.at(blur, (rows, j), weight)
    pos = np.maximum((np.arange(size) + 0.5) * side / size - 0.5, 0.0)
    k0 = np.minimum(np.floor(pos).astype(int), side - 1)
    frac = (pos - k0)[:, None]
    matrix = (1 - frac) * blur[k0] + frac * blur[np.minimum(k0 + 1, side - 1)]
    return torch.from_numpy(matrix.astype(np.float32))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float image (H×W or H×W×C) to size×size, anti-aliased when shrinking.

    Shrinking gives scikit-image's ``resize(order=1, anti_aliasing=True)`` to float rounding, as two
    matrix products (:func:`_axis_matrix`): 2-3 ms for a 600-px RGB window where scikit-image took
    31 ms. The bundled models were trained on this filter; torch's own anti-aliasing (a triangle
    filter, blurrier at small factors) cost them click corrections on EM images (held-out
    em-isbi2012 IoU after 10 clicks 0.777 -> 0.747). Growing holds the edge rather than mirroring
    it (the outermost half pixel differs from scikit-image).
    """
    image = _block_mean(image, size)
    planes = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    planes = planes[None] if image.ndim == 2 else planes.permute(2, 0, 1)
    if max(image.shape[:2]) > size:  # shrinking: after the block means, under 4x the working size
        out = _axis_matrix(image.shape[0], size) @ planes @ _axis_matrix(image.shape[1], size).T
    else:  # growing (a probability window back to thousands of pixels): the same numbers, no matrix
        out = F.interpolate(planes[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return np.ascontiguousarray((out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy())


STRIP_PIXELS = 1 << 20  # window pixels converted at a time when a large window is shrunk (12 MB as RGB floats)


def _converted(array, roi: ROI, row: int, rows: int, cols: int, convert) -> np.ndarray:
    """Rows ``[row, row + rows)``, columns ``[0, cols)`` of window ``roi``, converted: float32 (rows, cols, C).

    0 where the window lies off the image.
    """
    h, w = array.shape[:2]
    ys, ye = max(roi.y0 + row, 0), min(roi.y0 + row + rows, h)
    xs, xe = max(roi.x0, 0), min(roi.x0 + cols, w)
    if ye <= ys or xe <= xs:
        return np.zeros((rows, cols, convert(np.asarray(array[:1, :1])).shape[2]), np.float32)
    block = convert(np.asarray(array[ys:ye, xs:xe]))
    out = np.zeros((rows, cols, block.shape[2]), np.float32)
    out[ys - roi.y0 - row : ye - roi.y0 - row, xs - roi.x0 : xe - roi.x0] = block
    return out


def read_resized(array, roi: ROI, size: int, convert) -> np.ndarray:
    """Window ``roi`` of ``array`` (H×W[×C], numpy or lazy), ``convert``-ed, resized to size×size×C.

    ``convert`` maps an in-image block to float32 (h, w, C); where the window overhangs the
    image it is 0. Equal to :func:`resize_image` of the converted :func:`crop`, but a window
    many times the working size is read, converted and block-averaged strip by strip, so a
    window around a huge object never exists whole as floats (a 2048-px object took ~1 GB).
    """
    factor, keep = _shrink(roi.size, size)  # the rule resize_image applies
    if factor < 2:
        return resize_image(_converted(array, roi, 0, roi.size, roi.size, convert), size)
    step = factor * max(1, STRIP_PIXELS // (factor * keep))
    strips = [
        block_mean(_converted(array, roi, r, min(step, keep - r), keep, convert), factor) for r in range(0, keep, step)
    ]
    return resize_image(np.concatenate(strips), size)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask to size×size by area coverage (>= half covered is kept)."""
    return resize_image(mask.astype(np.float32), size) >= 0.5


def resize_prompt(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a stroke or click to size×size so that none of it is lost.

    Area coverage (:func:`resize_mask`) drops a 1-px pen line, or a click, from any window
    shrunk two-fold or more. People draw exactly such lines. So when shrinking, a window
    cell is marked if it holds any stroke pixel (max pooling at any factor). When growing,
    this is :func:`resize_mask`.
    """
    h, w = mask.shape
    if h <= size and w <= size:
        return resize_mask(mask, size)
    rows, cols = np.nonzero(mask)
    return _pooled(rows, cols, size, h, w)


def _pooled(rows: np.ndarray, cols: np.ndarray, size: int, h: int, w: int) -> np.ndarray:
    """size×size bool: every cell holding one of the pixels ``(rows, cols)`` of an h×w window."""
    out = np.zeros((size, size), bool)
    out[rows * size // h, cols * size // w] = True
    return out


def read_prompt(mask, roi: ROI, size: int) -> np.ndarray:
    """:func:`resize_prompt` of window ``roi`` of a full-frame ``mask`` (numpy or lazy), reading only its in-image part.

    A stroke is sparse: a shrunk window needs its pixels' coordinates, not a window-sized copy.
    """
    if roi.size <= size:
        return resize_prompt(crop(mask, roi).astype(bool), size)
    iy, ix, wy, wx = roi.clipped(mask.shape[:2])
    rows, cols = np.nonzero(np.asarray(mask[iy, ix]))
    return _pooled(rows + wy.start, cols + wx.start, size, roi.size, roi.size)
