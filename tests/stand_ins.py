"""Stand-in networks with a fixed rule, so engine tests read the engine's plumbing apart from model quality."""

from __future__ import annotations

import torch
from torch import nn

from napari_segmentello.inputs import channel_of
from napari_segmentello.models import get_spec

SPEC = get_spec("lite0-128")
PREV = channel_of(SPEC, "prev")


class Stubborn(nn.Module):
    """Logits: its earlier mask where it has one, else bright is object. Counts its windows."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = SPEC
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        prev = x[:, PREV : PREV + 1]
        has_prev = prev.flatten(1).amax(1).view(-1, 1, 1, 1) > 0
        return torch.where(has_prev, 40.0 * (prev - 0.5), 40.0 * x[:, :1])  # the image channel: bright > 0 > dark
