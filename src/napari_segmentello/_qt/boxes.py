"""Box prompts on a napari Shapes layer: each rectangle is one object, its label id kept as a shape feature.

napari puts the centre of pixel (r, c) at data coordinates (r, c); a rectangle holds the
pixels whose centres lie inside it, as the engine's end-exclusive ``(row0, col0, row1, col1)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Shapes

from napari_segmentello._qt import layers as ql

BOX_LABEL = ql.CLICK_LABEL  # the feature holding each box's object id, named as for clicks
Box = tuple[int, int, int, int]
_DECIMALS = 6  # corners a transform left at 2.9999999 still hold pixel 3


def pixel_box(corners: Any) -> Box:
    """End-exclusive pixel box of the pixels whose centres a rectangle's corners (N×2 (row, col), float) enclose.

    A rectangle from (-0.5, -0.5) to (9.5, 9.5) is box (0, 0, 10, 10); any shape gives its bounding box.
    """
    corners = np.round(np.asarray(corners, float), _DECIMALS)
    (r0, c0), (r1, c1) = np.ceil(corners.min(0)), np.floor(corners.max(0)) + 1
    return int(r0), int(c0), int(r1), int(c1)


def plane_boxes(shapes: Shapes, index: ql.Index) -> dict[int, Box]:
    """The boxes lying on the displayed plane as ``{label id: box}`` (boxes sharing an id: their union)."""
    labels = shapes.features[BOX_LABEL].to_numpy() if BOX_LABEL in shapes.features else np.zeros(len(shapes.data))
    shown = [axis for axis, i in enumerate(index) if isinstance(i, slice)]
    out: dict[int, Box] = {}
    for vertices, k in zip(shapes.data, labels, strict=True):
        vertices = np.asarray(vertices, float)
        if vertices.shape[1] != len(index):
            raise ValueError(
                f"shapes layer {shapes.name!r} has {vertices.shape[1]} dimensions but the image has {len(index)}; "
                "delete it and press 'Box mode' again"
            )
        on_plane = all(np.all(np.round(vertices[:, a]) == i) for a, i in enumerate(index) if not isinstance(i, slice))
        if k == 0 or not on_plane:
            continue
        box = pixel_box(vertices[:, shown])
        if (k := int(k)) in out:
            was = out[k]
            box = (min(was[0], box[0]), min(was[1], box[1]), max(was[2], box[2]), max(was[3], box[3]))
        out[k] = box
    return out


def free_id(layers: Iterable[Any], erase: int) -> int:
    """The next label id above all in ``layers`` (Labels data, clicks' or boxes' ids), skipping the erase label."""
    layers = [x for x in layers if x is not None]
    used = [np.asarray(x.data if isinstance(x, Labels) else x.features.get(BOX_LABEL, [])) for x in layers]
    top = max((int(np.max(a, where=a != erase, initial=0)) for a in used if a.size), default=0)
    return top + 2 if top + 1 == erase else top + 1


def add_boxes_layer(viewer: Any, image: Image) -> Shapes:
    """An empty ``<image> boxes`` Shapes layer on the image's scale and translate, ready for rectangles."""
    return viewer.add_shapes(
        ndim=len(ql.spatial_shape(image)),
        name=f"{image.name} boxes",
        scale=image.scale,
        translate=image.translate,
        face_color="transparent",
        edge_color="yellow",
        features={BOX_LABEL: np.empty(0, int)},
    )
