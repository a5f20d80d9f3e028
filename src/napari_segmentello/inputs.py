"""Model input recipes: how an image window and prompts become the network's channels.

Shared by training and the engine so both build identical tensors. A recipe is
``image_channels`` (1 = grayscale, 3 = RGB) plus a tuple of *extras*, each one
more channel after the image:

- ``pos``  the positive stroke ("this object"), 0/1
- ``neg``  a negative stroke ("not this"), 0/1, zeros when absent
- ``prev`` the previous mask for correction rounds, 0/1, zeros when absent
- ``box``  the user's box as a filled rectangle, 0/1, zeros when absent
- ``grad`` Sobel gradient magnitude of the grayscale image (the seed study's recipe:
  grayscale + mask + gradient is ``image_channels=1, extras=("pos", "grad")``)

A user's clicks enter as small disc strokes (:func:`click_masks`), the shape training simulates.
"""

from __future__ import annotations

import numpy as np
from skimage.draw import disk
from skimage.filters import sobel

from napari_segmentello.roi import ROI, read_prompt, read_resized, roi_from_stroke

EXTRAS = ("pos", "neg", "prev", "box", "grad")
_MAX_SAMPLES = 1_000_000


def _integer_percentiles(values: np.ndarray, qs: list[float]) -> np.ndarray:
    """``np.percentile(values, qs)`` (linear method) of non-negative integers, from their histogram.

    The order statistics are read off the cumulative counts: numpy's result to float rounding,
    without partitioning the sample (4 ms instead of 38 for an 854×480 RGB frame).
    """
    cumulative = np.cumsum(np.bincount(values))
    out = []
    for q in qs:
        rank = (values.size - 1) * q / 100.0
        below = int(np.floor(rank))
        low, high = np.searchsorted(cumulative, [below, min(below + 1, values.size - 1)], side="right")
        out.append(low + (rank - below) * (high - low))
    return np.asarray(out, np.float64)


def intensity_range(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-channel (lo, hi) from percentiles of an H×W×C image, ignoring NaN/inf.

    Large images are subsampled on a regular grid so the cost stays bounded.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an H×W×C image, got shape {image.shape}")
    h, w, c = image.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / _MAX_SAMPLES))))
    sample = np.asarray(image[::step, ::step])
    lo = np.zeros(c, np.float64)
    hi = np.ones(c, np.float64)
    if sample.dtype in (np.uint8, np.uint16):  # always finite: percentiles from a histogram
        found = [_integer_percentiles(sample[..., k].ravel(), [low, high]) if sample.size else None for k in range(c)]
    else:
        sample = sample.astype(np.float64).reshape(-1, c)
        columns = [sample[np.isfinite(sample[:, k]), k] for k in range(c)]
        found = [np.percentile(col, [low, high]) if col.size else None for col in columns]
    if sample.size and all(levels is None for levels in found):
        raise ValueError("the image has no finite pixel values (all NaN or inf): nothing to refine")
    for k, levels in enumerate(found):
        if levels is not None:
            lo[k], hi[k] = levels
            if hi[k] <= lo[k]:  # flat channel: keep its level, avoid dividing by zero
                hi[k] = lo[k] + 1.0
    return lo, hi


def scale_intensity(window: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """An H×W×C window as float32 in [0, 1] by (lo, hi) (``hi > lo``, as :func:`intensity_range` gives).

    NaN/inf become 0 (NaN, -inf) or 1 (inf); an integer image has none, so it skips that pass.
    """
    window = np.asarray(window)
    x = (window.astype(np.float32) - lo.astype(np.float32)) / (hi - lo).astype(np.float32)
    if not np.issubdtype(window.dtype, np.integer) and window.dtype != bool:
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(x, 0.0, 1.0, out=x)


def map_channels(x: np.ndarray, image_channels: int) -> np.ndarray:
    """Map the C channels of an H×W×C float image to ``image_channels``.

    1 -> 3 repeats the channel; RGBA drops alpha (first three kept); 2 -> 3 adds their mean;
    C > 3 keeps the first three; anything -> 1 averages. Linear per pixel, so it commutes with
    resizing: :func:`window_input` widens a grayscale window after shrinking it, a third of the work.
    """
    c = x.shape[2]
    if image_channels == 1:
        return x.mean(axis=2, keepdims=True) if c != 1 else x
    if image_channels != 3:
        raise ValueError(f"image_channels must be 1 or 3, got {image_channels}")
    if c == 1:
        return np.repeat(x, 3, axis=2)
    if c == 2:
        return np.concatenate([x, x.mean(axis=2, keepdims=True)], axis=2)
    return np.ascontiguousarray(x[:, :, :3])


def to_model_image(window: np.ndarray, lo: np.ndarray, hi: np.ndarray, image_channels: int) -> np.ndarray:
    """Scale an H×W×C window to [0, 1] with (lo, hi) and map its channels to ``image_channels``."""
    return map_channels(scale_intensity(window, lo, hi), image_channels)


def n_channels(image_channels: int, extras: tuple[str, ...]) -> int:
    """Input channel count of a recipe (validates the extras' names)."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown input extras {unknown}; valid: {list(EXTRAS)}")
    return image_channels + len(extras)


def channel_of(spec, name: str) -> int:
    """Where extra ``name`` sits in a recipe's input: after the image channels, in ``extras`` order."""
    extras = tuple(spec.extras)
    if name not in extras:
        raise ValueError(f"input extra {name!r} is not in this recipe's extras {extras}")
    return spec.image_channels + extras.index(name)


def build_input(
    image: np.ndarray,
    pos: np.ndarray,
    extras: tuple[str, ...],
    *,
    neg: np.ndarray | None = None,
    prev: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray:
    """Stack a [0, 1] H×W×C image and the recipe's extras into a C'×H×W float32 array.

    The image is centred (minus 0.5) so that all channels sit around zero.
    """
    n_channels(image.shape[2], extras)
    given = {"pos": pos, "neg": neg, "prev": prev, "box": box}
    planes = [np.moveaxis(image, 2, 0) - 0.5]
    for name in extras:
        if name == "grad":
            plane = sobel(image.mean(axis=2)) * 4.0
        else:
            plane = given[name] if given[name] is not None else np.zeros(image.shape[:2], np.float32)
        planes.append(np.asarray(plane, dtype=np.float32)[None])
    return np.ascontiguousarray(np.concatenate(planes, axis=0), dtype=np.float32)


def _as_plane(block: np.ndarray) -> np.ndarray:
    """A mask block as one float32 0/1 channel (what :func:`roi.read_resized` converts)."""
    return (np.asarray(block) != 0)[..., None].astype(np.float32)


Box = tuple[int, int, int, int]  # (row0, col0, row1, col1), end-exclusive image pixels


def box_plane(box: Box, roi: ROI, size: int) -> np.ndarray:
    """The filled rectangle ``box`` as a size×size 0/1 plane of window ``roi`` (drawn at working size)."""
    r0, c0, r1, c1 = box
    scale = size / roi.size

    def span(a: int, b: int, origin: int) -> slice:
        lo = int(np.clip(np.floor((a - origin) * scale), 0, size))
        return slice(lo, int(np.clip(max(np.ceil((b - origin) * scale), lo + 1), 0, size)))

    plane = np.zeros((size, size), np.float32)
    plane[span(r0, r1, roi.y0), span(c0, c1, roi.x0)] = 1.0
    return plane


def window_input(
    image: np.ndarray,
    roi: ROI,
    spec,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    pos: np.ndarray | None,
    neg: np.ndarray | None = None,
    prev: np.ndarray | None = None,
    box: Box | None = None,
) -> np.ndarray:
    """The C'×S×S model input for window ``roi``: crop, normalise, resize, stack the prompts.

    ``image`` is H×W×C (any dtype, numpy or lazily sliceable: only the window is read),
    ``pos``/``neg``/``prev`` are H×W full-frame masks (None: absent), ``box`` an image-pixel
    box, ``spec`` provides ``image_channels``, ``extras`` and ``working_size``.
    """
    size = spec.working_size
    channels = spec.image_channels
    if image.shape[2] < channels:  # grayscale (or 2-channel) into RGB: shrink first, then widen
        img = map_channels(read_resized(image, roi, size, lambda block: scale_intensity(block, lo, hi)), channels)
    else:
        img = read_resized(image, roi, size, lambda block: to_model_image(block, lo, hi, channels))

    def _prompt(m: np.ndarray | None) -> np.ndarray | None:
        return None if m is None else read_prompt(m, roi, size).astype(np.float32)

    def _mask(m: np.ndarray | None) -> np.ndarray | None:
        return None if m is None else (read_resized(m, roi, size, _as_plane)[..., 0] >= 0.5).astype(np.float32)

    plane = None if box is None else box_plane(box, roi, size)
    pos_plane, neg_plane = _prompt(pos), _prompt(neg)  # thin strokes must survive
    return build_input(img, pos_plane, tuple(spec.extras), neg=neg_plane, prev=_mask(prev), box=plane)


def prepare_window(
    image: np.ndarray,
    stroke: np.ndarray,
    spec,
    lo: np.ndarray,
    hi: np.ndarray,
    *,
    neg: np.ndarray | None = None,
    prev: np.ndarray | None = None,
) -> tuple[np.ndarray, ROI]:
    """The one-pass (``context="stroke"``) model input: ROI from the stroke, then :func:`window_input`.

    Returns the C'×S×S float32 input and the ROI it was cut from. Training and the
    engine both call this, so they cannot disagree.
    """
    roi = roi_from_stroke(stroke, margin=spec.roi_margin)
    return window_input(image, roi, spec, lo, hi, pos=stroke, neg=neg, prev=prev), roi


# A user's clicks as the network sees them

# px: the centre of strokes.click_stroke's U(3, 6) disc radius, so a user's click looks like training's
CLICK_RADIUS = 4.5


def points_to_stroke(points: np.ndarray, shape: tuple[int, int], radius: float = CLICK_RADIUS) -> np.ndarray:
    """A bool H×W stroke of discs of ``radius`` at ``points`` ((N, 2) row, col floats): clicks as a stroke.

    A click is a small disc stroke, the shape ``strokes.click_stroke`` simulates in training.
    Points whose rounded position falls outside the image are ignored (a click off the
    canvas means nothing); no points give an empty stroke.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (row, col), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite (no NaN or inf coordinates)")
    if len(shape) != 2 or not all(isinstance(n, int | np.integer) and n > 0 for n in shape):
        raise ValueError(f"shape must be (H, W) with positive integer sizes, got {shape!r}")
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive number of pixels, got {radius!r}")
    h, w = int(shape[0]), int(shape[1])
    stroke = np.zeros((h, w), bool)
    centers = np.round(pts)
    inside = (centers[:, 0] >= 0) & (centers[:, 0] < h) & (centers[:, 1] >= 0) & (centers[:, 1] < w)
    for center, pixel in zip(pts[inside], centers[inside].astype(int), strict=True):
        stroke[disk(tuple(center), radius, shape=(h, w))] = True
        stroke[tuple(pixel)] = True  # a sub-pixel radius still marks the clicked pixel
    return stroke


def click_masks(clicks: object, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positive discs, negative discs, negative points)``: bool H×W masks of ``(row, col, positive)`` clicks.

    A click marks a point; its disc (``points_to_stroke``) is how the network was trained to
    see it. So only the clicked pixel of a negative click is certain "not this": its disc can
    reach into the object when the click lands on a thin false-positive rim.
    """
    try:
        arr = np.asarray(clicks, dtype=float)
    except (TypeError, ValueError) as exc:  # text, ragged lists, objects: name the expected form, not numpy's
        raise ValueError(f"clicks must be (row, col, positive) numbers, got {clicks!r:.80}") from exc
    if arr.size == 0:
        arr = arr.reshape(0, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"clicks must be an (N, 3) array of (row, col, positive), got shape {arr.shape}")
    positive = arr[:, 2] != 0
    pos, neg = points_to_stroke(arr[positive, :2], shape), points_to_stroke(arr[~positive, :2], shape)
    points = points_to_stroke(arr[~positive, :2], shape, radius=0.5)
    return pos, neg, points
