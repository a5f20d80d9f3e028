"""Simulated user strokes: how training and evaluation imitate a person painting over an object.

The model only ever learns the kinds of stroke it is shown, so each protocol
mimics one way people actually paint: a coarse shrunken blob (the study
protocol), a scribble along the interior, a sloppy lasso-like over-paint, or a
few clicks. Every function draws all its randomness from the passed
``numpy.random.Generator`` (same seed, same stroke) and works in a window
around the object, so the cost follows the object, not the frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk, line, polygon
from skimage.graph import route_through_array
from skimage.measure import approximate_polygon, block_reduce, find_contours
from skimage.morphology import convex_hull_image, isotropic_closing, isotropic_dilation, isotropic_erosion, skeletonize
from skimage.transform import resize

from napari_segmentello.inputs import CLICK_RADIUS, points_to_stroke
from napari_segmentello.roi import stroke_bbox

MIN_BRUSH = 2.0  # px radius: nobody paints with a thinner brush than ~5 px
SPILL_PROB = 0.3  # how often a scribble runs over the object's edge
BACKGROUND_COST = 1e3  # scribble routes cross background only when they must
LASSO_DETAIL = 96.0  # px across (sqrt of area) at which lassos are drawn; bigger objects are upsampled

# human-like strokes, calibrated on the real strokes of acdc-scribbles (scripts/stroke_stats.py)
PEN_PROB = 0.7  # share of 1-px pen lines: every real acdc stroke is one; the rest use a napari-like round brush
BRUSH_RADIUS = (1.0, 8.0)  # px, in the image whatever the object's size (napari's default brush is 10 px wide)
STROKE_COUNTS = (0.6, 0.3, 0.1)  # P(1, 2, 3 strokes); one stroke per object is the norm on acdc-scribbles
LONG_PROB = 0.8  # a long line back and forth along the object, else a short dash
LONG_LENGTH = (1.0, 3.0)  # × the object's extent (its box's longer side)
DASH_LENGTH = (0.1, 0.4)
ROUTE_DETAIL = 96.0  # px: routes over longer objects are planned on a grid this coarse, so the cost stays bounded
MAX_LEGS = 8  # waypoints a scribble hops between
MAX_COVER = 0.3  # a line's length is capped so its brush covers at most this share of the object
GAP = 2  # px: background strokes never come closer to the object than this
NEAR_PROB = 0.5  # share of background strokes painted beside the object (inside a context window), else anywhere
NEAR_BAND = (0.1, 1.0)  # × the object's extent: how far from its edge the near ones pass
BACKGROUND_LENGTH = (0.5, 4.0)  # × the object's extent, at least MIN_BACKGROUND_LENGTH px
MIN_BACKGROUND_LENGTH = 8.0
COARSE_IOU = (0.5, 0.95)  # IoU of a coarse mask with its object, drawn uniformly (CascadePSP-style)
COARSE_STEPS = 10  # bisection steps on the coarsening strength
COARSE_TOLERANCE = 0.03  # a recipe that misses its target IoU by more is redrawn, up to COARSE_TRIES times
COARSE_TRIES = 3
BOX_SLACK = 0.03  # a dragged box's sides also miss by up to this share of the object's side


# ---------------------------------------------------------------- helpers


def _as_mask(mask: np.ndarray, name: str = "mask", *, allow_empty: bool = False) -> np.ndarray:
    """A bool copy of a 2D mask; an empty one is refused unless ``allow_empty``."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D H×W array, got shape {arr.shape}")
    arr = arr.astype(bool)
    if not allow_empty and not arr.any():
        raise ValueError(f"{name} is empty: a stroke needs at least one object pixel")
    return arr


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def _window(mask: np.ndarray, pad: int) -> tuple[tuple[int, int], np.ndarray]:
    """The object's bounding box grown by ``pad`` zeros on every side, and the box's origin in the frame."""
    y0, y1, x0, x1 = stroke_bbox(mask)
    h, w = y1 - y0, x1 - x0
    sub = np.zeros((h + 2 * pad, w + 2 * pad), bool)
    sub[pad : pad + h, pad : pad + w] = mask[y0:y1, x0:x1]
    return (y0 - pad, x0 - pad), sub


def _place(sub: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A full-frame bool array holding the in-frame part of a window computed by ``_window``."""
    out = np.zeros(shape, bool)
    oy, ox = origin
    ys, xs = max(oy, 0), max(ox, 0)
    ye, xe = min(oy + sub.shape[0], shape[0]), min(ox + sub.shape[1], shape[1])
    if ye > ys and xe > xs:  # a window wholly off the frame places nothing
        out[ys:ye, xs:xe] = sub[ys - oy : ye - oy, xs - ox : xe - ox]
    return out


def _crop(full: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The ``shape`` patch of ``full`` at ``origin``, zeros where it overhangs the frame: ``_place``'s inverse."""
    return _place(full, (-origin[0], -origin[1]), shape)


def _in_frame(origin: tuple[int, int], shape: tuple[int, int], frame: tuple[int, int], step: int = 1) -> np.ndarray:
    """Which pixels of a ``shape`` canvas at ``origin`` (cells of ``step`` px, by their centre) lie in the frame."""
    rows = np.arange(shape[0]) * step + origin[0] + step // 2
    cols = np.arange(shape[1]) * step + origin[1] + step // 2
    return ((rows >= 0) & (rows < frame[0]))[:, None] & ((cols >= 0) & (cols < frame[1]))[None, :]


def _deep_points(dt: np.ndarray, min_depth: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random (row, col) pixels at least ``min_depth`` inside; the deepest pixels if none are that deep."""
    rows, cols = np.nonzero(dt >= min(min_depth, dt.max()))
    pick = rng.choice(rows.size, size=n, replace=rows.size < n)
    return np.stack([rows[pick], cols[pick]], axis=1)


def _fallback_dot(stroke: np.ndarray, obj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``stroke``, or a dot at a deepest object pixel when the recipe erased everything (tiny objects)."""
    if stroke.any():
        return stroke
    dt = ndi.distance_transform_edt(obj)
    (center,) = _deep_points(dt, dt.max(), 1, rng)
    dot = np.zeros_like(obj)
    dot[disk(tuple(center), max(1.0, 0.5 * dt.max()), shape=obj.shape)] = True
    return dot & obj


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in [-1, 1]: 6×6 Gaussian noise upsampled cubically (no wide blur kernel needed)."""
    coarse = rng.standard_normal((6, 6))
    field = resize(coarse, shape, order=3, mode="edge")
    return field / max(float(np.abs(field).max()), 1e-6)


# ---------------------------------------------------------------- protocols


def study_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The study protocol: a coarse, shrunken, holey version of the object.

    Erode to an inner region (radius a random fraction of the inscribed
    radius), punch circular occlusions, open, blur and re-binarise.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    origin, obj = _window(full, pad=2)
    dt = ndi.distance_transform_edt(obj)
    rmax = float(dt.max())
    inner = dt > max(1.0, rng.uniform(0.15, 0.45) * rmax)
    n_holes = int(rng.integers(0, 4))
    if n_holes and inner.any():
        for center in _deep_points(inner.astype(float), 1.0, n_holes, rng):
            inner[disk(tuple(center), rng.uniform(0.1, 0.3) * rmax, shape=obj.shape)] = False
    radius = max(1.0, rng.uniform(0.02, 0.1) * rmax)
    inner = isotropic_erosion(inner, radius)
    if inner.any():  # skimage's isotropic_dilation of an empty image sets pixel (0, 0)
        inner = isotropic_dilation(inner, radius)
    blurred = ndi.gaussian_filter(inner.astype(np.float32), sigma=0.5 + rng.uniform(0.05, 0.15) * rmax)
    return _place(_fallback_dot(blurred > 0.5, obj, rng), origin, full.shape)


def _route(cost: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pixel path through ``points`` in order, each leg the cheapest route over ``cost``."""
    path = [points[0][None]]
    for start, end in zip(points[:-1], points[1:], strict=True):
        leg, _ = route_through_array(cost, tuple(start), tuple(end), fully_connected=True, geometric=True)
        path.append(np.asarray(leg)[1:])
    return np.concatenate(path).astype(float)


def _spill(obj: np.ndarray, path: np.ndarray, brush: float, rng: np.random.Generator) -> np.ndarray:
    """``path`` extended from one end, along its direction, past the object's edge by about a brush width."""
    if rng.random() < 0.5:
        path = path[::-1]
    end = path[-1]
    back = path[max(0, len(path) - 8)]  # heading over the last few pixels, not the last (jagged) step
    direction = end - back
    if not np.any(direction):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        direction = np.array([math.sin(angle), math.cos(angle)])
    direction = direction / np.linalg.norm(direction)
    steps = end + np.arange(max(obj.shape))[:, None] * direction
    idx = np.round(steps).astype(int)
    inside = (idx >= 0).all(axis=1) & (idx[:, 0] < obj.shape[0]) & (idx[:, 1] < obj.shape[1])
    inside[inside] = obj[idx[inside, 0], idx[inside, 1]]
    exit_t = int(np.argmin(inside)) if not inside.all() else len(inside)
    reach = exit_t + rng.uniform(0.5, 1.5) * brush
    extra = end + np.arange(1, int(math.ceil(reach)) + 1)[:, None] * direction
    return np.concatenate([path, extra])


def _wobble(path: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """``path`` moved by a smooth random offset of at most ``amplitude`` px: a hand never draws a clean line."""
    jitter = ndi.gaussian_filter1d(rng.standard_normal(path.shape), sigma=max(2.0, len(path) / 6.0), axis=0)
    jitter *= amplitude / max(float(np.linalg.norm(jitter, axis=1).max()), 1e-6)
    return path + jitter


def _draw_polyline(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """One-pixel-wide polyline through ``points`` (float row/col), clipped to ``shape``."""
    canvas = np.zeros(shape, bool)
    pts = np.round(points).astype(int)
    pts[:, 0] = np.clip(pts[:, 0], 0, shape[0] - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, shape[1] - 1)
    canvas[pts[0, 0], pts[0, 1]] = True
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:], strict=True):
        canvas[line(r0, c0, r1, c1)] = True
    return canvas


def scribble_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A human-like scribble: a thick, wobbly line through the object's interior.

    2-4 deep points, ordered along the object's main axis, are joined by
    routes that follow the interior (so bent objects are not cut across),
    jittered by a smooth random offset and painted with a brush whose radius
    is a fraction of the object's inscribed radius (at least ``MIN_BRUSH``).
    With probability ``SPILL_PROB`` one end runs over the edge.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    (oy, ox), obj = _window(full, pad=2)
    dt = ndi.distance_transform_edt(obj)
    rmax = float(dt.max())
    brush = max(MIN_BRUSH, rng.uniform(0.15, 0.45) * rmax)
    wobble = rng.uniform(0.0, 0.25) * rmax
    points = _deep_points(dt, brush + wobble, int(rng.integers(2, 5)), rng)
    coords = np.argwhere(obj).astype(float)
    if len(coords) > 1:
        _, vecs = np.linalg.eigh(np.cov(coords.T))
        points = points[np.argsort(points @ vecs[:, -1], kind="stable")]
    path = _route(np.where(obj, 1.0 / (1.0 + dt), BACKGROUND_COST), points)  # favour the deep interior
    if rng.random() < SPILL_PROB:
        path = _spill(obj, path, brush, rng)
    # paint on a canvas wide enough for the brush, the wobble and a spill's overshoot
    extra = int(math.ceil(2.5 * brush + wobble)) + 2
    canvas_shape = (obj.shape[0] + 2 * extra, obj.shape[1] + 2 * extra)
    stroke = isotropic_dilation(_draw_polyline(canvas_shape, _wobble(path, wobble, rng) + extra), brush)
    return _place(stroke, (oy - extra, ox - extra), full.shape)


def lasso_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sloppy over-paint: the object grown by a random, wavy margin, made blobby, with a few bites out.

    Covers most of the object plus some background, like a quick fill-in
    with a fat brush. Big objects are drawn on a coarser grid (the shape is
    blobby anyway), which keeps the cost bounded.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    factor = max(1, math.ceil(math.sqrt(float(full.sum())) / LASSO_DETAIL))
    origin, obj = _window(full, pad=0)
    coarse = block_reduce(obj, (factor, factor), np.max)
    extent = math.sqrt(float(coarse.sum()))
    grow = rng.uniform(0.03, 0.2) * extent + rng.uniform(1.0, 3.0)
    close = rng.uniform(0.05, 0.3) * extent
    pad = int(math.ceil(1.5 * grow + close)) + 2
    coarse = np.pad(coarse, pad)
    wavy = grow + rng.uniform(0.0, 0.5) * grow * _smooth_noise(coarse.shape, rng)
    lasso = isotropic_closing(ndi.distance_transform_edt(~coarse) <= wavy, close)
    if rng.random() < 0.3:
        lasso = convex_hull_image(lasso)
    n_bites = int(rng.integers(0, 4))
    if n_bites:
        rim = lasso & ~ndi.binary_erosion(lasso)
        for center in _deep_points(rim.astype(float), 1.0, n_bites, rng):
            lasso[disk(tuple(center), rng.uniform(0.05, 0.2) * extent, shape=lasso.shape)] = False
    fine = np.repeat(np.repeat(_fallback_dot(lasso, coarse, rng), factor, axis=0), factor, axis=1)
    shift = pad * factor
    return _place(fine, (origin[0] - shift, origin[1] - shift), full.shape)


def click_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One to three small discs (radius 3-6 px, less in small objects) deep inside the object."""
    full = _as_mask(mask)
    _check_rng(rng)
    origin, obj = _window(full, pad=2)
    dt = ndi.distance_transform_edt(obj)
    rmax = float(dt.max())
    radius = min(rng.uniform(3.0, 6.0), max(1.0, 0.5 * rmax))
    stroke = np.zeros_like(obj)
    for center in _deep_points(dt, max(radius + 1.0, 0.5 * rmax), int(rng.integers(1, 4)), rng):
        stroke[disk(tuple(center), radius, shape=obj.shape)] = True
    return _place(stroke & obj, origin, full.shape)


def _brush_radius(rng: np.random.Generator) -> float:
    """A brush radius in image pixels, independent of the object's size; 0 means a 1-px pen line."""
    return 0.0 if rng.random() < PEN_PROB else float(rng.uniform(*BRUSH_RADIUS))


def _paint(path: np.ndarray, radius: float) -> tuple[tuple[int, int], np.ndarray]:
    """``path`` (float row/col) painted with a round brush on a canvas just big enough, and the canvas origin."""
    margin = int(math.ceil(radius)) + 1
    lo = np.floor(path.min(axis=0)).astype(int) - margin
    hi = np.ceil(path.max(axis=0)).astype(int) + margin + 1
    canvas = _draw_polyline((int(hi[0] - lo[0]), int(hi[1] - lo[1])), path - lo)
    if radius >= 1.0:
        canvas = isotropic_dilation(canvas, radius)
    return (int(lo[0]), int(lo[1])), canvas


def _merge(pieces: list[tuple[tuple[int, int], np.ndarray]]) -> tuple[tuple[int, int], np.ndarray]:
    """Canvases with their origins united on one canvas just big enough, so no full frame is touched per stroke."""
    lo = np.min([origin for origin, _ in pieces], axis=0)
    hi = np.max([np.add(origin, canvas.shape) for origin, canvas in pieces], axis=0)
    out = np.zeros((int(hi[0] - lo[0]), int(hi[1] - lo[1])), bool)
    for (oy, ox), canvas in pieces:
        out[oy - lo[0] : oy - lo[0] + canvas.shape[0], ox - lo[1] : ox - lo[1] + canvas.shape[1]] |= canvas
    return (int(lo[0]), int(lo[1])), out


def _cut(path: np.ndarray, length: float) -> np.ndarray:
    """The start of ``path`` up to an arc length of ``length`` (at least its first point)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    return path[arc <= length]


def _waypoints(dt: np.ndarray, safe: float, length: float, rng: np.random.Generator) -> np.ndarray:
    """Interior points, each the farthest of three random picks from the last, until their chord reaches ``length``.

    Hopping to far picks makes the long sweeps back and forth that people draw
    over an object, instead of a random walk that stays in one spot.
    """
    points = [_deep_points(dt, safe, 1, rng)[0]]
    chord = 0.0
    while chord < length and len(points) <= MAX_LEGS:
        picks = _deep_points(dt, safe, 3, rng)
        gaps = np.linalg.norm(picks - points[-1], axis=1)
        points.append(picks[int(np.argmax(gaps))])
        chord += float(gaps.max())
    return np.stack(points)


def human_scribble_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 wobbly polylines as people paint them: a fixed brush in image pixels, partial lines, a little spill.

    Each line is a long sweep back and forth along the object or a short dash,
    routed through the interior at a safe distance from the edge (planned on
    a coarse grid for big objects), sometimes run over the edge at one end.
    The brush is capped by the object's inscribed radius: nobody paints a
    thin structure with a brush wider than it.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    origin, obj = _window(full, pad=2)
    extent = float(max(obj.shape) - 4)
    factor = max(1, math.ceil(extent / ROUTE_DETAIL))
    coarse = block_reduce(obj, (factor, factor), np.max)
    dt = ndi.distance_transform_edt(coarse)
    rmax = float(dt.max()) * factor
    area = float(obj.sum())
    radius = min(_brush_radius(rng), 0.8 * rmax)
    wobble = rng.uniform(0.0, 0.2) * rmax
    safe = (radius + wobble) / factor
    cost = np.where(coarse, 1.0 + np.maximum(0.0, safe - dt), BACKGROUND_COST)  # keep off the edge if possible
    pieces = []
    for _ in range(1 + int(rng.choice(len(STROKE_COUNTS), p=STROKE_COUNTS))):
        length = extent * rng.uniform(*(LONG_LENGTH if rng.random() < LONG_PROB else DASH_LENGTH))
        length = min(length, MAX_COVER * area / (2.0 * radius + 1.0))  # a fat brush does not fill the object
        path = _route(cost, _waypoints(dt, safe, length / factor, rng)) * factor + (factor - 1) / 2.0
        path = _cut(path, length)
        if rng.random() < SPILL_PROB:
            path = _spill(obj, path, radius, rng)
        pieces.append(_paint(_wobble(path, wobble, rng), radius))
    (py, px), canvas = _merge(pieces)
    return _place(canvas, (origin[0] + py, origin[1] + px), full.shape)


def random_clicks_stroke(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 clicks at random interior pixels, drawn as the widget draws a user's clicks (``points_to_stroke``)."""
    full = _as_mask(mask)
    _check_rng(rng)
    origin, obj = _window(full, pad=int(math.ceil(CLICK_RADIUS)) + 1)
    points = _interior_points(obj, CLICK_RADIUS, 1 + int(rng.integers(0, 3)), rng)
    return _place(points_to_stroke(points.astype(float), obj.shape), origin, full.shape)


def _interior_points(obj: np.ndarray, depth: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random pixels at least ``depth`` px inside (or half the deepest), on a coarse grid for big objects.

    A coarse cell counts only when it is wholly inside, and its distance in
    cells bounds its pixels' depth from below, so no full-resolution distance
    transform of a big object is needed.
    """
    factor = max(1, math.ceil(max(obj.shape) / ROUTE_DETAIL))
    if factor > 1:
        cells = ndi.distance_transform_edt(block_reduce(obj, (factor, factor), np.min))
        need = depth / factor + 1.5  # a pixel sits up to sqrt(2) cells from its cell's corner
        if cells.max() >= need:
            return _deep_points(cells, need, n, rng) * factor + rng.integers(0, factor, size=(n, 2))
    dt = ndi.distance_transform_edt(obj)
    return _deep_points(dt, min(depth, 0.5 * float(dt.max())), n, rng)


def _free_curve(center: np.ndarray, heading: float, length: float, rng: np.random.Generator) -> np.ndarray:
    """A freehand curve about ``length`` px long through ``center``: a heading that drifts smoothly, like a sweep."""
    n = max(2, math.ceil(length / 2.0))
    drift = ndi.gaussian_filter1d(rng.standard_normal(n), sigma=max(1.0, n / 4.0))
    angles = heading + rng.uniform(0.0, 1.5) * drift / max(float(np.abs(drift).max()), 1e-6)
    steps = 2.0 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return path - path[len(path) // 2] + center


def _keep_off(full: np.ndarray, origin: tuple[int, int], canvas: np.ndarray) -> np.ndarray:
    """``canvas`` without its pixels off the frame or within ``GAP`` px of the object, looking only at its patch."""
    canvas = canvas & _in_frame(origin, canvas.shape, full.shape)
    m = GAP + 1
    patch = _crop(full, (origin[0] - m, origin[1] - m), (canvas.shape[0] + 2 * m, canvas.shape[1] + 2 * m))
    if not patch.any():
        return canvas
    return canvas & ~isotropic_dilation(patch, GAP)[m:-m, m:-m]


class _Beside:
    """Where strokes beside the object start: pixels at a chosen distance from its edge, and the edge's direction.

    The distance transform runs on a coarse grid over the object's box grown
    by the farthest band, so its cost follows the object, not the frame.
    """

    def __init__(self, full: np.ndarray, extent: float) -> None:
        (y0, x0), obj = _window(full, pad=0)
        self.factor = max(1, math.ceil(extent / ROUTE_DETAIL))
        self.pad = math.ceil(NEAR_BAND[1] * extent / self.factor) + 2
        coarse = np.pad(block_reduce(obj, (self.factor, self.factor), np.max), self.pad)
        self.dist = ndi.distance_transform_edt(~coarse) * self.factor
        self.grad = np.gradient(self.dist)
        self.origin = np.array([y0, x0]) - self.pad * self.factor
        self.frame = np.array(full.shape)
        self.extent = extent

    def pick(self, rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
        """A start pixel (in the frame) at a random distance in ``NEAR_BAND`` and the heading along the edge."""
        target = rng.uniform(*NEAR_BAND) * self.extent + GAP
        rows, cols = np.nonzero(np.abs(self.dist - target) <= 0.5 * self.factor + 0.5)
        at = np.stack([rows, cols], axis=1) * self.factor + self.origin + (self.factor - 1) / 2.0
        inside = ((at >= 0) & (at < self.frame)).all(axis=1)
        if not inside.any():
            return None
        i = int(rng.choice(np.flatnonzero(inside)))
        gy, gx = self.grad[0][rows[i], cols[i]], self.grad[1][rows[i], cols[i]]
        return at[i], math.atan2(gx, -gy)  # perpendicular to the distance's gradient: along the edge


def _background_start(full: np.ndarray, beside: _Beside, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Beside the object (half the time, when there is room in the frame) or anywhere in the image."""
    start = beside.pick(rng) if rng.random() < NEAR_PROB else None
    if start is None:
        start = rng.uniform((0.0, 0.0), full.shape), rng.uniform(0.0, 2.0 * math.pi)
    return start


def background_strokes(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 "not this" strokes on the background, as people paint them, never within ``GAP`` px of the object.

    About half pass beside the object (0.1-1x its extent from its edge, so a
    context window sees them), the rest fall anywhere in the image. Same
    brush as ``human_scribble_stroke``. Empty only when no background lies
    farther than ``GAP`` from the object.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    y0, y1, x0, x1 = stroke_bbox(full)
    extent = float(max(y1 - y0, x1 - x0))
    beside = _Beside(full, extent)
    radius = _brush_radius(rng)
    longest = max(MIN_BACKGROUND_LENGTH, 0.5 * min(full.shape))
    pieces = []
    for _ in range(1 + int(rng.choice(len(STROKE_COUNTS), p=STROKE_COUNTS))):
        for _attempt in range(5):  # a stroke that lands on the object is erased: paint another
            center, heading = _background_start(full, beside, rng)
            length = min(longest, max(MIN_BACKGROUND_LENGTH, rng.uniform(*BACKGROUND_LENGTH) * extent))
            origin, canvas = _paint(_free_curve(center, heading, length, rng), radius)
            canvas = _keep_off(full, origin, canvas)
            if canvas.any():
                pieces.append((origin, canvas))
                break
    if not pieces:
        return _background_dot(full, rng)
    origin, canvas = _merge(pieces)
    return _place(canvas, origin, full.shape)


def _background_dot(full: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A background pixel farther than ``GAP`` from the object, for when every stroke was erased."""
    room = ~isotropic_dilation(full, GAP)
    dot = np.zeros_like(full)
    rows, cols = np.nonzero(room)
    if rows.size:
        i = int(rng.integers(rows.size))
        dot[rows[i], cols[i]] = True
    return dot


def _simplify(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """``mask`` redrawn from outlines simplified to ``tolerance`` px (Douglas-Peucker); even-odd fill keeps holes."""
    out = np.zeros_like(mask)
    for contour in find_contours(np.pad(mask, 1).astype(float), 0.5):
        poly = approximate_polygon(contour - 1.0, tolerance)
        out[polygon(poly[:, 0], poly[:, 1], mask.shape)] ^= True
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


class _Coarsening:
    """One random coarsening recipe, applied at any strength: 0 is the object itself, more is coarser.

    The recipe is a level set: the signed distance of the object (half the
    time outlined first as a simplified polygon), moved by smooth boundary
    noise and a dilation/erosion, grown by blobs and cut by bites on its rim.
    All randomness is drawn here, so a search over the strength sees one
    fixed recipe.
    """

    def __init__(self, obj: np.ndarray, rng: np.random.Generator) -> None:
        size = math.sqrt(float(obj.sum()))
        if rng.random() < 0.5:
            simplified = _simplify(obj, rng.uniform(0.02, 0.08) * size)
            obj = simplified if simplified.any() else obj
        self.signed = ndi.distance_transform_edt(obj) - ndi.distance_transform_edt(~obj)
        self.shift = rng.uniform(0.1, 0.4) * size * _smooth_noise(obj.shape, rng) + rng.uniform(-0.15, 0.15) * size
        n_blobs, n_bites = (int(n) for n in rng.integers(0, 4, size=2))
        rim = (np.abs(self.signed) <= 1.5).astype(float)
        centers = _deep_points(rim, 1.0, n_blobs + n_bites, rng) if n_blobs + n_bites else np.zeros((0, 2))
        rows, cols = np.indices(obj.shape)
        self.blobs = [np.hypot(rows - cy, cols - cx) for cy, cx in centers]
        self.radii = rng.uniform(0.1, 0.35, size=len(centers)) * size
        self.grows = np.arange(len(centers)) < n_blobs

    def field(self, strength: float) -> np.ndarray:
        """The level set at ``strength``: positive inside the coarse mask."""
        field = self.signed + strength * self.shift
        for dist, radius, grows in zip(self.blobs, self.radii, self.grows, strict=True):
            field = (
                np.maximum(field, strength * radius - dist) if grows else np.minimum(field, dist - strength * radius)
            )
        return field

    def mask(self, strength: float) -> np.ndarray:
        """The coarse mask at ``strength``, on the recipe's grid."""
        return self.field(strength) > 0

    def render(self, strength: float, factor: int) -> tuple[tuple[int, int], np.ndarray]:
        """The mask at ``strength`` drawn ``factor`` times finer over its own box: (origin in fine px, mask).

        The coarse mask's signed distance is upsampled and thresholded, so the
        outline comes out smooth, not blocky, at a cost that follows the box.
        """
        coarse = self.mask(strength)
        if factor == 1 or not coarse.any():
            return (0, 0), coarse
        y0, y1, x0, x1 = stroke_bbox(coarse)
        y0, x0, y1, x1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, coarse.shape[0]), min(x1 + 1, coarse.shape[1])
        box = coarse[y0:y1, x0:x1]
        signed = ndi.distance_transform_edt(box) - ndi.distance_transform_edt(~box)
        fine = resize(signed, ((y1 - y0) * factor, (x1 - x0) * factor), order=1, mode="edge") > 0
        return (y0 * factor, x0 * factor), fine

    def strength_for(self, obj: np.ndarray, valid: np.ndarray, target: float) -> float:
        """The strength whose mask (where ``valid``) has the IoU with ``obj`` nearest ``target``: bracket, bisect."""
        tried = {0.0: _iou(self.mask(0.0) & valid, obj)}
        lo, hi = 0.0, 1.0
        while (tried.setdefault(hi, _iou(self.mask(hi) & valid, obj))) > target and hi < 64.0:
            lo, hi = hi, 2.0 * hi
        for _ in range(COARSE_STEPS):
            mid = 0.5 * (lo + hi)
            tried[mid] = _iou(self.mask(mid) & valid, obj)
            lo, hi = (mid, hi) if tried[mid] > target else (lo, mid)
        return min(tried, key=lambda k: abs(tried[k] - target))


def _coarsen_to(
    obj: np.ndarray, valid: np.ndarray, target: float, rng: np.random.Generator
) -> tuple[_Coarsening, float]:
    """A recipe and strength landing within ``COARSE_TOLERANCE`` of ``target``, drawing a new recipe when one cannot.

    A recipe that grows the object cannot go below the IoU where it fills the
    frame; another draw (say, an erosion) usually can. The closest try is kept.
    """
    best: tuple[float, _Coarsening, float] | None = None
    for _ in range(COARSE_TRIES):
        recipe = _Coarsening(obj, rng)
        strength = recipe.strength_for(obj, valid, target)
        miss = abs(_iou(recipe.mask(strength) & valid, obj) - target)
        if best is None or miss < best[0]:
            best = (miss, recipe, strength)
        if miss <= COARSE_TOLERANCE:
            break
    return best[1], best[2]


def coarse_stroke(mask: np.ndarray, rng: np.random.Generator, target_iou: float | None = None) -> np.ndarray:
    """A coarse mask of the object at an IoU of ``target_iou`` (drawn from ``COARSE_IOU`` when None), within ~0.05.

    A quick outline or a previous model's mask, as CascadePSP simulates them:
    the strength of a random coarsening recipe is searched until the IoU
    lands on the target. Big objects are searched on a grid about
    ``LASSO_DETAIL`` px across and drawn at full resolution.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    if target_iou is None:
        target_iou = float(rng.uniform(*COARSE_IOU))
    if not 0.0 < target_iou <= 1.0:
        raise ValueError(f"target_iou must be in (0, 1], got {target_iou!r}")
    factor = max(1, math.ceil(math.sqrt(float(full.sum())) / LASSO_DETAIL))
    (oy, ox), obj = _window(full, pad=0)
    coarse = block_reduce(obj, (factor, factor), np.mean) >= 0.5
    if not coarse.any():  # thinner than a coarse cell: search at full resolution
        factor, coarse = 1, obj
    pad = math.ceil(0.5 * math.sqrt(float(coarse.sum()))) + 2  # room to grow to an IoU of 0.5 and below
    coarse = np.pad(coarse, pad)
    corner = (oy - pad * factor, ox - pad * factor)
    valid = _in_frame(corner, coarse.shape, full.shape, step=factor)  # the IoU is scored on what the frame keeps
    recipe, strength = _coarsen_to(coarse, valid, target_iou, rng)
    (dy, dx), fine = recipe.render(strength, factor)
    origin = (corner[0] + dy, corner[1] + dx)
    return _place(_fallback_dot(fine, _crop(full, origin, fine.shape), rng), origin, full.shape)


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter: float = 3.0) -> tuple[int, int, int, int]:
    """The object's box ``(row0, col0, row1, col1)`` (end-exclusive) as a person drags it: each side a little off.

    Each side moves by N(0, ``jitter``) px plus up to ``BOX_SLACK`` of the
    object's side; the box is clipped to the image and never empty.
    """
    full = _as_mask(mask)
    _check_rng(rng)
    if not (math.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number of pixels >= 0, got {jitter!r}")
    y0, y1, x0, x1 = stroke_bbox(full)
    sides = np.array([y1 - y0, x1 - x0, y1 - y0, x1 - x0], float)
    moves = rng.normal(0.0, jitter, 4) + rng.uniform(-BOX_SLACK, BOX_SLACK, 4) * sides
    r0, c0, r1, c1 = (int(v) for v in np.round(np.array([y0, x0, y1, x1]) + moves))
    height, width = full.shape
    r0, c0 = min(max(r0, 0), height - 1), min(max(c0, 0), width - 1)
    return r0, c0, min(max(r1, r0 + 1), height), min(max(c1, c0 + 1), width)


PROTOCOLS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "study": study_stroke,
    "scribble": scribble_stroke,
    "lasso": lasso_stroke,
    "click": click_stroke,
    "human-scribble": human_scribble_stroke,
    "clicks": random_clicks_stroke,
    "coarse": coarse_stroke,
}
# Protocols whose "stroke" is a rough mask of the whole object, reaching its edge: the engine takes them as a
# prior (``Refiner.predict(prior=...)``, the widget's "Rough masks"), training makes them alike. On held-out
# train images (scripts/heldout_probe.py coarse --objects 30 --protocol P, mean of the five sets) coarse
# scored IoU 0.779 as a prior vs 0.702 as the stroke, lasso 0.680 vs 0.608 (core: seeds.ROUGH_EROSION);
# the study's shrunken blobs lie inside the object and stay strokes (0.694 as a prior vs 0.746, core 0.15).
ROUGH_PROTOCOLS = ("coarse", "lasso")


def pick_protocol(mixture: Mapping[str, float], rng: np.random.Generator, *, also: tuple[str, ...] = ()) -> str:
    """One name drawn from a ``{name: weight}`` mixture of ``PROTOCOLS`` (plus the caller's ``also`` names)."""
    names = list(mixture)
    valid = [*PROTOCOLS, *also]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise KeyError(f"unknown stroke protocol(s) {unknown}; valid names: {valid}")
    weights = np.asarray([mixture[n] for n in names], dtype=float)
    if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"protocol mixture needs finite weights >= 0 with a positive sum, got {dict(mixture)}")
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def simulate_stroke(mask: np.ndarray, protocol: str | Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """A simulated stroke over ``mask`` by a named protocol, or by one drawn from a ``{name: weight}`` mixture."""
    _check_rng(rng)
    if isinstance(protocol, Mapping):
        protocol = pick_protocol(protocol, rng)
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown stroke protocol {protocol!r}; valid names: {list(PROTOCOLS)}")
    return PROTOCOLS[protocol](mask, rng)


# ---------------------------------------------------------------- corrections


def _error_click(error: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small disc deep inside the largest connected region of ``error`` (empty if there is none)."""
    if not error.any():
        return np.zeros_like(error)
    labels, n = ndi.label(error)
    sizes = ndi.sum_labels(error, labels, index=np.arange(1, n + 1))
    region = labels == int(np.argmax(sizes)) + 1
    origin, obj = _window(region, pad=2)
    dt = ndi.distance_transform_edt(obj)
    (center,) = _deep_points(dt, 0.8 * dt.max(), 1, rng)
    radius = min(rng.uniform(2.0, 5.0), max(1.0, float(dt[tuple(center)])))
    stroke = np.zeros_like(obj)
    stroke[disk(tuple(center), radius, shape=obj.shape)] = True
    return _place(stroke & obj, origin, error.shape)


def correction_strokes(gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(pos, neg)`` corrective clicks: inside the largest missed region and the largest false-positive region.

    Like an annotator fixing the worst error first (the usual NoC protocol).
    Either is empty when there is no such error.
    """
    gt = _as_mask(gt, "gt", allow_empty=True)
    pred = _as_mask(pred, "pred", allow_empty=True)
    _check_rng(rng)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    return _error_click(gt & ~pred, rng), _error_click(pred & ~gt, rng)


def _deepest_pixel(error: np.ndarray) -> tuple[float, tuple[int, int]]:
    """``(depth, (row, col))`` of the first (row-major) pixel of ``error`` farthest from its boundary.

    The image border counts as boundary (RITM pads the error with one zero
    pixel). The distance transform runs on the error's box grown by that one
    pixel: every pixel of the box's ring is zero, so the result is the
    full-frame one at a cost that follows the error.
    """
    if not error.any():
        return 0.0, (0, 0)
    (oy, ox), sub = _window(error, pad=1)
    dt = ndi.distance_transform_edt(sub)
    row, col = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return float(dt[row, col]), (int(row) + oy, int(col) + ox)


def next_click(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, bool] | None:
    """The standard corrective click (RITM, SimpleClick, SAM): ``(row, col, positive)``, or None without error.

    The click goes to the error pixel farthest from the boundary of its error
    region, in missed object (positive) or false positive (negative),
    whichever reaches deeper; a tie goes to the false positive, as in RITM's
    clicker. Deterministic, so NoC figures can be set beside published ones.
    """
    gt = _as_mask(gt, "gt", allow_empty=True)
    pred = _as_mask(pred, "pred", allow_empty=True)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred shapes differ: {gt.shape} vs {pred.shape}")
    fn_depth, fn_at = _deepest_pixel(gt & ~pred)
    fp_depth, fp_at = _deepest_pixel(pred & ~gt)
    if fn_depth == 0.0 and fp_depth == 0.0:
        return None
    positive = fn_depth > fp_depth
    row, col = fn_at if positive else fp_at
    return row, col, positive


def first_click(gt: np.ndarray) -> tuple[int, int, bool]:
    """The standard protocol's first click: the object pixel farthest from its boundary (always positive)."""
    _, (row, col) = _deepest_pixel(_as_mask(gt, "gt"))  # = next_click(gt, empty prediction)
    return row, col, True


# ---------------------------------------------------------------- measuring strokes


def stroke_measures(stroke: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, int]:
    """``(brush width, length / extent, in-object fraction, strokes)`` of a stroke over an object.

    What calibrates the simulators against real strokes: width = area /
    skeleton length (px), length = skeleton length / the longer side of the
    object's box, strokes = 8-connected components. Works on the stroke's box.
    """
    stroke = _as_mask(stroke, "stroke")
    mask = _as_mask(mask)
    (oy, ox), crop = _window(stroke, pad=1)
    skeleton = max(int(skeletonize(crop).sum()), 1)
    y0, y1, x0, x1 = stroke_bbox(mask)
    area = int(crop.sum())
    inside = int((_crop(mask, (oy, ox), crop.shape) & crop).sum())
    _, n = ndi.label(crop, structure=np.ones((3, 3)))
    return area / skeleton, skeleton / max(y1 - y0, x1 - x0), inside / area, int(n)
