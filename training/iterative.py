"""Iterative training rounds in the RITM way: the model learns to correct its own mistakes.

Synthetic earlier masks (``samples.earlier_mask``) teach corrections of errors the network
never makes. In a share of batches the network first answers its own input without
gradient; each sample then gets the standard corrective click (``strokes.next_click``) on
its largest error, positive or "not this", and its answer as the previous mask; after one
to ``max_rounds`` such rounds the batch is trained on as usual. Everything happens in
window coordinates on the batch the loader gave, so samples and loaders stay unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.draw import disk
from torch import nn

from napari_segmentello.inputs import CLICK_RADIUS, channel_of
from napari_segmentello.strokes import next_click

__all__ = ["IterativeRounds", "PromptChannels", "add_corrective_clicks"]


@dataclass(frozen=True)
class PromptChannels:
    """Where a model's positive stroke, "not this" stroke and previous mask sit in its input."""

    pos: int
    neg: int
    prev: int

    @classmethod
    def of(cls, spec) -> PromptChannels:
        missing = {"pos", "neg", "prev"} - set(spec.extras)
        if missing:
            raise ValueError(f"iterative rounds need spec extras pos, neg, prev; {spec.name} lacks {sorted(missing)}")
        return cls(channel_of(spec, "pos"), channel_of(spec, "neg"), channel_of(spec, "prev"))


def add_corrective_clicks(
    x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, scale: torch.Tensor, channels: PromptChannels
) -> torch.Tensor:
    """``x`` with ``pred`` as the previous mask and one click per sample on its largest error.

    ``x`` is N×C×S×S, ``y`` and ``pred`` N×1×S×S (0/1), ``scale`` the N window pixels per image
    pixel, so a click has the disc the engine draws (``CLICK_RADIUS`` image pixels, at least one
    window pixel). A sample without error keeps its prompts and gets only the previous mask.
    """
    out = x.clone()
    out[:, channels.prev] = pred[:, 0]
    gts, preds = y[:, 0].cpu().numpy() > 0.5, pred[:, 0].cpu().numpy() > 0.5
    size = x.shape[-1]
    for k, (gt, answer) in enumerate(zip(gts, preds, strict=True)):
        click = next_click(gt, answer)
        if click is None:
            continue
        row, col, positive = click
        radius = max(1.0, CLICK_RADIUS * float(scale[k]))
        rr, cc = disk((row, col), radius, shape=(size, size))
        out[k, channels.pos if positive else channels.neg, rr, cc] = 1.0
    return out


@dataclass
class IterativeRounds:
    """Run 1..``max_rounds`` no-gradient rounds on a share ``prob`` of the training batches."""

    prob: float
    max_rounds: int
    channels: PromptChannels
    rng: np.random.Generator

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The batch input to train on: ``x`` itself, or ``x`` after the model's own correction rounds."""
        if self.prob <= 0 or self.rng.random() >= self.prob:
            return x
        rounds = int(self.rng.integers(1, self.max_rounds + 1))
        modes = [(m, m.training) for m in net.modules()]  # a frozen encoder stays in eval mode after
        net.eval()  # answers as at inference; the rounds leave no trace in batch-norm statistics
        with torch.no_grad():
            for _ in range(rounds):
                pred = (net(x) > 0).float()
                x = add_corrective_clicks(x, y, pred, scale, self.channels)
        for module, training in modes:
            module.train(training)
        return x
