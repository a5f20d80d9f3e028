"""Segmentation networks: U-Net families, an optional CSPN head, the object-aware ``lite0`` family, the registry.

>>> model = build_model("res16-32")                    # registry name
>>> model = build_model("tiny16-32+cspn", image_channels=1, extras=("pos", "grad"))
>>> model.spec.in_channels
3
"""

from __future__ import annotations

from typing import Any

from torch import nn

from napari_segmentello.models.object_net import ObjectNet
from napari_segmentello.models.registry import ModelSpec, available_models, get_spec, with_overrides
from napari_segmentello.models.unet import UNet

__all__ = ["ModelSpec", "ObjectNet", "UNet", "available_models", "build_model", "get_spec"]


def build_model(name_or_spec: str | ModelSpec, **overrides: Any) -> nn.Module:
    """A freshly initialised network (train mode) for a registry name or a spec; ``overrides`` are spec fields.

    ``lite0`` encoders start random here; :meth:`EfficientNetLite0.load_pretrained` loads ImageNet weights
    (training does), a checkpoint loads its own.
    """
    if isinstance(name_or_spec, ModelSpec):
        spec = with_overrides(name_or_spec, **overrides)
    elif isinstance(name_or_spec, str):
        spec = get_spec(name_or_spec, **overrides)
    else:
        raise ValueError(f"build_model expects a model name or a ModelSpec, got {type(name_or_spec).__name__}")
    return ObjectNet(spec) if spec.family == "lite0" else UNet(spec)
