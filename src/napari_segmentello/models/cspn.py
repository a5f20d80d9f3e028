"""Convolutional spatial propagation (CSPN, Cheng et al. 2018) as a mask refinement head.

The U-Net's coarse probability map is diffused for a few steps along learned
8-neighbour affinities, which snaps mask borders to image edges without more
encoder depth. Everything is plain tensor arithmetic, so it stays differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Neighbour order of the 8 affinity channels: the 3×3 window in raster order, centre skipped.
_CENTRE = 4


def normalise_affinity(raw: torch.Tensor) -> torch.Tensor:
    """(N, 8, H, W) raw affinities -> (N, 9, H, W) 3×3 kernels that sum to 1 at every pixel.

    Neighbour weights are scaled by ``1 / (1 + sum |raw|)``, so their absolute values sum
    to less than 1 (Cheng et al.'s stability condition) and small raw values mean little
    propagation; the centre keeps ``1 - sum`` of the neighbour weights.
    """
    neighbours = raw / (1.0 + raw.abs().sum(dim=1, keepdim=True))
    centre = 1.0 - neighbours.sum(dim=1, keepdim=True)
    return torch.cat([neighbours[:, :_CENTRE], centre, neighbours[:, _CENTRE:]], dim=1)


def propagate(prob: torch.Tensor, kernels: torch.Tensor, iters: int) -> torch.Tensor:
    """Apply per-pixel 3×3 ``kernels`` (N, 9, H, W) to ``prob`` (N, 1, H, W) ``iters`` times.

    Borders are replicated, so a constant map stays constant.
    """
    h, w = prob.shape[-2:]
    for _ in range(iters):
        padded = F.pad(prob, (1, 1, 1, 1), mode="replicate")
        # kernel i weighs the neighbour at offset (i // 3 - 1, i % 3 - 1); slices beat unfold on the CPU
        prob = sum(kernels[:, i : i + 1] * padded[..., i // 3 : i // 3 + h, i % 3 : i % 3 + w] for i in range(9))
    return prob


class CSPNHead(nn.Module):
    """Predicts affinities from the last decoder features and propagates the coarse mask with them."""

    def __init__(self, channels: int, iters: int) -> None:
        super().__init__()
        self.affinity = nn.Conv2d(channels, 8, kernel_size=3, padding=1)
        self.iters = iters

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Coarse logits + decoder features -> logits of the propagated probabilities."""
        kernels = normalise_affinity(self.affinity(features))
        prob = propagate(torch.sigmoid(logits), kernels, self.iters)
        eps = max(1e-6, torch.finfo(prob.dtype).eps)  # float16 cannot hold 1 - 1e-6
        return torch.logit(prob, eps=eps)
