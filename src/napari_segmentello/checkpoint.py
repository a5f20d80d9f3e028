"""Checkpoint files: one ``torch.save`` of a plain dict that ``torch.load(weights_only=True)`` accepts.

A checkpoint carries the :class:`~napari_segmentello.models.ModelSpec` (architecture
*and* input recipe), the weights, provenance (where the weights came from),
metrics, and an ``extra`` dict (training keeps optimizer state and epoch there to
resume). Only tensors, str, int, float, bool, None, lists, tuples and dicts are
stored, so loading never runs pickled code from the file.
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_segmentello.models import ModelSpec, build_model

FORMAT = "napari-segmentello-checkpoint"
FORMAT_VERSION = 1
# half=True rounds each weight by a relative 2**-11 at most. Documented bound on how far
# probabilities move (tests/test_checkpoint.py checks it; briefly trained registry models
# moved by < 1e-4). Check real trained weights against it before shipping them in half.
HALF_PROB_ATOL = 1e-3


@dataclass
class Checkpoint:
    """The contents of a checkpoint file; floating tensors in ``state_dict`` are float32 here."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    path: Path | None = None


def _plain(value: Any, where: str) -> Any:
    """``value`` as types ``weights_only`` loading accepts; numpy scalars and paths are converted.

    Anything else (arrays, custom objects) is a ValueError naming where it sits, raised
    before any file is written.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None:
        return value
    if isinstance(value, np.generic):
        value = value.item()
    for kind in (bool, int, float, str):  # exact builtins: subclasses would pickle as their class
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            plain_key = _plain(key, f"a key of {where}")
            if not isinstance(plain_key, str | int):
                raise ValueError(f"{where} has a key {key!r} of type {type(key).__name__}; use str or int keys")
            out[plain_key] = _plain(v, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise ValueError(
        f"{where} holds a {type(value).__name__}, which a checkpoint cannot store; "
        "use tensors, str, int, float, bool, None, lists, tuples or dicts"
    )


def default_provenance() -> dict[str, Any]:
    """What every checkpoint records about its making; callers add training data and config."""
    from napari_segmentello import __version__

    return {
        "package_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` (which must have a ``.spec``) to ``path`` atomically and return the path.

    The file is written beside ``path`` and moved into place with ``os.replace``, so
    a crash mid-save leaves the previous file intact. ``half=True`` stores floating
    weights as float16 (half the size; probabilities move by < ``HALF_PROB_ATOL``).
    """
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise ValueError("save_checkpoint needs a model with a `.spec` ModelSpec; build it with models.build_model")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": _plain(spec.to_dict(), "spec"),
        "state_dict": state,
        "provenance": _plain({**default_provenance(), **(provenance or {})}, "provenance"),
        "metrics": _plain(dict(metrics or {}), "metrics"),
        "extra": _plain(dict(extra or {}), "extra"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would make shared or bundled weights unreadable to others
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _mismatch(spec: ModelSpec, state: dict[str, torch.Tensor]) -> list[str]:
    """Differences between ``state`` and the parameters/buffers a model built from ``spec`` has."""
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: shape {tuple(state[k].shape)} != {shape}"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    return problems


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; anything that is not a usable one is a ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as err:  # any parse failure means a corrupt, truncated or unsafe file
        raise ValueError(
            f"{path} is not a readable napari-segmentello checkpoint: it is truncated or corrupt, not a "
            "torch file, or holds objects other than tensors and plain data (refused so that no code "
            f"from the file runs); {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is a torch file but not a napari-segmentello checkpoint (no {FORMAT!r} marker)")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has an invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses checkpoint format {version}, newer than this napari-segmentello reads "
            f"({FORMAT_VERSION}); upgrade napari-segmentello"
        )
    try:
        spec = ModelSpec.from_dict(payload.get("spec"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} holds an invalid model spec: {err}") from err
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} has no valid state_dict (a dict of tensors)")
    problems = _mismatch(spec, state)
    if problems:
        raise ValueError(f"{path}: state_dict does not match its spec {spec.name or spec.family!r}: {problems[:5]}")
    state = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
    sections = {}
    for key in ("provenance", "metrics", "extra"):
        sections[key] = payload.get(key, {})
        if not isinstance(sections[key], dict):
            raise ValueError(f"{path}: {key} must be a dict, got {type(sections[key]).__name__}")
    return Checkpoint(spec=spec, state_dict=state, format_version=version, path=path, **sections)


def load_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The network stored at ``path``, in eval mode on ``device``, with ``.spec`` and ``.checkpoint`` set."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.spec)
    model.load_state_dict(checkpoint.state_dict)
    model.checkpoint = checkpoint
    return model.to(device).eval()
