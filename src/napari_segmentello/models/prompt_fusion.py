"""How prompts (stroke, "not this", previous mask, box) enter the object-aware network.

Twice, as in RITM and FocalClick: once added to the pretrained stem's output through
a zero-initialised convolution (RITM's Conv1S), so at initialisation the encoder
sees exactly the image it was pretrained on and the prompts' weight is learned from
zero; and again at every decoder scale, max-pooled so that a 1-px stroke survives
any downsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptFusion(nn.Module):
    """Zero-initialised stride-2 conv from the prompt maps to the stem's channels, added to the stem."""

    def __init__(self, prompt_channels: int, stem_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(prompt_channels, stem_channels, 3, stride=2, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, stem: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        return stem + self.conv(prompts)


def prompt_pyramid(prompts: torch.Tensor, strides: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """The prompt maps at each stride (max-pooled: thin strokes and clicks never vanish)."""
    return {s: prompts if s == 1 else F.max_pool2d(prompts, s, s, ceil_mode=True) for s in strides}
