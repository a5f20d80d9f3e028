"""Finetuning on the user's own finished labels: a few minutes that adapt a model to their images.

The user's objects become training samples exactly as the original model's were made
(:func:`napari_segmentello.samples.make_sample`: simulated stroke, the engine's window,
correction rounds when the model takes a negative stroke and a previous mask), with the
stroke protocol, loss and correction share the model was trained with when its checkpoint
records them. Training runs for a fixed wall-clock budget at a small learning rate, so the
model moves towards the new images without forgetting what it knew, and the result is saved
as a new checkpoint that loads like any other (``load_model(path)``, ``Refiner(path)``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.devices import resolve_device
from napari_segmentello.inputs import intensity_range
from napari_segmentello.loader import ModelLike, load_model
from napari_segmentello.losses import make_loss
from napari_segmentello.models import ModelSpec, build_model
from napari_segmentello.samples import make_sample
from napari_segmentello.strokes import PROTOCOLS

__all__ = ["Adapted", "FinetuneCancelled", "ObjectSet", "adapt", "collect_objects", "finetune", "make_batch"]

MIN_AREA = 16  # px: smaller labels are brush slips, not objects (training itself skips < 64)
FALLBACK_CORRECTION_PROB = 0.25  # share of correction rounds when the source does not record its own
FALLBACK_LOSS = "bce-dice"
FALLBACK_PROTOCOL = dict.fromkeys(PROTOCOLS, 1.0)  # every way people paint, equally
LOSS_WINDOW = 20  # steps averaged for the reported training loss


class FinetuneCancelled(RuntimeError):
    """``should_stop()`` asked to stop: nothing was saved."""


@dataclass(frozen=True)
class _Plane:
    image: np.ndarray  # H×W×C
    labels: np.ndarray  # H×W integer ids
    lo: np.ndarray
    hi: np.ndarray


@dataclass(frozen=True)
class ObjectSet:
    """The user's objects: planes (image, labels, intensity range) and one (plane, label id) per object."""

    planes: list[_Plane]
    objects: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.objects)

    def mask(self, i: int) -> np.ndarray:
        """Full-frame bool mask of object ``i`` (made on demand: one frame per object would not fit in memory)."""
        plane, value = self.objects[i]
        return self.planes[plane].labels == value


def _planes_of(image: Any, labels: Any, where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(H×W×C image, H×W labels) copies of one pair's planes: a 2D pair, or each plane of a stack."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.dtype.kind not in "biuf":
        raise ValueError(f"{where}: image must hold numbers, got dtype {image.dtype}")
    if labels.dtype.kind not in "biu":
        raise ValueError(f"{where}: labels must be an integer label image, got dtype {labels.dtype}")
    if labels.ndim == 2 and image.ndim in (2, 3) and image.shape[:2] == labels.shape:
        stack_image, stack_labels = image[None], labels[None]
    elif labels.ndim == 3 and image.ndim in (3, 4) and image.shape[:3] == labels.shape:
        stack_image, stack_labels = image, labels
    else:
        raise ValueError(
            f"{where}: image of shape {image.shape} and labels of shape {labels.shape} do not line up; "
            "expected image (H, W) or (H, W, C) with labels (H, W), or a stack (Z, H, W[, C]) with labels (Z, H, W)"
        )
    for plane_image, plane_labels in zip(stack_image, stack_labels, strict=True):
        if plane_labels.any():
            img = plane_image if plane_image.ndim == 3 else plane_image[..., None]
            yield np.array(img), np.array(plane_labels)  # snapshots: the layers may be edited meanwhile


def collect_objects(pairs: Sequence[tuple[Any, Any]], min_area: int = MIN_AREA) -> ObjectSet:
    """Every labelled object (each nonzero id of each plane, at least ``min_area`` px) of ``(image, labels)`` pairs."""
    planes: list[_Plane] = []
    objects: list[tuple[int, int]] = []
    for n, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(f"pairs[{n}] must be an (image, labels) pair, got {type(pair).__name__}")
        for image, labels in _planes_of(*pair, where=f"pairs[{n}]"):
            ids, areas = np.unique(labels[labels != 0], return_counts=True)
            kept = [int(i) for i, a in zip(ids, areas, strict=True) if a >= min_area]
            if kept:
                objects += [(len(planes), i) for i in kept]
                planes.append(_Plane(image, labels, *intensity_range(image)))
    if not objects:
        raise ValueError(
            f"no labelled objects to finetune on: the labels hold no object of at least {min_area} pixels; "
            "paint and refine some objects first"
        )
    return ObjectSet(planes, objects)


def make_batch(
    data: ObjectSet,
    indices: Sequence[int],
    spec: ModelSpec,
    protocol: str | dict[str, float],
    rng: np.random.Generator,
    correction_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors (N×C×S×S, N×1×S×S) for objects ``indices``, sampled as training samples them."""
    xs, ys = [], []
    for i in indices:
        plane = data.planes[data.objects[i][0]]
        correction = correction_prob > 0 and rng.random() < correction_prob
        sample = make_sample(
            plane.image, data.mask(i), spec, protocol, rng, lo=plane.lo, hi=plane.hi, correction=correction
        )
        xs.append(sample.x)
        ys.append(sample.y[None].astype(np.float32))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _order(n: int, seed: int) -> Iterator[int]:
    """Object indices, one seeded permutation after another: every object seen as often as the others."""
    epoch = 0
    while True:
        yield from np.random.default_rng([seed, epoch]).permutation(n).tolist()
        epoch += 1


def _source(model: ModelLike) -> tuple[nn.Module, str, dict[str, Any], bool]:
    """A trainable copy of ``model``, what it was, its provenance, and whether its file stores float16."""
    loaded = load_model(model, "cpu") if not isinstance(model, nn.Module) else load_model(model)
    net = build_model(loaded.spec)
    net.load_state_dict({k: v.detach().cpu() for k, v in loaded.state_dict().items()})
    ckpt = getattr(loaded, "checkpoint", None)
    if ckpt is None or ckpt.path is None:
        return net, type(model).__name__ if isinstance(model, nn.Module) else str(model), {}, False
    stored = torch.load(ckpt.path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    half = any(v.dtype == torch.float16 for v in stored.values())
    name = os.fspath(model) if isinstance(model, str | os.PathLike) else str(ckpt.path)
    return net, name, dict(ckpt.provenance), half


def _recipe(provenance: dict[str, Any]) -> dict[str, Any]:
    """The training choices a source checkpoint records: a training run's config or an earlier finetune's."""
    recipe = provenance.get("finetune") or provenance.get("config") or {}
    return recipe if isinstance(recipe, dict) else {}


def _check_settings(minutes: float, batch_size: int, lr: float) -> None:
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a positive number, got {minutes!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


@dataclass
class Adapted:
    """A finetuned copy of a model, still in memory, with what it came from and how it was trained."""

    net: nn.Module
    source: str
    provenance: dict[str, Any]  # the source checkpoint's
    half: bool  # the source file stores float16
    objects: ObjectSet
    record: dict[str, Any]  # the training choices, as a checkpoint's "finetune" entry
    losses: list[float]


def adapt(
    pairs: Sequence[tuple[Any, Any]],
    *,
    model: ModelLike = "default",
    minutes: float = 2.0,
    device: str = "auto",
    protocol: str | dict[str, float] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    lr: float = 1e-4,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Adapted:
    """A copy of ``model`` finetuned in memory on ``(image, labels)`` pairs for ``minutes``; ``model`` is untouched.

    What :func:`finetune` trains before saving, and how :func:`propagate.propagate` adapts the model
    to a stack's start plane. ``protocol`` defaults to the one the source model was trained with
    (all protocols equally if unrecorded); ``progress(step, total_steps_estimate, loss)`` follows
    each step and ``should_stop()`` comes before each, a True answer raising :class:`FinetuneCancelled`.
    At least one step is always taken.
    """
    _check_settings(minutes, batch_size, lr)
    data = collect_objects(pairs)
    net, source, provenance, half = _source(model)
    recipe = _recipe(provenance)
    protocol = protocol if protocol is not None else recipe.get("protocol", FALLBACK_PROTOCOL)
    loss_name = recipe.get("loss", FALLBACK_LOSS)
    takes_corrections = {"neg", "prev"} <= set(net.spec.extras)
    correction_prob = float(recipe.get("correction_prob", FALLBACK_CORRECTION_PROB)) if takes_corrections else 0.0
    loss_fn = make_loss(loss_name)
    dev = resolve_device(device)
    net.to(dev).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr)
    order = _order(len(data), seed)
    budget = minutes * 60.0
    losses: list[float] = []
    start = time.monotonic()
    while not losses or time.monotonic() - start < budget:
        if should_stop is not None and should_stop():
            raise FinetuneCancelled(f"finetuning stopped after {len(losses)} steps; nothing was saved")
        step = len(losses)
        indices = [next(order) for _ in range(batch_size)]
        x, y = make_batch(data, indices, net.spec, protocol, np.random.default_rng([seed, step]), correction_prob)
        loss = loss_fn(net(x.to(dev)), y.to(dev))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        if progress is not None:
            elapsed = time.monotonic() - start
            progress(step + 1, max(step + 1, round((step + 1) * budget / max(elapsed, 1e-9))), losses[-1])
    net.eval()
    record = {
        "protocol": protocol,
        "loss": loss_name,
        "correction_prob": correction_prob,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    return Adapted(net, source, provenance, half, data, record, losses)


def finetune(
    pairs: Sequence[tuple[Any, Any]],
    *,
    out: str | os.PathLike,
    model: ModelLike = "default",
    minutes: float = 2.0,
    **settings: Any,
) -> Path:
    """Finetune ``model`` on ``(image, labels)`` pairs for ``minutes`` of wall-clock time; returns ``out``.

    ``pairs``: 2D images (H×W or H×W×C) with integer labels (H×W, each nonzero id one
    object), or stacks (Z×H×W[×C] with Z×H×W labels) whose labelled planes each count
    as an image. ``settings`` are :func:`adapt`'s: ``device``, ``protocol`` (default: the one
    the source model was trained with, all protocols equally if unrecorded), ``seed``,
    ``batch_size``, ``lr``, ``progress(step, total_steps_estimate, loss)`` after each step and
    ``should_stop()`` before each, a True answer raising :class:`FinetuneCancelled` without
    writing anything. At least one step is always taken. The checkpoint keeps the source's
    precision (float16 if it was stored so).
    """
    done = adapt(pairs, model=model, minutes=minutes, **settings)
    data = done.objects
    return save_checkpoint(
        out,
        done.net,
        provenance={
            "finetuned_from": done.source,
            "objects": len(data),
            "minutes": minutes,
            "steps": len(done.losses),
            "data": f"user labels ({len(data)} objects on {len(data.planes)} planes)",
            "finetune": done.record,
            "source_provenance": done.provenance,
        },
        metrics={"train_loss": float(np.mean(done.losses[-LOSS_WINDOW:]))},
        half=done.half,
    )
