"""Find and load a refiner: a bundled name (``weights/<name>.pt``), a checkpoint path or a module.

Loading is its own job because the engine, the widget's model picker, finetuning, training's
teacher and the CLI all resolve models the same way; each file version is loaded once per device.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from napari_segmentello.devices import module_device, resolve_device

__all__ = ["WEIGHTS_DIR", "ModelLike", "list_models", "load_model"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
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
