"""U-Net style decoder over the encoder's taps, ending at full working resolution.

Each stage upsamples (bilinear ×2), concatenates the encoder tap and the prompts at
that scale, and mixes them with two 3×3 conv-BN-ReLU layers. The last stage has no
encoder tap: it sees the full-resolution image instead, so the boundary is placed
from image edges, not from the stride-2 features' blur.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DecoderStage(nn.Module):
    """Upsample ×2, concatenate the skip (tap or image) and the prompts, two convs."""

    def __init__(self, cin: int, skip: int, prompts: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*_conv_bn_relu(cin + skip + prompts, cout), *_conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([x, skip, prompts], dim=1))


class Decoder(nn.Module):
    """Taps at strides ``strides`` (shallow to deep) -> one-channel logits at stride 1.

    ``widths[k]`` is the output width of the stage at stride ``2**k`` (k = 0 is the
    full-resolution stage that sees the image).
    """

    def __init__(
        self, tap_channels: tuple[int, ...], strides: tuple[int, ...], widths: tuple[int, ...], prompts: int
    ) -> None:
        super().__init__()
        if strides != tuple(2 ** (k + 1) for k in range(len(strides))):
            raise ValueError(f"taps must be at strides 2, 4, 8, ...; got {strides}")
        if len(widths) < len(strides):
            raise ValueError(f"need a decoder width per stride 1..{strides[-2]}, got {widths}")
        self.strides = strides
        skips = (3, *tap_channels[:-1])  # stride 1: the image; stride 2**k: tap k-1
        cin = tap_channels[-1]
        stages = []
        for k in reversed(range(len(strides))):  # from stride strides[-1] / 2 down to 1
            stages.append(DecoderStage(cin, skips[k], prompts, widths[k]))
            cin = widths[k]
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, image: torch.Tensor, taps: list[torch.Tensor], prompts: dict[int, torch.Tensor]) -> torch.Tensor:
        skips = [image, *taps[:-1]]
        x = taps[-1]
        for stage, k in zip(self.stages, reversed(range(len(self.strides))), strict=True):
            x = stage(x, skips[k], prompts[2**k])
        return self.head(x)
