"""Synthetic cut-and-paste objects (rings, curved bands, blobs with holes) for training.

Real training sets hold almost only filled blobs, so a model learns that a loop
stroke means "fill the inside" and fails on thin ring-shaped objects (e.g. a
myocardium). A composite pastes a texture cut from another training image into
a ring, band or holed shape placed where a real object is (so sizes follow the
data); the hole shows the background, so every mask edge is an image edge.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse

__all__ = ["KINDS", "MIN_PIXELS", "composite_object"]

KINDS = ("ring", "band", "hole")
_KIND_WEIGHTS = (0.4, 0.3, 0.3)  # rings are the shape the real sets lack most
MIN_PIXELS = 30  # smaller shapes fall back to the real object's outline
_FEATHER = 0.7  # gaussian sigma of the pasted alpha: edges one pixel soft, not artificially perfect
_PAD = 4  # beyond the feather's reach (truncate 4 sigma -> 3 px): pixels past it stay untouched


def composite_object(
    background: np.ndarray,
    texture: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    *,
    kind: str | None = None,
    shift: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)``: ``background`` with a textured synthetic object pasted around ``gt``.

    ``background`` is H×W×C (C 1 or 3, any dtype) and ``gt`` its real object mask;
    ``texture`` is any image (its size and channel count may differ). ``kind`` is one
    of :data:`KINDS` (default: drawn by ``rng``); ``shift=False`` pastes the texture's
    values unchanged. Only the object's padded bounding box is worked on.
    """
    if background.ndim != 3 or background.shape[2] not in (1, 3):
        raise ValueError(f"background must be H×W×C with C 1 or 3, got shape {background.shape}")
    if gt.shape != background.shape[:2] or not gt.any():
        raise ValueError(f"gt must be a non-empty mask of shape {background.shape[:2]}, got {gt.shape}")
    if kind is None:
        kind = str(rng.choice(KINDS, p=_KIND_WEIGHTS))
    elif kind not in KINDS:
        raise ValueError(f"unknown composite kind {kind!r}; valid kinds: {KINDS}")
    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    pad = int(0.15 * max(rows[-1] - rows[0], cols[-1] - cols[0])) + _PAD  # room for a larger ellipse
    box = (
        slice(max(rows[0] - pad, 0), rows[-1] + pad + 1),
        slice(max(cols[0] - pad, 0), cols[-1] + pad + 1),
    )
    local = gt[box].astype(bool)
    shape = _SHAPES[kind](local, rng)
    if np.count_nonzero(shape) < MIN_PIXELS:  # too small to be the shape it should: a plain cut-paste blob
        shape = local
    alpha = ndimage.gaussian_filter(shape.astype(np.float32), _FEATHER)
    touched = alpha > 1e-4  # the shape and its feathered edge: the only pixels blended
    alpha = alpha[touched][:, None]
    tex = _texture_pixels(texture, background, touched, rng)
    bg = background[box][touched].astype(np.float32)
    if shift:
        tex = _shift(tex, bg, _span(background), rng)
    pasted = alpha * tex + (1.0 - alpha) * bg
    if np.issubdtype(background.dtype, np.integer):
        info = np.iinfo(background.dtype)
        pasted = np.clip(np.rint(pasted), info.min, info.max)
    image = background.copy()
    image[box][touched] = pasted.astype(background.dtype)
    mask = np.zeros(gt.shape, bool)
    mask[box] = shape
    return image, mask


def _outer(local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A ring's outline: an ellipse of about the object's extent, or the object itself smoothed."""
    if rng.random() < 0.5:
        rows, cols = np.nonzero(local)
        half_h = max((rows.max() - rows.min() + 1) / 2, 3.0) * rng.uniform(0.8, 1.15)
        half_w = max((cols.max() - cols.min() + 1) / 2, 3.0) * rng.uniform(0.8, 1.15)
        rr, cc = ellipse(
            rows.mean(), cols.mean(), half_h, half_w, shape=local.shape, rotation=rng.uniform(-np.pi, np.pi)
        )
        outer = np.zeros(local.shape, bool)
        outer[rr, cc] = True
    else:
        radius = np.sqrt(np.count_nonzero(local) / np.pi)  # a disc's; enough to size the smoothing
        outer = ndimage.gaussian_filter(local.astype(np.float32), max(1.0, 0.1 * radius), truncate=2.0) > 0.5
    return _largest(ndimage.binary_fill_holes(outer))


def _rim(outer: np.ndarray, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    """The band of ``outer`` within a thickness of ``low``–``high`` of its inscribed radius (≥ 2 px)."""
    dist = ndimage.distance_transform_edt(outer)
    thickness = max(2.0, rng.uniform(low, high) * dist.max())
    return outer & (dist <= thickness)


def _ring(local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A closed annulus: the shape a loop stroke must not fill."""
    return _rim(_outer(local, rng), 0.08, 0.35, rng)


def _band(local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thick curved band: a ring cut to an arc of 110–300 degrees."""
    outer = _outer(local, rng)
    rim = _rim(outer, 0.15, 0.6, rng)
    rows, cols = np.nonzero(outer)
    yy, xx = np.indices(outer.shape)
    theta = np.arctan2(yy - rows.mean(), xx - cols.mean())
    start, span = rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 0.85) * 2 * np.pi
    return _largest(rim & (np.mod(theta - start, 2 * np.pi) < span))


def _hole(local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The real object with one or two elliptic holes, each well inside its outline."""
    dist = ndimage.distance_transform_edt(local)
    rows, cols = np.nonzero(dist >= 0.5 * dist.max())
    shape = local.copy()
    for _ in range(rng.integers(1, 3)):
        k = rng.integers(len(rows))
        radius = rng.uniform(0.35, 0.7) * dist[rows[k], cols[k]]
        if radius < 2:  # too thin for a visible hole and a rim around it
            continue
        rr, cc = ellipse(
            rows[k],
            cols[k],
            radius,
            radius * rng.uniform(0.5, 1.0),
            shape=local.shape,
            rotation=rng.uniform(-np.pi, np.pi),
        )
        shape[rr, cc] = False
    return shape


_SHAPES = {"ring": _ring, "band": _band, "hole": _hole}


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (one object, not scattered pieces); empty stays empty."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def _span(image: np.ndarray) -> float:
    """The value range of an image's dtype (integers) or of its finite values (floats)."""
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max - np.iinfo(image.dtype).min)
    finite = image[np.isfinite(image)]
    return float(finite.max() - finite.min()) if finite.size and finite.max() > finite.min() else 1.0


def _texture_pixels(
    texture: np.ndarray, background: np.ndarray, where: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """N×C float32: a random crop of ``texture`` the size of ``where``, sampled at its True pixels.

    A texture smaller than the box is enlarged (bilinear). Values come in ``background``'s
    channels and value scale, so a uint8 photo can texture a float or grayscale image.
    """
    tex = texture[..., None] if texture.ndim == 2 else texture
    rows, cols = np.nonzero(where)
    scale = max(1.0, where.shape[0] / tex.shape[0], where.shape[1] / tex.shape[1])  # > 1: enlarge it
    if scale == 1.0:
        top = rng.integers(tex.shape[0] - where.shape[0] + 1)
        left = rng.integers(tex.shape[1] - where.shape[1] + 1)
        pixels = tex[top + rows, left + cols].astype(np.float32)
    else:
        top = rng.uniform(0, max(0.0, tex.shape[0] - where.shape[0] / scale))  # rounding can go below 0
        left = rng.uniform(0, max(0.0, tex.shape[1] - where.shape[1] / scale))
        coords = (top + rows / scale, left + cols / scale)
        pixels = np.stack(
            [
                ndimage.map_coordinates(tex[..., k], coords, output=np.float32, order=1, mode="nearest")
                for k in range(tex.shape[2])
            ],
            axis=1,
        )
    channels = background.shape[2]
    if pixels.shape[1] != channels:
        pixels = pixels.mean(axis=1, keepdims=True) if channels == 1 else np.repeat(pixels[:, :1], channels, axis=1)
    if texture.dtype == background.dtype or texture.dtype.kind == background.dtype.kind == "f":
        return pixels
    low = np.iinfo(texture.dtype).min if np.issubdtype(texture.dtype, np.integer) else np.nanmin(texture)
    floor = np.iinfo(background.dtype).min if np.issubdtype(background.dtype, np.integer) else np.nanmin(background)
    return floor + (pixels - low) * (_span(background) / _span(texture))


def _shift(tex: np.ndarray, under: np.ndarray, span: float, rng: np.random.Generator) -> np.ndarray:
    """A random intensity/colour change of the texture pixels (N×C); a third of the time a low-contrast one.

    Low contrast moves the texture's mean to within a few percent of the background
    it covers (``under``, N×C), so the model also sees objects told apart by texture alone.
    """
    mean = tex.mean(axis=0)
    draw = rng.random()
    if draw < 1 / 3:
        offset = under.mean(axis=0) - mean + rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.1) * span
        return mean + (tex - mean) * rng.uniform(0.5, 1.0) + offset
    if draw < 2 / 3:
        return tex  # the other image's appearance as it is
    offset = rng.normal(0.0, 0.12 * span) + rng.normal(0.0, 0.05 * span, size=tex.shape[1])
    return mean + (tex - mean) * rng.uniform(0.6, 1.4) + offset
