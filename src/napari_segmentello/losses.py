"""Training losses for the stroke refiner, chosen by name from a config.

Every loss takes logits and a float target, both (N, 1, H, W), and returns a
scalar tensor. Region losses (BCE, Dice, Focal) judge pixels; the boundary
loss (Kervadec et al. 2019) weights each predicted pixel by how far it lies
from the true contour, so mistakes far from the object cost more. It needs a
signed distance map (SDM) of the target: computed here on the fly when not
given, or precomputed per sample with :func:`signed_distance_map` in the data
loader's workers (cheaper, and keeps the CPU work off the training loop) and
passed as ``loss(logits, target, sdm)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

LossFn = Callable[..., torch.Tensor]

DICE_EPS = 1.0
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def signed_distance_map(mask: np.ndarray) -> np.ndarray:
    """Float32 H×W signed distance to the contour of a 2D mask, divided by the image diagonal.

    Negative inside, positive outside; pixels next to the contour are ±0.5/diag,
    so the sign is never ambiguous. Dividing by the diagonal keeps values in
    (-1, 1) whatever the window size, comparable in scale to BCE and Dice.
    A mask with no contour (all empty or all full) gets zeros, as in Kervadec's
    reference: there is no boundary to pull towards, BCE/Dice still supervise it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D (H×W), got shape {mask.shape}")
    pos = mask > 0.5
    if pos.all() or not pos.any():
        return np.zeros(mask.shape, np.float32)
    outside = ndimage.distance_transform_edt(~pos)  # distance to the nearest object pixel
    inside = ndimage.distance_transform_edt(pos)  # distance to the nearest background pixel
    sdm = np.where(pos, 0.5 - inside, outside - 0.5)
    return (sdm / np.hypot(*mask.shape)).astype(np.float32)


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (N, 1, H, W), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}")
    if not target.is_floating_point():
        raise ValueError(f"target must be a float tensor, got {target.dtype}")


def bce_loss(logits: torch.Tensor, target: torch.Tensor, sdm: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy on logits (numerically stable form)."""
    _check(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, sdm: torch.Tensor | None = None) -> torch.Tensor:
    """1 − soft Dice of sigmoid probabilities, per sample then averaged.

    Per sample so that a small object counts as much as a large one in the
    batch; the smoothing ``DICE_EPS`` makes an empty target with an empty
    prediction a perfect score instead of 0/0.
    """
    _check(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    inter = (prob * tgt).sum(1)
    dice = (2.0 * inter + DICE_EPS) / (prob.sum(1) + tgt.sum(1) + DICE_EPS)
    return (1.0 - dice).mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    sdm: torch.Tensor | None = None,
    *,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): BCE down-weighted by ``(1 − p_t)^gamma`` on easy pixels, mean over pixels."""
    _check(logits, target)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * target + (1.0 - prob) * (1.0 - target)
    alpha_t = alpha * target + (1.0 - alpha) * (1.0 - target)
    return (alpha_t * ce * (1.0 - p_t) ** gamma).mean()


def prompt_loss(logits: torch.Tensor, target: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BCE on the prompted pixels the truth agrees with (stroke pixels on the object, "not this" pixels off it).

    A click is a few pixels of a large window, so the region losses hardly notice when the
    answer leaves it out, which the bundled ``default`` did with half of its corrective clicks
    (README, left-out parts). Mean over each sample's such pixels, then over the samples that
    have any (0 when none has). ``pos`` and ``neg`` are the input's prompt planes, (N, H, W) or
    (N, 1, H, W); a coarse mask given as the stroke counts only where it lies on the object.
    """
    _check(logits, target)
    pos, neg = pos.reshape(target.shape) > 0.5, neg.reshape(target.shape) > 0.5
    on = target > 0.5
    where = ((pos & on) | (neg & ~on)).to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    count = where.flatten(1).sum(1)
    per_sample = (ce * where).flatten(1).sum(1) / count.clamp(min=1.0)
    has = count > 0
    return per_sample[has].sum() / has.sum().clamp(min=1)


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the logits against a teacher network's probabilities on the same input (knowledge distillation).

    A teacher's soft answer carries what it learned in hours of training (which clicks count, where
    an edge is uncertain), so a smaller student learns it from far fewer samples than from the masks alone.
    """
    _check(logits, teacher_logits)
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(teacher_logits.detach()))


def batch_sdm(target: torch.Tensor) -> torch.Tensor:
    """Signed distance maps of a (N, 1, H, W) target, computed on CPU, returned on its device and dtype."""
    masks = target.detach().to("cpu", torch.float32).numpy()[:, 0]
    sdm = np.stack([signed_distance_map(m) for m in masks])[:, None]
    return torch.from_numpy(sdm).to(device=target.device, dtype=target.dtype)


def boundary_loss(logits: torch.Tensor, target: torch.Tensor, sdm: torch.Tensor | None = None) -> torch.Tensor:
    """Boundary loss (Kervadec et al. 2019): mean of ``sigmoid(logits) × SDM(target)``.

    Minimal when exactly the object is predicted (every negative SDM pixel on,
    every positive one off); its minimum is negative, not zero. ``sdm`` is the
    precomputed :func:`signed_distance_map` of each target, (N, 1, H, W).
    """
    _check(logits, target)
    if sdm is None:
        sdm = batch_sdm(target)
    elif sdm.shape != logits.shape:
        raise ValueError(f"sdm shape {tuple(sdm.shape)} does not match logits shape {tuple(logits.shape)}")
    return (torch.sigmoid(logits) * sdm.to(device=logits.device, dtype=logits.dtype)).mean()


BASE_LOSSES: dict[str, LossFn] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "focal": focal_loss,
    "boundary": boundary_loss,
}

COMBINED: dict[str, tuple[tuple[str, float], ...]] = {
    "bce-dice": (("bce", 0.5), ("dice", 0.5)),  # the seed study's "equal" weights
    "bce-dice-bound": (("bce", 0.4), ("dice", 0.4), ("boundary", 0.2)),
    "focal-dice": (("focal", 0.5), ("dice", 0.5)),
}


@dataclass(frozen=True)
class WeightedLoss:
    """A weighted sum of base losses; callable as ``loss(logits, target, sdm=None)``.

    ``uses_sdm`` tells a training loop whether precomputing SDMs pays off.
    """

    name: str
    terms: tuple[tuple[str, float], ...]  # (base loss name, weight)

    @property
    def uses_sdm(self) -> bool:
        return any(part == "boundary" for part, _ in self.terms)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, sdm: torch.Tensor | None = None) -> torch.Tensor:
        if self.uses_sdm and sdm is None:
            _check(logits, target)
            sdm = batch_sdm(target)
        return sum(w * BASE_LOSSES[part](logits, target, sdm) for part, w in self.terms)


def loss_names() -> list[str]:
    """Every name :func:`make_loss` accepts."""
    return [*BASE_LOSSES, *COMBINED]


def make_loss(name: str) -> WeightedLoss:
    """The loss called ``name`` (see :func:`loss_names`); unknown name -> KeyError listing valid ones."""
    if name in BASE_LOSSES:
        return WeightedLoss(name, ((name, 1.0),))
    if name in COMBINED:
        return WeightedLoss(name, COMBINED[name])
    raise KeyError(f"unknown loss {name!r}; valid names: {', '.join(loss_names())}")
