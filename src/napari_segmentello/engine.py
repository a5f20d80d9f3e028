"""Inference: strokes on a 2D image -> refined masks (the public API behind ``napari_segmentello``).

Each object is cut out as a window around its stroke (:func:`inputs.prepare_window`,
the same function training uses), all windows go through the network in one batch,
and each probability window is resized back and pasted into a full-frame result.
Only windows are converted to float, so time and memory follow the objects, not
the image size; a dask/zarr image is read as one strided sample (its intensity
range, once per image) and then only the windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_segmentello.devices import evaluating, module_device, module_dtype, resolve_device
from napari_segmentello.inputs import intensity_range, prepare_window
from napari_segmentello.roi import ROI, paste, resize_image, roi_from_stroke

__all__ = ["Refiner", "list_models", "load_model", "refine", "refine_labels", "resolve_device"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_BATCH = 64  # windows per forward pass: bounds memory when a labels layer holds hundreds of objects
_NUMERIC = "biuf"

ModelLike = str | os.PathLike | nn.Module


def list_models() -> list[str]:
    """Names of the bundled weights (``weights/<name>.pt``), ``"default"`` first."""
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    return sorted(names, key=lambda n: n != "default")


def _checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """A bundled name or an existing file; otherwise an error that says what to pass instead."""
    name = os.fspath(name_or_path)
    if not isinstance(name_or_path, os.PathLike) and name in list_models():
        return WEIGHTS_DIR / f"{name}.pt"
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if name == "default":
        raise ValueError(
            "no bundled weights 'default' found; train them with `python -m training.run ...` "
            "or pass a checkpoint path (model='path/to/checkpoint.pt')"
        )
    raise KeyError(
        f"unknown model {name!r}: it is neither a bundled model nor an existing checkpoint file; "
        f"bundled models: {list_models()}; to use your own weights pass the path of a checkpoint "
        "file, e.g. model='path/to/checkpoint.pt'"
    )


@lru_cache(maxsize=8)
def _load_checkpoint_model(path: str, mtime_ns: int, size: int, device: str) -> nn.Module:
    """One loaded module per (file version, device); the file's stamp makes a retrained file reload."""
    from napari_segmentello.checkpoint import load_model_from_checkpoint

    return load_model_from_checkpoint(path, device=device)


def load_model(name_or_path: ModelLike, device: str | torch.device = "auto") -> nn.Module:
    """The eval-mode module for a bundled name or checkpoint path, cached per (file, device).

    An ``nn.Module`` with a ``.spec`` is returned as is; with an explicit ``device`` it is
    moved there (``Module.to`` moves in place), with ``"auto"`` it stays where it is.
    """
    if isinstance(name_or_path, nn.Module):
        if not hasattr(name_or_path, "spec"):
            raise ValueError(
                "a model passed as an nn.Module needs a `.spec` (napari_segmentello.models.ModelSpec) "
                "describing its input recipe; build it with napari_segmentello.models.build_model"
            )
        here = module_device(name_or_path)
        if device != "auto" or here is None:
            target = resolve_device(device)
            if here is not None and here != target:
                name_or_path.to(target)
        return name_or_path
    if not isinstance(name_or_path, str | os.PathLike):
        raise ValueError(f"model must be a bundled name, a checkpoint path or an nn.Module, got {type(name_or_path)}")
    path = _checkpoint_path(name_or_path)
    stat = path.stat()
    return _load_checkpoint_model(str(path), stat.st_mtime_ns, stat.st_size, str(resolve_device(device)))


class _WithChannelAxis:
    """A 2D (possibly lazy) array seen as H×W×1; only what is indexed gets read."""

    def __init__(self, array: Any) -> None:
        self._array = array
        self.shape = (*array.shape, 1)
        self.ndim = 3
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        return np.asarray(self._array[key])[..., None]


def _check_numeric(array: Any, what: str) -> None:
    if np.dtype(array.dtype).kind not in _NUMERIC:
        raise ValueError(f"{what} must hold numbers or booleans, got dtype {array.dtype}")


def _channels_last(image: Any) -> Any:
    """H×W -> H×W×1 view; H×W×C kept. No copy: numpy, dask and zarr arrays stay lazy."""
    if not all(hasattr(image, a) for a in ("shape", "dtype", "ndim", "__getitem__")):
        image = np.asarray(image)
    _check_numeric(image, "image")
    if image.ndim == 2:
        return _WithChannelAxis(image)
    if image.ndim == 3 and image.shape[2] > 0:
        return image
    raise ValueError(
        f"image must be 2D: H×W (grayscale) or H×W×C (channels last), got shape {tuple(image.shape)}; "
        "for a volume or a time series pass one plane at a time"
    )


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    return float(threshold)


def _box(rows: np.ndarray, cols: np.ndarray) -> tuple[slice, slice]:
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


def _objects(labels: np.ndarray, *, merge: bool) -> list[tuple[Any, tuple[slice, slice]]]:
    """(label id, bounding box) per nonzero id; ``merge`` makes all nonzero pixels one object (id None).

    Strokes are sparse, so the nonzero pixels are grouped once rather than the
    frame scanned per id (and any id value works, unlike ``ndimage.find_objects``).
    """
    flat = np.flatnonzero(labels)
    if flat.size == 0:
        what = "stroke" if merge else "label image"
        raise ValueError(f"the {what} is empty (all zeros): paint at least one pixel over the object")
    rows, cols = np.divmod(flat, labels.shape[1])
    if merge:
        return [(None, _box(rows, cols))]
    values = labels[rows, cols]
    order = np.argsort(values, kind="stable")
    values, rows, cols = values[order], rows[order], cols[order]
    ids, starts = np.unique(values, return_index=True)
    ends = [*starts[1:], values.size]
    return [(i, _box(rows[s:e], cols[s:e])) for i, s, e in zip(ids, starts, ends, strict=True)]


def _selector(value: Any) -> Callable[[np.ndarray], np.ndarray]:
    return (lambda a: a != 0) if value is None else (lambda a: a == value)


@dataclass(frozen=True)
class _Window:
    """One object's probability map over its ROI (roi.size × roi.size, float32)."""

    roi: ROI
    prob: np.ndarray

    def over(self, rows: slice, cols: slice) -> np.ndarray:
        """This window's probabilities on the image region (rows, cols); 0 where it does not reach."""
        region = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.float32)
        return paste(region, self.prob, ROI(self.roi.y0 - rows.start, self.roi.x0 - cols.start, self.roi.size))


class Refiner:
    """SAM-predictor style: :meth:`set_image` once (intensity range), then :meth:`predict` per stroke.

    ``model`` is a bundled name, a checkpoint path or an ``nn.Module`` with ``.spec``.
    The image is kept by reference, not copied: don't modify it between predictions.
    """

    def __init__(self, model: ModelLike = "default", device: str | torch.device = "auto", threshold: float = 0.5):
        self.threshold = _check_threshold(threshold)
        self.model = load_model(model, device)
        self.spec = self.model.spec
        here = module_device(self.model)
        self.device = here if here is not None else resolve_device(device)
        self._dtype = module_dtype(self.model)
        self._image: Any = None
        self._image_shape: tuple[int, ...] = ()
        self._range: tuple[np.ndarray, np.ndarray] | None = None

    def set_image(self, image: Any) -> None:
        """Validate the image and compute its robust per-channel intensity range, once."""
        view = _channels_last(image)
        self._range = intensity_range(view)
        self._image, self._image_shape = view, tuple(np.shape(image))

    def predict(self, stroke: Any, *, negative: Any = None, previous: Any = None) -> np.ndarray:
        """Boolean H×W mask of the object under ``stroke`` (all its nonzero pixels are one object)."""
        stroke = self._frame(stroke, "stroke")
        out = np.zeros(stroke.shape, bool)
        for _, window in self._windows(stroke, merge=True, negative=negative, previous=previous):
            paste(out, window.prob > self.threshold, window.roi)
        return out

    def predict_proba(self, stroke: Any, *, negative: Any = None, previous: Any = None) -> np.ndarray:
        """float32 H×W object probability (0 outside the stroke's window)."""
        stroke = self._frame(stroke, "stroke")
        out = np.zeros(stroke.shape, np.float32)
        for _, window in self._windows(stroke, merge=True, negative=negative, previous=previous):
            paste(out, window.prob, window.roi)
        return out

    def predict_labels(self, labels: Any) -> np.ndarray:
        """Each nonzero id refined as its own object, returned under that id in a new array.

        Where refined objects overlap, the highest probability wins and ties go to
        the lower id, so the result does not depend on processing order.
        """
        labels = self._frame(labels, "labels")
        if labels.dtype.kind not in "biu":
            raise ValueError(f"labels must be an integer or boolean label image, got dtype {labels.dtype}")
        out = np.zeros(labels.shape, labels.dtype)
        placed: dict[Any, _Window] = {}
        for value, window in self._windows(labels, merge=False):  # ascending ids
            rows, cols, wy, wx = window.roi.clipped(out.shape)
            prob = window.prob[wy, wx]
            claim = prob > self.threshold
            current = out[rows, cols]
            rival = np.zeros_like(prob)
            for other in np.unique(current[claim & (current != 0)]):
                held = current == other
                rival[held] = placed[other].over(rows, cols)[held]
            current[claim & ((current == 0) | (prob > rival))] = value
            placed[value] = window
        return out

    def _frame(self, array: Any, name: str) -> np.ndarray:
        """A full-frame prompt as an array lined up with the image, or an error saying what was expected."""
        if self._image is None:
            raise ValueError("no image set: call Refiner.set_image(image) before predicting")
        array = np.asarray(array)
        _check_numeric(array, name)
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
        self, labels: np.ndarray, *, merge: bool, negative: Any = None, previous: Any = None
    ) -> list[tuple[Any, _Window]]:
        """Cut, batch-predict and resize back every object's window."""
        neg, prev = self._prompt(negative, "negative", "neg"), self._prompt(previous, "previous", "prev")
        lo, hi = self._range
        objects, inputs, rois = _objects(labels, merge=merge), [], []
        for value, box in objects:
            select = _selector(value)
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
            (value, _Window(roi, resize_image(p, roi.size)))
            for (value, _), roi, p in zip(objects, rois, probs, strict=True)
        ]

    def _forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Sigmoid probabilities (S×S each) for all windows, in batches of at most ``_BATCH``."""
        probs: list[np.ndarray] = []
        with evaluating(self.model):
            for start in range(0, len(inputs), _BATCH):
                batch = torch.from_numpy(np.stack(inputs[start : start + _BATCH])).to(self.device, self._dtype)
                logits = self.model(batch)
                expected = (batch.shape[0], 1, *batch.shape[2:])
                if tuple(logits.shape) != expected:
                    raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}, expected {expected}")
                probs.extend(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
        return probs


def refine(
    image: Any, stroke: Any, *, model: ModelLike = "default", device: str = "auto", threshold: float = 0.5
) -> np.ndarray:
    """Boolean H×W mask of the object under a 2D stroke (nonzero = stroke) on a 2D image."""
    refiner = Refiner(model, device, threshold)
    refiner.set_image(image)
    return refiner.predict(stroke)


def refine_labels(
    image: Any, labels: Any, *, model: ModelLike = "default", device: str = "auto", threshold: float = 0.5
) -> np.ndarray:
    """Every nonzero id of ``labels`` refined as its own object, in one batch (see :meth:`Refiner.predict_labels`)."""
    refiner = Refiner(model, device, threshold)
    refiner.set_image(image)
    return refiner.predict_labels(labels)
