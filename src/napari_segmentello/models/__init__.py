"""Segmentation networks: U-Net families, an optional CSPN head, and the name -> spec registry.

>>> model = build_model("res16-32")                    # registry name
>>> model = build_model("tiny16-32+cspn", image_channels=1, extras=("pos", "grad"))
>>> model.spec.in_channels
3
"""

from __future__ import annotations

from typing import Any

from napari_segmentello.models.registry import ModelSpec, available_models, get_spec, with_overrides
from napari_segmentello.models.unet import UNet

__all__ = ["ModelSpec", "UNet", "available_models", "build_model", "get_spec"]


def build_model(name_or_spec: str | ModelSpec, **overrides: Any) -> UNet:
    """A freshly initialised network (train mode) for a registry name or a spec; ``overrides`` are spec fields."""
    if isinstance(name_or_spec, ModelSpec):
        return UNet(with_overrides(name_or_spec, **overrides))
    if isinstance(name_or_spec, str):
        return UNet(get_spec(name_or_spec, **overrides))
    raise ValueError(f"build_model expects a model name or a ModelSpec, got {type(name_or_spec).__name__}")
