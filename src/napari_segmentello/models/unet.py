"""The U-Net families: ``tiny`` (double convs), ``res`` (residual blocks), ``attn`` (attention-gated skips).

Normalisation is BatchNorm: training uses batches of many windows, and in eval mode
BatchNorm is a per-channel affine that costs nothing on the CPU (GroupNorm would
recompute statistics on every call and cost a noticeable share of the 30 ms budget).
Upsampling is a 2×2 stride-2 transposed convolution (no overlap, so no checkerboard),
which also halves the channels before the skip is concatenated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_segmentello.models.cspn import CSPNHead
from napari_segmentello.models.registry import ModelSpec


def _conv_bn(cin: int, cout: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class DoubleConv(nn.Sequential):
    """(conv3×3 → BN → ReLU) × 2, the plain U-Net block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn(cin, cout), nn.ReLU(inplace=True), *_conv_bn(cout, cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3×3 convs with an identity (or 1×1 projection) shortcut: easier to train deeper."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout), nn.ReLU(inplace=True), *_conv_bn(cout, cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(*_conv_bn(cin, cout, kernel=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): the decoder signal decides which skip pixels pass.

    The gating signal is the upsampled decoder feature, already at the skip's
    resolution, so no extra resampling of the coefficients is needed.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.skip = nn.Sequential(*_conv_bn(skip_channels, inter_channels, kernel=1))
        self.gate = nn.Sequential(*_conv_bn(gate_channels, inter_channels, kernel=1))
        self.psi = nn.Sequential(*_conv_bn(inter_channels, 1, kernel=1), nn.Sigmoid())

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(F.relu(self.skip(skip) + self.gate(gate)))


class Up(nn.Module):
    """One decoder stage: upsample, (gate the skip), concatenate, block."""

    def __init__(self, cin: int, cout: int, block: type[nn.Module], attention: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.attention = AttentionGate(cout, cout, max(cout // 2, 1)) if attention else None
        self.block = block(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if self.attention is not None:
            skip = self.attention(skip, x)
        return self.block(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net for one :class:`ModelSpec`: (N, in_channels, H, W) -> logits (N, 1, H, W), any H, W.

    Inputs are zero-padded at the bottom/right to a multiple of ``2 ** (levels - 1)``
    and the logits cropped back.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = spec.widths
        block = ResBlock if spec.family == "res" else DoubleConv
        self.multiple = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList(
            [block(spec.in_channels, widths[0]), *(block(a, b) for a, b in zip(widths, widths[1:], strict=False))]
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            [
                Up(b, a, block, attention=spec.family == "attn")
                for a, b in reversed(list(zip(widths, widths[1:], strict=False)))
            ]
        )
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)
        self.cspn = CSPNHead(widths[0], spec.cspn_iters) if spec.cspn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels or not x.is_floating_point():
            raise ValueError(
                f"expected a float tensor of shape (N, {self.spec.in_channels}, H, W) for model "
                f"{self.spec.name or self.spec.family!r}, got {x.dtype} {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple))
        skips = []
        for i, encode in enumerate(self.encoder):
            x = encode(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        logits = self.head(x)
        if self.cspn is not None:
            logits = self.cspn(logits, x)
        return logits[..., :h, :w]
