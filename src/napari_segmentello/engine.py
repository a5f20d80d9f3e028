"""Inference: strokes, clicks and boxes on a 2D image -> refined masks (the public API behind ``napari_segmentello``).

Study models (``context="stroke"``) cut each object as one window around its stroke
(:func:`inputs.prepare_window`, the same function training uses). Object-aware models
(``context="object"``) run the coarse-to-fine path of :mod:`roi`: pass 1 grows a window
around the prompts until the predicted mask stays inside it, pass 2 refines that mask's
box at full working resolution (training cuts its windows with the same functions). A prior
(a rough mask, or a mask carried from a neighbouring plane) already marks the object: pass 2
alone refines its box.
All objects' windows of one step go through the network in one batch,
and each probability window is resized back and pasted into a full-frame result.
Only windows are converted to float, so time and memory follow the objects, not
the image size; a dask/zarr image is read as one strided sample (its intensity
range, once per image) and then only the windows.
Label ids become objects in :mod:`label_masks`, windows become one label image in
:mod:`answers`, and the caller's arguments are checked in :mod:`checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache, reduce
from typing import Any

import numpy as np
from scipy import ndimage as ndi
import torch
from torch import nn

from napari_segmentello.answers import Window, assigned, excluding, union, within_reach
from napari_segmentello.checks import channels_last, check_box, check_numeric, check_threshold
from napari_segmentello.devices import evaluating, module_device, module_dtype, resolve_device
from napari_segmentello.inputs import Box, channel_of, click_masks, intensity_range, prepare_window, window_input
from napari_segmentello.label_masks import NotThis, Placed, Selected, either, label_objects, seed_labels, selector
from napari_segmentello.loader import ModelLike, load_model
from napari_segmentello.models.folding import folded_for_inference
from napari_segmentello.roi import (
    ROI,
    crop,
    focus_roi,
    mask_box,
    next_context,
    paste,
    prompt_extent,
    resample_window,
    resize_image,
    roi_from_stroke,
    start_context,
    stroke_bbox,
)

__all__ = ["Refiner", "refine", "refine_labels", "resolve_device"]

# A rough mask is refined, then that answer refined again as the rough mask. On held-out train images
# (scripts/heldout_probe.py coarse --objects 30 --protocol P --rough-rounds 1,2,3,4, mean of five sets)
# a second round lifted lassos 0.680 -> 0.713 and kept coarse masks level (0.779 -> 0.781); a third
# gained lassos 0.013 more and lost coarse masks 0.003.
ROUGH_ROUNDS = 2
# The answer to a rough mask stays within this share of the mask's size (√area, city-block) of it: a
# rough mask says roughly where the object is, as GrabCut takes its outside as background. Held-out
# (same probe, --rough-reach 0.05,0.1,0.15,0.2, two rounds; unclipped lasso 0.713, coarse 0.781):
# lasso 0.725 / 0.723 / 0.722 / 0.721, coarse 0.778 / 0.786 / 0.791 / 0.793; the mask itself as the
# limit, 0.728 and 0.753.
ROUGH_REACH = 0.2
_BATCH = 64  # windows per forward pass: bounds memory when a labels layer holds hundreds of objects
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: a diagonal 1-px pen line is one part
PROMPTS = ("stroke", "box", "negative", "previous", "prior", "clicks")  # one object's prompts, in ``_one``'s order

# The forward copy of each loaded checkpoint's module (batch norms folded, channels-last weights)
_inference_net = lru_cache(maxsize=8)(folded_for_inference)


def takes_rough_masks(spec: Any) -> bool:
    """Whether a model refines a rough mask: object-aware (a prior is pass 2's coarse mask and window), with 'prev'."""
    return spec.context == "object" and "prev" in spec.extras


def strokes_exclude_each_other(spec: Any) -> bool:
    """Whether each object's "not this" holds the other objects' strokes: object-aware models with a 'neg' input."""
    return spec.context == "object" and "neg" in spec.extras


Extent = tuple[int, int, int, int]  # (y0, y1, x0, x1), as roi.stroke_bbox gives it


@dataclass(frozen=True)
class _Object:
    """One object's prompts for the object-aware path: a (lazy) stroke mask and/or a box, and its earlier mask."""

    value: Any
    pos: Any  # H×W bool-like or None
    stroke_box: Extent | None
    box: Box | None
    earlier: Any = None  # H×W bool-like: an answer under correction or a prior; None: absent
    earlier_box: Extent | None = None
    not_this: Any = None  # H×W bool-like: pixels that are not this object (its negative); None: absent
    excluded: Any = None  # the certain part of not_this, kept out of the answer (clicks' discs are not)

    def extent(self) -> Extent:
        """Where the prompts are (:func:`roi.prompt_extent`)."""
        return prompt_extent(self.stroke_box, self.box, self.earlier_box)


@dataclass(frozen=True)
class _Request:
    """One object's prompts as :meth:`Refiner._windows` takes them: its stroke (or, ``rough``, its rough mask)."""

    labels: np.ndarray
    negative: Any
    previous: Any  # an earlier answer, or with ``keep_previous`` a prior
    boxes: dict[Any, Any] | None
    hint: np.ndarray | None
    rough: bool = False
    keep_previous: bool = False


class Refiner:
    """SAM-predictor style: :meth:`set_image` once (intensity range), then :meth:`predict` per stroke.

    ``model`` is a bundled name, a checkpoint path or an ``nn.Module`` with ``.spec``.
    The image is kept by reference, not copied: don't modify it between predictions.
    A name or path runs through a copy with its batch norms folded (:mod:`models.folding`);
    a module passed in runs as it is, since its owner (a training run) may change its weights.
    """

    def __init__(self, model: ModelLike = "default", device: str | torch.device = "auto", threshold: float = 0.5):
        self.threshold = check_threshold(threshold)
        self.model = load_model(model, device)
        self._net = self.model if isinstance(model, nn.Module) else _inference_net(self.model)
        self.spec = self.model.spec
        here = module_device(self.model)
        self.device = here if here is not None else resolve_device(device)
        self._dtype = module_dtype(self.model)
        self._image: Any = None
        self._image_shape: tuple[int, ...] = ()
        self._range: tuple[np.ndarray, np.ndarray] | None = None

    def set_image(self, image: Any) -> None:
        """Validate the image and compute its robust per-channel intensity range, once."""
        view = channels_last(image)
        self._range = intensity_range(view)
        self._image, self._image_shape = view, tuple(np.shape(image))

    def predict(
        self,
        stroke: Any = None,
        *,
        clicks: Any = None,
        box: Any = None,
        negative: Any = None,
        previous: Any = None,
        prior: Any = None,
    ) -> np.ndarray:
        """Boolean H×W mask of one object: under ``stroke`` (all its nonzero pixels) and/or inside ``box``.

        ``box`` is ``(row0, col0, row1, col1)`` in image pixels, end-exclusive; a box alone is
        enough, a box plus strokes or clicks refines it. ``previous`` is an earlier answer being
        corrected (the new clicks win over it); ``prior`` is a rough mask of the object (painted
        edge to edge, a lasso, or carried from a neighbouring plane or frame), to be kept where
        the image agrees: an object-aware model refines the prior itself, in a window around it
        (no pass 1). Give one of the two. A prior alone is a rough mask: its core
        (:func:`seeds.seed_from_mask` by ``seeds.ROUGH_EROSION``) is then the stroke.

        ``clicks`` ((N, 3) ``(row, col, positive)``) are points: a positive click joins the stroke
        as a disc, a negative one is a "not this" disc for the network. ``negative`` pixels never
        join the answer; of a negative click only the clicked pixel is held out so, as its disc
        may reach into the object (``inputs.click_masks``).
        """
        out = np.zeros(self._image.shape[:2] if self._image is not None else (0, 0), bool)
        for _, window in self._one(stroke, box, negative, previous, prior, clicks):
            paste(out, window.prob > self.threshold, window.roi)
        return out

    def predict_proba(
        self,
        stroke: Any = None,
        *,
        clicks: Any = None,
        box: Any = None,
        negative: Any = None,
        previous: Any = None,
        prior: Any = None,
    ) -> np.ndarray:
        """float32 H×W object probability (0 outside the object's final window); arguments as :meth:`predict`."""
        out = np.zeros(self._image.shape[:2] if self._image is not None else (0, 0), np.float32)
        for _, window in self._one(stroke, box, negative, previous, prior, clicks):
            paste(out, window.prob, window.roi)
        return out

    def _one(
        self, stroke: Any, box: Any, negative: Any, previous: Any, prior: Any, clicks: Any = None
    ) -> list[tuple[Any, Window]]:
        """The windows of a single object given by a stroke, a box or both, or by a rough mask (a prior alone)."""
        return self._ask(self._request(stroke, box, negative, previous, prior, clicks))

    def _request(self, stroke: Any, box: Any, negative: Any, previous: Any, prior: Any, clicks: Any = None) -> _Request:
        """One object's prompts checked and drawn into the arguments :meth:`_windows` takes."""
        if self._image is None:
            raise ValueError("no image set: call Refiner.set_image(image) before predicting")
        stroke, negative, hint = self._with_clicks(stroke, negative, clicks)
        if stroke is None and box is None and prior is None and clicks is not None:
            raise ValueError(
                f"no positive click inside the image ({self._image.shape[0]}×{self._image.shape[1]} px): clicks are "
                '(row, col, positive) in pixels, and "not this" clicks alone do not say which object'
            )
        if stroke is None and box is None and prior is None:
            raise ValueError(
                "give a stroke, clicks, a box or a rough mask: predict(stroke) / predict(clicks=...) / "
                "predict(box=...) / predict(prior=mask)"
            )
        if previous is not None and prior is not None:
            raise ValueError(
                "give previous (an earlier answer to correct) or prior (a rough or carried mask), not both"
            )
        boxes = None if box is None else {None: box}
        if stroke is None and prior is not None:  # a rough mask: its core is the stroke
            return _Request(self._frame(prior, "prior"), negative, None, boxes, hint, rough=True)
        if stroke is None:
            stroke = np.zeros(self._image.shape[:2], bool)
        earlier = prior if prior is not None else previous
        return _Request(self._frame(stroke, "stroke"), negative, earlier, boxes, hint, keep_previous=prior is not None)

    def _ask(self, request: _Request) -> list[tuple[Any, Window]]:
        """A request's windows: a rough mask in rounds, anything else by the model's context rule."""
        r = request
        if r.rough:
            return self._rough_windows(r.labels, merge=True, negative=r.negative, boxes=r.boxes, hint=r.hint)
        return self._windows(
            r.labels,
            merge=True,
            negative=r.negative,
            previous=r.previous,
            boxes=r.boxes,
            keep_previous=r.keep_previous,
            hint=r.hint,
        )

    def _with_clicks(self, stroke: Any, negative: Any, clicks: Any) -> tuple[Any, Any, np.ndarray | None]:
        """``(stroke, negative, hint)`` with ``clicks`` drawn in: positive discs join the stroke, negative
        clicks' pixels the negative, and their discs are the hint (shown to the network, not held out)."""
        if clicks is None:
            return stroke, negative, None
        pos, discs, points = click_masks(clicks, self._image.shape[:2])
        if pos.any():
            stroke = pos if stroke is None else (self._frame(stroke, "stroke") != 0) | pos
        if not discs.any():
            return stroke, negative, None
        return stroke, either(None if negative is None else self._frame(negative, "negative"), points), discs

    def predict_labels(
        self, labels: Any, *, boxes: dict[int, Any] | None = None, rough: bool = False, negative: Any = None
    ) -> np.ndarray:
        """Each nonzero id refined as its own object, returned under that id in a new array.

        ``boxes`` (``{label_id: (row0, col0, row1, col1)}``) adds a box to an id's prompts, or
        makes an object of a box alone. With ``rough`` each id's pixels are a rough mask of the
        object, its ``prior`` (as in :meth:`predict`), not a stroke. ``negative`` marks pixels
        that belong to none of the objects (background strokes). With an object-aware model the
        other ids' strokes are each object's "not this" too: what was painted as one object is
        no part of another (rough masks may overlap at their edges, so they are not). Where
        refined objects overlap, the highest probability wins and ties go to the lower id, so
        the result does not depend on processing order.
        """
        labels = self._frame(labels, "labels")
        if labels.dtype.kind not in "biu":
            raise ValueError(f"labels must be an integer or boolean label image, got dtype {labels.dtype}")
        if rough:
            windows = self._rough_windows(labels, merge=False, negative=negative, boxes=boxes)
        else:
            windows = self._windows(labels, merge=False, negative=negative, boxes=boxes)
        return assigned(windows, labels.shape, labels.dtype, self.threshold)

    def predict_objects(self, objects: Mapping[int, Mapping[str, Any]]) -> np.ndarray:
        """Each id refined from its own prompts, returned under that id in one new label image.

        ``objects`` maps a label id to the keyword arguments of :meth:`predict` (``stroke``, ``clicks``,
        ``box``, ``negative``, ``previous``, ``prior``; a missing one is None): the widget's corrections,
        where each object has its own "not this" and earlier mask. Overlaps go as in :meth:`predict_labels`
        (highest probability, ties to the lower id), and each object costs its windows, not a full frame.
        """
        if self._image is None:
            raise ValueError("no image set: call Refiner.set_image(image) before predicting")
        bad = [k for k in objects if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0]
        if bad:
            raise ValueError(f"object ids must be positive integers (0 is background), got {bad}")
        requests = {}
        for value in sorted(objects):
            unknown = set(objects[value]) - set(PROMPTS)
            if unknown:
                raise ValueError(f"object {value}: unknown prompt(s) {sorted(unknown)}; expected some of {PROMPTS}")
            requests[value] = self._request(*[objects[value].get(name) for name in PROMPTS])
        batch = {v: r for v, r in requests.items() if self.spec.context == "object" and not r.rough}
        windows = self._batched(batch)
        for value, request in requests.items():
            if value not in batch:  # a rough mask (refined in rounds), or a study family's one stroke window
                windows.append((value, reduce(union, [window for _, window in self._ask(request)])))
        dtype = np.min_scalar_type(max(objects, default=0))
        return assigned(sorted(windows, key=lambda w: w[0]), self._image.shape[:2], dtype, self.threshold)

    def _batched(self, requests: dict[int, _Request]) -> list[tuple[Any, Window]]:
        """Object-aware windows of requests that are no rough masks, all objects of a pass in one batch.

        Each object keeps its own prompts; asked together they cost fewer, fuller forward passes than
        one object at a time (the widget's corrections of many nuclei). Priors skip pass 1: a group apart.
        """
        groups: dict[bool, list[_Object]] = {}
        for value, r in requests.items():
            neg, prev, hint = self._checked(r.negative, r.previous, r.boxes, False, r.hint)
            asked = self._object_prompts(r.labels, True, r.boxes or {}, prev, False, neg, hint)
            groups.setdefault(r.keep_previous, []).extend(replace(o, value=value) for o in asked)
        return [w for keep, group in groups.items() for w in self._object_run(group, keep_previous=keep)]

    def _rough_windows(
        self,
        labels: np.ndarray,
        *,
        merge: bool,
        negative: Any = None,
        boxes: dict[Any, Any] | None = None,
        hint: np.ndarray | None = None,
    ) -> list[tuple[Any, Window]]:
        """Rough masks refined ``ROUGH_ROUNDS`` times, each round's answers the next round's rough masks.

        An object whose answer came out empty (or lost to its neighbours) keeps its last windows.
        """
        windows = self._windows(labels, merge=merge, negative=negative, boxes=boxes, rough=True, hint=hint)
        for _ in range(ROUGH_ROUNDS - 1):
            answers = assigned(windows, labels.shape, bool if merge else labels.dtype, self.threshold)
            if not answers.any():
                break
            again = dict(self._windows(answers, merge=merge, negative=negative, boxes=boxes, rough=True, hint=hint))
            windows = [(value, again.get(value, window)) for value, window in windows]
        regions = dict(label_objects(labels, merge=merge))
        return [
            (value, within_reach(window, labels, regions[value], value, ROUGH_REACH) if value in regions else window)
            for value, window in windows
        ]

    def _frame(self, array: Any, name: str) -> np.ndarray:
        """A full-frame prompt as an array lined up with the image, or an error saying what was expected."""
        if self._image is None:
            raise ValueError("no image set: call Refiner.set_image(image) before predicting")
        array = np.asarray(array)
        check_numeric(array, name)
        h, w = self._image.shape[:2]
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be 2D (H×W), got shape {array.shape}; for the image of shape "
                f"{self._image_shape} expected ({h}, {w}); refine a volume one plane at a time"
            )
        if array.shape != (h, w):
            raise ValueError(
                f"image of shape {self._image_shape} and {name} of shape {array.shape} do not line up: "
                f"expected an image of shape {array.shape} (grayscale) or {(*array.shape, 'C')} (channels "
                f"last) for this {name}, or a {name} of shape {(h, w)} for this image"
            )
        return array

    def _prompt(self, array: Any, name: str, extra: str) -> np.ndarray | None:
        """An optional extra prompt; one the model has no input channel for is an error, not silently dropped."""
        if array is None:
            return None
        if extra not in self.spec.extras:
            raise ValueError(
                f"this model takes no {name} mask: its input recipe is image + {list(self.spec.extras)}; "
                f"use a model trained with {extra!r} in its extras"
            )
        return self._frame(array, name)

    def _windows(
        self,
        labels: np.ndarray,
        *,
        merge: bool,
        negative: Any = None,
        previous: Any = None,
        boxes: dict[Any, Any] | None = None,
        keep_previous: bool = False,
        rough: bool = False,
        hint: np.ndarray | None = None,
    ) -> list[tuple[Any, Window]]:
        """Every object's final probability window, by the model's context rule.

        ``keep_previous``: ``previous`` is a prior; ``rough``: each object's ``labels`` pixels are its prior;
        ``hint``: "not this" pixels the network is shown but the answer may keep (negative clicks' discs).
        """
        neg, prev, hint = self._checked(negative, previous, boxes, rough, hint)
        if self.spec.context == "object":
            objects = self._object_prompts(labels, merge, boxes or {}, prev, rough, neg, hint)
            return self._object_run(objects, keep_previous=keep_previous or rough)
        return self._stroke_windows(labels, merge=merge, neg=either(neg, hint), prev=prev)

    def _checked(
        self, negative: Any, previous: Any, boxes: dict[Any, Any] | None, rough: bool, hint: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """``(negative, previous, hint)`` lined up with the image; a prompt the model has no input for is an error."""
        neg, prev = self._prompt(negative, "negative", "neg"), self._prompt(previous, "previous", "prev")
        hint = self._prompt(hint, "negative click", "neg")
        if boxes and "box" not in self.spec.extras:
            raise ValueError(
                f"this model takes no box: its input recipe is image + {list(self.spec.extras)}; "
                "use an object-aware model (e.g. one of the lite0 family) or draw a stroke instead"
            )
        if rough and not takes_rough_masks(self.spec):
            raise ValueError(
                f"this model takes no rough mask: it needs an object-aware model with a 'prev' input, its input "
                f"recipe is image + {list(self.spec.extras)}; paint strokes inside the objects instead"
            )
        return neg, prev, hint

    def _object_run(self, objects: list[_Object], *, keep_previous: bool) -> list[tuple[Any, Window]]:
        """Objects' final windows: both passes (or pass 2 on a prior), left-out parts joined, "not this" held out."""
        windows = self._object_windows(objects, keep_previous)
        if not keep_previous:
            windows = self._with_left_out(objects, windows)
        excluded = {o.value: o.excluded for o in objects}
        return [(value, excluding(window, excluded[value])) for value, window in windows]

    def _with_left_out(self, objects: list[_Object], windows: list[tuple[Any, Window]]) -> list[tuple[Any, Window]]:
        """Each stroke part (a click, a separate stroke) that its object's answer left out, refined alone and joined in.

        A positive click says "this is the object", yet the model ignored about half of the corrective
        clicks of the standard protocol on held-out train images. Joining each ignored part's own answer
        (``scripts/heldout_probe.py clicks --objects 20 --rounds 10``, means of five sets): IoU after 5 clicks
        0.737 -> 0.757, after 10 0.744 -> 0.771, NoC@85 6.53 -> 6.34; it costs forwards only where a part is left out.
        A part's answer that reaches a "not this" pixel is not joined: asked without the earlier mask it can
        grow back what the user took away (``heldout_probe.py corrections``, a scribble then clicks on both
        kinds of error: IoU@5 / @10 / NoC@85 0.761 / 0.814 / 6.08 without joining, 0.762 / 0.807 / 5.92
        joining every part, 0.778 / 0.818 / 5.86 with this guard, 0.787 / 0.824 / 5.79 joining only the
        regions that hold the part; clicks as above).
        """
        pairs = zip(objects, windows, strict=True)
        extra = [part for obj, (_, window) in pairs for part in self._left_out(obj, window)]
        if not extra:
            return windows
        joined = dict(windows)
        for part, (value, window) in zip(extra, self._object_windows(extra), strict=True):
            held = self._part_answer(part, window)
            if held is not None:
                joined[value] = union(joined[value], held)
        return list(joined.items())

    def _part_answer(self, part: _Object, window: Window) -> Window | None:
        """What of a left-out part's own answer joins: the regions that hold the part; None if none or if it
        reaches a "not this" pixel. Blobs elsewhere in its window are the window's, not the click's."""
        answer = window.prob > self.threshold
        if part.not_this is not None and answer[crop(part.not_this, window.roi) != 0].any():
            return None
        regions, _ = ndi.label(answer, structure=_EIGHT)
        held = np.unique(regions[crop(part.pos, window.roi)])
        keep = np.isin(regions, held[held > 0])
        return Window(window.roi, np.where(keep, window.prob, 0).astype(np.float32)) if keep.any() else None

    def _left_out(self, obj: _Object, window: Window) -> list[_Object]:
        """The 8-connected parts of ``obj``'s stroke that no pixel of its answer touches, each as an object of its own.

        A lone part of an object with no earlier mask and no box would only be asked the same question again.
        """
        if obj.pos is None:
            return []
        y0, y1, x0, x1 = obj.stroke_box
        rows, cols = slice(y0, y1), slice(x0, x1)
        parts, n = ndi.label(np.asarray(obj.pos[rows, cols]) != 0, structure=_EIGHT)
        if n == 1 and obj.earlier is None and obj.box is None:
            return []
        touched = set(np.unique(parts[window.over(rows, cols) > self.threshold]).tolist())
        shape = self._image.shape[:2]
        out = []
        for k, (pr, pc) in enumerate(ndi.find_objects(parts), start=1):
            if k in touched:
                continue
            placed = Placed(parts[pr, pc] == k, y0 + pr.start, x0 + pc.start, shape)
            extent = (y0 + pr.start, y0 + pr.stop, x0 + pc.start, x0 + pc.stop)
            out.append(_Object(obj.value, placed, extent, None, not_this=obj.not_this, excluded=obj.excluded))
        return out

    def _object_prompts(
        self,
        labels: np.ndarray,
        merge: bool,
        boxes: dict[Any, Any],
        prev: np.ndarray | None,
        rough: bool,
        neg: np.ndarray | None,
        hint: np.ndarray | None = None,
    ) -> list[_Object]:
        """The objects to refine: each label id (or the merged stroke) and each boxed id, ascending.

        Each gets ``prev`` as its earlier mask or, when ``rough``, its own pixels (and their core as its stroke);
        its "not this" is ``neg``, with the other ids' strokes when they are strokes and the model takes a 'neg',
        and the network is also shown ``hint`` (kept out of ``excluded``, the pixels the answer may not hold).
        """
        shown = either(neg, hint)
        regions = dict(label_objects(labels, merge=merge)) if labels.any() or not boxes else {}
        seeds = seed_labels(labels, regions) if rough else labels
        checked = {k: check_box(b, labels.shape) for k, b in boxes.items()}
        prev_box = None if prev is None or not prev.any() else stroke_bbox(prev != 0)
        ids = sorted(set(regions) | set(checked), key=lambda v: (v is not None, v))
        others = not merge and not rough and len(ids) > 1 and strokes_exclude_each_other(self.spec)
        objects = []
        for value in ids:
            region = regions.get(value)
            extent = None if region is None else (region[0].start, region[0].stop, region[1].start, region[1].stop)
            pos = None if region is None else Selected(seeds, value)
            if rough and region is not None:
                earlier, earlier_box = Selected(labels, value), extent
            else:
                earlier, earlier_box = prev, prev_box
            not_this = NotThis(labels, value, shown) if others else shown
            excluded = not_this if hint is None else (NotThis(labels, value, neg) if others else neg)
            objects.append(_Object(value, pos, extent, checked.get(value), earlier, earlier_box, not_this, excluded))
        return objects

    def _object_windows(self, objects: list[_Object], keep_previous: bool = False) -> list[tuple[Any, Window]]:
        """Coarse to fine: grow each object's window until its mask stays inside, then refine the mask's box.

        With ``keep_previous`` each object's earlier mask is a prior (a rough mask, or one carried from
        a neighbouring plane): it already says where the object is, so pass 1 is skipped and pass 2
        refines the prior's box with the prior as its coarse mask. On held-out train images
        (``scripts/heldout_probe.py``, means of five sets) that beat pass 1's window: moved masks
        0.860 -> 0.868, clips from the true mask J 0.813 -> 0.835 (from a scribble 0.618 -> 0.621),
        rough masks level (coarse 0.807 both, lasso 0.741 -> 0.743), at one forward instead of two.
        Without a prior, pass 2's coarse mask is pass 1's answer: with corrective clicks the earlier
        answer must not be kept (IoU after 5 clicks on coco-mval 0.736 from pass 1's mask, 0.622 kept).
        """
        if keep_previous:
            return self._focused(objects, [focus_roi(o.extent()) for o in objects], [None] * len(objects))
        lo, hi = self._range
        shape = self._image.shape[:2]
        rois = [start_context(o.extent()) for o in objects]
        masks: list[np.ndarray] = [np.zeros(0)] * len(objects)
        active, step = list(range(len(objects))), 0
        while active:
            probs = self._forward([self._input(objects[i], rois[i], lo, hi) for i in active])
            still = []
            for i, prob in zip(active, probs, strict=True):
                masks[i] = prob
                grown = next_context(rois[i], prob > self.threshold, shape, step)
                if grown is not None:
                    rois[i] = grown
                    still.append(i)
            active, step = still, step + 1
        focus, coarse = [], []
        for o, roi, prob in zip(objects, rois, masks, strict=True):
            found = mask_box(prob > self.threshold, roi)
            focus.append(focus_roi(found if found is not None else o.extent()))
            coarse.append(resample_window(prob, roi, focus[-1], self.spec.working_size) > self.threshold)
        return self._focused(objects, focus, coarse)

    def _focused(
        self, objects: list[_Object], focus: list[ROI], coarse: list[np.ndarray | None]
    ) -> list[tuple[Any, Window]]:
        """Pass 2: each object's window ``focus`` with ``coarse`` as its earlier mask (None: its own earlier mask)."""
        lo, hi = self._range
        probs = self._forward(
            [self._input(o, r, lo, hi, coarse=c) for o, r, c in zip(objects, focus, coarse, strict=True)]
        )
        return [
            (o.value, Window(roi, resize_image(p, roi.size))) for o, roi, p in zip(objects, focus, probs, strict=True)
        ]

    def _input(
        self,
        obj: _Object,
        roi: ROI,
        lo: np.ndarray,
        hi: np.ndarray,
        *,
        coarse: np.ndarray | None = None,
    ) -> np.ndarray:
        """One object-aware window's input; ``coarse`` (pass 1's mask at working size) replaces its earlier mask."""
        prev = None if coarse is not None else obj.earlier
        x = window_input(self._image, roi, self.spec, lo, hi, pos=obj.pos, neg=obj.not_this, prev=prev, box=obj.box)
        if coarse is not None and "prev" in self.spec.extras:
            x[channel_of(self.spec, "prev")] = coarse
        return x

    def _stroke_windows(
        self, labels: np.ndarray, *, merge: bool, neg: np.ndarray | None, prev: np.ndarray | None
    ) -> list[tuple[Any, Window]]:
        """One window around each object's stroke (the study families' rule)."""
        lo, hi = self._range
        objects, inputs, rois = label_objects(labels, merge=merge), [], []
        for value, box in objects:
            select = selector(value)
            local = roi_from_stroke(select(labels[box]), margin=self.spec.roi_margin)
            roi = ROI(local.y0 + box[0].start, local.x0 + box[1].start, local.size)
            rows, cols, _, _ = roi.clipped(labels.shape)
            # The window's in-image part, with the prompts cut alike: prepare_window then finds
            # the same ROI (shifted) and the same overhang as on the full frame, at window cost.
            x, _ = prepare_window(
                np.asarray(self._image[rows, cols]),
                select(labels[rows, cols]),
                self.spec,
                lo,
                hi,
                neg=None if neg is None else neg[rows, cols] != 0,
                prev=None if prev is None else prev[rows, cols] != 0,
            )
            inputs.append(x)
            rois.append(roi)
        probs = self._forward(inputs)
        return [
            (value, Window(roi, resize_image(p, roi.size)))
            for (value, _), roi, p in zip(objects, rois, probs, strict=True)
        ]

    def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Sigmoid probabilities (S×S each) for all windows, in batches of at most ``_BATCH``."""
        probs: list[np.ndarray] = []
        with evaluating(self._net):
            for start in range(0, len(inputs), _BATCH):
                batch = torch.from_numpy(np.stack(inputs[start : start + _BATCH])).to(self.device, self._dtype)
                batch = batch.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
                logits = self._net(batch)
                expected = (batch.shape[0], 1, *batch.shape[2:])
                if tuple(logits.shape) != expected:
                    raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}, expected {expected}")
                probs.extend(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
        return probs


def refine(
    image: Any,
    stroke: Any = None,
    *,
    clicks: Any = None,
    rough: bool = False,
    negative: Any = None,
    model: ModelLike = "default",
    device: str = "auto",
    threshold: float = 0.5,
) -> np.ndarray:
    """Boolean H×W mask of the object under a 2D stroke (nonzero = stroke) and/or clicks on a 2D image.

    With ``rough`` the "stroke" is a rough mask of the whole object (``Refiner.predict(prior=...)``).
    ``clicks`` ((N, 3) ``(row, col, positive)``) and ``negative`` ("not this" strokes, nonzero pixels)
    as :meth:`Refiner.predict` takes them.
    """
    refiner = Refiner(model, device, threshold)
    refiner.set_image(image)
    if rough:
        return refiner.predict(prior=stroke, clicks=clicks, negative=negative)
    return refiner.predict(stroke, clicks=clicks, negative=negative)


def refine_labels(
    image: Any,
    labels: Any,
    *,
    boxes: dict[int, Any] | None = None,
    rough: bool = False,
    negative: Any = None,
    model: ModelLike = "default",
    device: str = "auto",
    threshold: float = 0.5,
) -> np.ndarray:
    """Every nonzero id of ``labels`` and each ``boxes`` id refined as its own object (``Refiner.predict_labels``)."""
    refiner = Refiner(model, device, threshold)
    refiner.set_image(image)
    return refiner.predict_labels(labels, boxes=boxes, rough=rough, negative=negative)
