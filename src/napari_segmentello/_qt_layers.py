"""napari layer plumbing for the widget: which 2D plane is shown, and writing results back undoably.

The engine refines one 2D plane; napari layers may be stacks (time, z), RGB,
multiscale, scaled and translated. These helpers translate between the two
without touching pixel values: the image processing stays in the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels

OUTPUT_TAG = "segmentello-output"
Index = tuple[int | slice, ...]


def image_data(layer: Image) -> Any:
    """The full-resolution array (level 0 of a multiscale pyramid), unread: the engine reads only windows."""
    return layer.data[0] if layer.multiscale else layer.data


def spatial_shape(layer: Image) -> tuple[int, ...]:
    """Shape of the image without its RGB(A) channel axis: the shape a matching Labels layer has."""
    shape = tuple(image_data(layer).shape)
    return shape[:-1] if layer.rgb else shape


def displayed_plane(viewer: Any, layer: Image) -> Index:
    """Index into ``layer``'s data of the 2D plane the viewer shows now (data axes, slices for the shown two).

    The current world position goes through the layer's own transform, so
    scaled or translated stacks index the right plane.
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("switch the viewer to 2D view: strokes are refined one displayed plane at a time")
    shape = spatial_shape(layer)
    offset = viewer.dims.ndim - len(shape)
    shown = {d - offset for d in viewer.dims.displayed}
    if any(d < 0 for d in shown):
        raise ValueError(f"image layer {layer.name!r} is not displayed along the viewer's current axes")
    point = layer.world_to_data(viewer.dims.point)
    index: list[int | slice] = []
    for axis, size in enumerate(shape):
        if axis in shown:
            index.append(slice(None))
            continue
        step = int(np.round(point[axis]))
        if not 0 <= step < size:
            raise ValueError(
                f"the current position lies outside image layer {layer.name!r} along axis {axis} "
                f"(index {step}, size {size}); move the slider onto the image"
            )
        index.append(step)
    return tuple(index)


def check_strokes(strokes: Labels, image: Image) -> None:
    """Strokes must cover the image pixel for pixel: the plane index is shared between them."""
    if strokes.multiscale:
        raise ValueError(f"stroke layer {strokes.name!r} is multiscale; paint strokes into a plain Labels layer")
    if tuple(strokes.data.shape) != spatial_shape(image):
        raise ValueError(
            f"stroke layer {strokes.name!r} has shape {tuple(strokes.data.shape)} but image layer "
            f"{image.name!r} has shape {spatial_shape(image)}; press 'New stroke layer' to make a matching one"
        )


def output_layer(viewer: Any, image: Image, strokes: Labels) -> Labels:
    """The ``<image> refined`` Labels layer (created on first use), on the image's scale and translate."""
    name = f"{image.name} refined"
    if name in viewer.layers:
        layer = viewer.layers[name]
        if not isinstance(layer, Labels) or layer.data.shape != strokes.data.shape:
            raise ValueError(
                f"layer {name!r} exists but is not a Labels layer of shape {strokes.data.shape}; rename or delete it"
            )
        return layer
    return viewer.add_labels(
        np.zeros(strokes.data.shape, strokes.data.dtype),
        name=name,
        scale=image.scale,
        translate=image.translate,
        metadata={OUTPUT_TAG: True},
        opacity=0.5,
    )


def is_output(layer: Any) -> bool:
    """True for layers this plugin wrote: they are never offered as stroke layers."""
    return bool(layer.metadata.get(OUTPUT_TAG, False))


def write_plane(layer: Labels, index: Index, plane: np.ndarray) -> None:
    """Set one plane of ``layer`` to ``plane`` as a single undo step (only changed pixels are recorded)."""
    changed = np.nonzero(np.asarray(layer.data[index]) != plane)
    if changed[0].size == 0:
        return
    rest = iter(changed)
    n = changed[0].size
    full = tuple(next(rest) if isinstance(i, slice) else np.full(n, i, np.intp) for i in index)
    layer.data_setitem(full, plane[changed])


def replace_ids(current: np.ndarray, refined: np.ndarray, ids: set[int]) -> np.ndarray:
    """``current`` with objects ``ids`` replaced by their refinement; other objects kept (for live refine)."""
    out = np.where(np.isin(current, list(ids)), 0, current).astype(current.dtype)
    return np.where(refined != 0, refined, out).astype(current.dtype)


def painted_ids(history_item: Any) -> set[int]:
    """Label ids a paint event touched, painted or erased: the objects whose refinement is now stale."""
    ids: set[int] = set()
    for atom in history_item or ():
        if hasattr(atom, "new_value"):  # masked paint / fill atom
            values = [np.ravel(atom.old_values), np.ravel(atom.new_value)]
        else:  # (indices, old values, new values) from data_setitem
            values = [np.ravel(atom[1]), np.ravel(atom[2])]
        ids.update(int(v) for v in np.unique(np.concatenate(values)) if v != 0)
    return ids
