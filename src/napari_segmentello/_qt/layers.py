"""napari layer plumbing for the widget: which 2D plane is shown, and writing results back undoably.

The engine refines one 2D plane; napari layers may be stacks (time, z), RGB,
multiscale, scaled and translated. These helpers translate between the two
without touching pixel values: the image processing stays in the engine. They also
read the user's prompts off the layers: clicks on the shown plane, and which object
each erase ("not this") stroke belongs to.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from scipy import ndimage as ndi

from napari_segmentello.inputs import CLICK_RADIUS

OUTPUT_TAG = "segmentello-output"
CLICK_LABEL = "label"  # the clicks layer's feature holding each click's object id
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
    """Set ``layer.data[index]`` (a plane or a whole stack) to ``plane`` as a single undo step.

    Only changed pixels are recorded, and all of them in one ``data_setitem`` call:
    one history entry, so one ``undo`` reverts it.
    """
    changed = np.nonzero(np.asarray(layer.data[index]) != plane)
    if changed[0].size == 0:
        return
    rest = iter(changed)
    n = changed[0].size
    full = tuple(next(rest) if isinstance(i, slice) else np.full(n, i, np.intp) for i in index)
    layer.data_setitem(full, plane[changed])


def write_objects(
    viewer: Any, image: Image, strokes: Labels, index: Index, labels: np.ndarray, ids: set[int], axis: int | None = None
) -> None:
    """Objects ``ids`` of the ``<image> refined`` layer replaced by ``labels`` at ``index``, as one undo step.

    For a stack, ``axis`` is where its plane axis sits in ``target.data[index]``; ``labels`` come planes first.
    """
    target = output_layer(viewer, image, strokes)
    current = np.asarray(target.data[index])
    if axis is not None:
        current = np.moveaxis(current, axis, 0)
    new = replace_ids(current, labels, ids)
    write_plane(target, index, new if axis is None else np.moveaxis(new, 0, axis))


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


# ---- corrections, clicks and stacks --------------------------------------------------------------


def assign_negatives(objects: np.ndarray, erase: np.ndarray, previous: np.ndarray | None) -> dict[int, np.ndarray]:
    """Each connected erase stroke as the negative ("not this") of one object: ``{id: bool H×W}``.

    An erase stroke is meant for the result it paints over, so it goes to the object
    whose previous result it overlaps most; one over background goes to the nearest
    object (stroke or previous result). Erase strokes with no object on the plane are dropped.
    """
    anchors = objects if previous is None else np.where(objects != 0, objects, previous)
    if not erase.any() or not anchors.any():
        return {}
    components, n = ndi.label(erase, structure=np.ones((3, 3), bool))
    distance, nearest = ndi.distance_transform_edt(anchors == 0, return_indices=True)
    nearest_id = anchors[tuple(nearest)]
    negatives: dict[int, np.ndarray] = {}
    for component in range(1, n + 1):
        pixels = components == component
        under = previous[pixels] if previous is not None else np.zeros(0, anchors.dtype)
        under = under[under != 0]
        if under.size:
            ids, counts = np.unique(under, return_counts=True)
            owner = int(ids[np.argmax(counts)])
        else:
            closest = np.argmin(np.where(pixels, distance, np.inf))
            owner = int(nearest_id.flat[closest])
        negatives[owner] = negatives.get(owner, np.zeros(erase.shape, bool)) | pixels
    return negatives


def plane_clicks(points: Points, index: Index) -> dict[int, np.ndarray]:
    """The clicks lying on the displayed plane as ``{label id: (N, 2) (row, col)}`` in the plane's pixels."""
    data = np.asarray(points.data, dtype=float)
    if data.shape[1] != len(index):
        raise ValueError(
            f"points layer {points.name!r} has {data.shape[1]} dimensions but the image has {len(index)}; "
            "delete it and press 'Click mode' again"
        )
    keep = np.ones(len(data), bool)
    for axis, i in enumerate(index):
        if not isinstance(i, slice):
            keep &= np.round(data[:, axis]) == i
    shown = [axis for axis, i in enumerate(index) if isinstance(i, slice)]
    labels = points.features[CLICK_LABEL].to_numpy() if CLICK_LABEL in points.features else np.ones(len(data), int)
    return {int(k): data[keep & (labels == k)][:, shown] for k in np.unique(labels[keep]) if k != 0}


def add_clicks_layer(viewer: Any, image: Image) -> Points:
    """An empty ``<image> clicks`` Points layer on the image's scale and translate; clicks are disc strokes."""
    return viewer.add_points(
        ndim=len(spatial_shape(image)),
        name=f"{image.name} clicks",
        scale=image.scale,
        translate=image.translate,
        size=2 * CLICK_RADIUS,
        border_color="white",
        features={CLICK_LABEL: np.empty(0, int)},
    )


def clicked_ids(points: Points | Shapes, indices: Any) -> set[int]:
    """Label ids of the clicks (or boxes) at ``indices`` (a data event's ``data_indices``)."""
    if CLICK_LABEL not in points.features:
        return set()
    labels = points.features[CLICK_LABEL].to_numpy()
    return {int(labels[i]) for i in indices if -len(labels) <= i < len(labels) and labels[i] != 0}


def stack_index(index: Index) -> tuple[Index, int, int]:
    """The stack through the displayed plane along the nearest slider axis.

    Returns the index of that stack in the layer's data, the stack axis's position among
    the stack's axes (it comes back in data order) and the displayed plane's position along it.
    """
    sliders = [axis for axis, i in enumerate(index) if not isinstance(i, slice)]
    if not sliders:
        raise ValueError("propagation needs a stack (3D or time series): this image has a single plane")
    axis = sliders[-1]
    stack = tuple(slice(None) if a == axis else i for a, i in enumerate(index))
    position = sum(isinstance(i, slice) for i in index[:axis])
    return stack, position, int(index[axis])


def training_pairs(image: Image, layers: list[Labels]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image plane, labels plane)`` for every 2D plane (last two axes) where a picked layer has labels."""
    data, shape = image_data(image), spatial_shape(image)
    pairs = []
    for layer in layers:
        if tuple(layer.data.shape) != shape or layer.multiscale:
            raise ValueError(
                f"labels layer {layer.name!r} has shape {tuple(layer.data.shape)} but image layer "
                f"{image.name!r} has shape {shape}; pick masks drawn on this image"
            )
        for plane in np.ndindex(*shape[:-2]):
            labels = np.asarray(layer.data[plane])
            if labels.any():
                pairs.append((np.asarray(data[plane]), labels.copy()))
    if not pairs:
        raise ValueError("the picked labels layers are empty: finish some masks first")
    return pairs
