"""The object-aware refiner: ImageNet-pretrained EfficientNet-Lite0 encoder, prompt fusion, U-Net decoder.

Input is the usual recipe tensor (RGB centred at 0 then the prompt planes named in
``spec.extras``); output is one-channel logits at the input's size, like the U-Nets,
so the engine, training and checkpoints treat every family alike.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_segmentello.models.decoder import Decoder
from napari_segmentello.models.efficientnet import STEM_CHANNELS, EfficientNetLite0
from napari_segmentello.models.prompt_fusion import PromptFusion, prompt_pyramid
from napari_segmentello.models.registry import ModelSpec


class ObjectNet(nn.Module):
    """(N, 3 + len(extras), H, W) -> logits (N, 1, H, W); the encoder's depth is ``2 ** len(spec.widths)``."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        prompts = len(spec.extras)
        self.encoder = EfficientNetLite0(max_stride=2 ** len(spec.widths))
        self.fusion = PromptFusion(prompts, STEM_CHANNELS)
        self.decoder = Decoder(self.encoder.channels, self.encoder.strides, spec.widths, prompts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels or not x.is_floating_point():
            raise ValueError(
                f"expected a float tensor of shape (N, {self.spec.in_channels}, H, W) for model "
                f"{self.spec.name or self.spec.family!r}, got {x.dtype} {tuple(x.shape)}"
            )
        image, prompts = x[:, :3], x[:, 3:]
        rgb = image * 2.0  # the recipe centres [0, 1] at 0; Lite0 was trained on about [-1, 1]
        taps = self.encoder.forward_from_stem(self.fusion(self.encoder.stem(rgb), prompts))
        return self.decoder(image, taps, prompt_pyramid(prompts, (1, *self.encoder.strides[:-1])))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The pretrained part (trained with a lower learning rate, or frozen)."""
        return list(self.encoder.parameters())
