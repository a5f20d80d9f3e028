"""Refine's inputs and worker body: the displayed plane's prompts, read off the layers, per object through the engine.

Each box (see :mod:`.boxes`) is one object, alone or with strokes and clicks of its id.
With *rough masks* on, each id's painted pixels are a rough mask of the whole object
(painted edge to edge, or a filled lasso) rather than a stroke inside it: the engine's ``prior``.
Corrections: each connected erase stroke is the negative of one object (see
:func:`~napari_segmentello._qt.layers.assign_negatives`; an erase click goes to the engine as a
point, :func:`own_clicks`), and an object's current result
is its previous mask, when the model takes those inputs; models that don't get the
strokes alone and a note saying what was left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.boxes import Box, plane_boxes
from napari_segmentello._qt.controller import Controller
from napari_segmentello.engine import Refiner, strokes_exclude_each_other, takes_rough_masks
from napari_segmentello.inputs import points_to_stroke
from napari_segmentello.seeds import seed_from_mask


@dataclass(frozen=True)
class Refined:
    labels: np.ndarray  # the refined objects (0 elsewhere)
    ids: set[int]  # the objects whose output it replaces
    ignored: tuple[str, ...]  # prompts the model has no input channel for


@dataclass(frozen=True)
class Drawn:
    """What the user drew on the displayed plane, copied in the GUI thread (painting may go on)."""

    objects: np.ndarray  # label ids: painted strokes plus click discs, erase pixels removed
    erase: np.ndarray  # bool: the erase ("not this") strokes and clicks
    previous: np.ndarray | None  # the output layer's plane, None when it holds nothing there yet
    ids: set[int] | None  # refine only these objects (refine as I paint), None for all
    boxes: dict[int, Box]  # the boxes on the plane, by object id
    rough: bool = False  # the painted ids are rough masks (priors), not strokes
    erase_clicks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (N, 2) negative clicks (row, col)
    erase_painted: np.ndarray | None = None  # bool: the painted part of ``erase`` (None: all of it)


def read_drawn(
    c: Controller, image: Image, strokes: Labels, index: ql.Index, ids: set[int] | None = None, rough: bool = False
) -> Drawn:
    """The displayed plane's strokes, clicks and boxes (objects and erase strokes) and its previous result."""
    plane = np.array(strokes.data[index])  # a copy: painting may go on while the worker runs
    clicks = c.layer_named(f"{image.name} clicks", Points)
    by_id = ql.plane_clicks(clicks, index) if clicks is not None else {}
    painted = plane == c.erase_spin.value()
    for k, points in by_id.items():
        plane[points_to_stroke(points, plane.shape) & (plane == 0)] = k
    erase = plane == c.erase_spin.value()
    objects = np.where(erase, 0, plane).astype(plane.dtype)
    out = c.layer_named(f"{image.name} refined", Labels)
    previous = np.array(out.data[index]) if out is not None and out.data.shape == strokes.data.shape else None
    shapes = c.layer_named(f"{image.name} boxes", Shapes)
    boxes = plane_boxes(shapes, index) if shapes is not None else {}
    if boxes and max(boxes) > np.iinfo(plane.dtype).max:
        raise ValueError(f"box id {max(boxes)} does not fit stroke layer {strokes.name!r} ({plane.dtype}): use uint16")
    erase_clicks = by_id.get(c.erase_spin.value(), np.zeros((0, 2)))
    return Drawn(objects, erase, previous, ids, boxes, rough, erase_clicks, painted)


def prompts(refiner: Refiner, drawn: Drawn) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Per object to refine: its stroke (or rough mask) and box and, when the model takes them, its negative and
    previous masks. A rough mask is its object's prior: the previous result is not used with it. An object's
    negative is its erase strokes and the other ids' strokes, as :meth:`Refiner.predict_labels` gives it."""
    extras = set(refiner.spec.extras)
    ignored = []
    rough = drawn.rough and takes_rough_masks(refiner.spec)
    if drawn.rough and not rough:
        ignored.append("rough masks")
    negatives = ql.assign_negatives(drawn.objects, drawn.erase, drawn.previous)
    if drawn.erase.any() and "neg" not in extras:
        ignored.append("erase strokes")
        negatives = {}
    previous = drawn.previous if drawn.previous is not None and drawn.previous.any() else None
    if previous is not None and "prev" not in extras:
        ignored.append("previous results")
        previous = None
    wanted = set(np.unique(drawn.objects[drawn.objects != 0]).tolist()) | set(drawn.boxes)
    if previous is not None:  # corrected with an erase stroke only: seeded from its result (after propagation)
        wanted |= {k for k in negatives if np.any(previous == k)}
    if drawn.ids is not None:
        wanted &= drawn.ids
    painted = drawn.objects != 0 if strokes_exclude_each_other(refiner.spec) and not rough else None
    out = {}
    for k in sorted(wanted):
        stroke = drawn.objects == k
        negative, clicks = own_clicks(negatives[k], drawn) if k in negatives else (None, None)
        others = None if painted is None else painted & ~stroke
        if others is not None and others.any():
            negative = others if negative is None else negative | others
        before = previous == k if previous is not None and np.any(previous == k) else None
        box = drawn.boxes.get(k)
        prior = None
        if rough and stroke.any():
            stroke, prior, before = None, stroke, None
        elif not stroke.any():
            stroke = None if box is not None else seed_from_mask(before)  # seeded as propagation seeds a plane
        out[k] = {
            "stroke": stroke,
            "box": box,
            "negative": negative,
            "clicks": clicks,
            "previous": before,
            "prior": prior,
        }
    return out, ignored


def own_clicks(negative: np.ndarray, drawn: Drawn) -> tuple[np.ndarray | None, np.ndarray | None]:
    """An object's negative as its painted "not this" and the negative clicks it holds, as ``(row, col, 0)`` points.

    The engine keeps only a click's own pixel out of the answer: its disc may reach into the object
    (``inputs.click_masks``). Either is None when there is none.
    """
    if not len(drawn.erase_clicks):
        return negative, None
    h, w = negative.shape
    at = np.round(drawn.erase_clicks).astype(int)
    inside = (at[:, 0] >= 0) & (at[:, 0] < h) & (at[:, 1] >= 0) & (at[:, 1] < w)
    mine = drawn.erase_clicks[inside][negative[at[inside, 0], at[inside, 1]]]
    if not len(mine):
        return negative, None
    painted = negative if drawn.erase_painted is None else negative & drawn.erase_painted
    return (painted if painted.any() else None), np.column_stack([mine, np.zeros(len(mine))])


def refine_job(model: Any, device: str, threshold: float, image: Any, drawn: Drawn) -> Iterator[None]:
    """Worker body; it yields between steps so that ``quit()`` takes effect before the next one."""
    refiner = Refiner(model, device, threshold)
    yield
    refiner.set_image(image)
    yield
    wanted, ignored = prompts(refiner, drawn)
    if not wanted and drawn.ids is None:
        refiner.predict_labels(drawn.objects)  # raises the engine's own "paint at least one pixel"
    erased = drawn.erase.any() and "neg" in refiner.spec.extras
    if erased or any(p["previous"] is not None for p in wanted.values()):
        labels = refiner.predict_objects(wanted)
    elif wanted:
        boxes = {k: b for k, b in drawn.boxes.items() if k in wanted}
        asked = np.isin(drawn.objects, list(wanted))
        strokes = np.where(asked, drawn.objects, 0)
        rough = any(p["prior"] is not None for p in wanted.values())
        unasked = (drawn.objects != 0) & ~asked  # objects not refined now (refine as I paint) are still "not this"
        negative = unasked if unasked.any() and strokes_exclude_each_other(refiner.spec) and not rough else None
        labels = refiner.predict_labels(strokes, boxes=boxes or None, rough=rough, negative=negative)
    else:
        labels = np.zeros_like(drawn.objects)
    return Refined(labels.astype(drawn.objects.dtype), set(wanted) | (drawn.ids or set()), tuple(ignored))
