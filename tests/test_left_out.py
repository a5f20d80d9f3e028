"""A stroke part (a click, a separate stroke) that its object's answer leaves out is refined alone and joins in.

A *stubborn* stand-in network keeps any earlier mask it is given and otherwise answers the
bright pixels of its window, so it ignores a click away from that mask, as the trained
model did with about half of the standard protocol's corrective clicks.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.draw import disk
from torch import nn

from napari_segmentello.answers import Window
from napari_segmentello.engine import Refiner
from napari_segmentello.label_masks import Placed
from napari_segmentello.inputs import channel_of
from napari_segmentello.models import get_spec
from napari_segmentello.roi import ROI

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


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def _two_discs() -> tuple[np.ndarray, np.ndarray, Stubborn, Refiner, np.ndarray]:
    """Discs ``a`` and ``b`` far apart on a dark image, the stand-in and its refiner, a click on each disc."""
    a, b = _disc((400, 600), (200, 120), 40), _disc((400, 600), (200, 480), 40)
    net = Stubborn()
    refiner = Refiner(net)
    refiner.set_image((a | b).astype(np.float32))
    return a, b, net, refiner, _disc(a.shape, (200, 120), 3) | _disc(a.shape, (200, 480), 3)


def test_a_click_the_answer_ignores_gets_its_own_answer_joined_in():
    a, b, net, refiner, clicks = _two_discs()
    answer = refiner.predict(clicks, previous=a)  # the net keeps ``a`` and ignores the click on ``b``
    assert answer[a].mean() > 0.9 and answer[b].mean() > 0.97
    assert answer[~(a | b)].sum() < 0.02 * (a | b).sum()
    assert net.windows >= 4  # passes 1 and 2 for the object, then again for the click on ``b`` alone


def test_parts_the_answer_touches_and_a_lone_stroke_are_not_asked_again():
    a, _, net, refiner, _ = _two_discs()
    refiner.predict(_disc(a.shape, (190, 120), 3) | _disc(a.shape, (210, 120), 3), previous=a)
    assert net.windows == 2  # pass 1 and pass 2, nothing more: both clicks are on the answer
    net.windows = 0
    answer = refiner.predict(_disc(a.shape, (30, 300), 3))  # on the dark background: an empty answer
    assert not answer.any() and net.windows == 2


def test_a_prior_is_kept_as_it_is_given_not_joined_by_left_out_parts():
    """Propagation hands a prior over with its core as the stroke: the rule is for prompts, not priors."""
    a, b, net, refiner, clicks = _two_discs()
    answer = refiner.predict(clicks, prior=a)
    assert answer[a].mean() > 0.9 and not answer[b].any() and net.windows == 1


def test_a_placed_mask_reads_like_the_full_frame_it_stands_for():
    rng = np.random.default_rng(0)
    small = rng.random((7, 11)) > 0.5
    frame = np.zeros((30, 40), bool)
    frame[5:12, 20:31] = small
    placed = Placed(small, 5, 20, frame.shape)
    for _ in range(50):
        r0, c0 = rng.integers(0, 30), rng.integers(0, 40)
        key = slice(r0, rng.integers(r0 + 1, 31)), slice(c0, rng.integers(c0 + 1, 41))
        assert np.array_equal(placed[key], frame[key])


def test_a_left_out_part_whose_answer_reaches_a_not_this_pixel_is_not_joined():
    """Asked without the earlier mask, a part's answer can grow back what the user took away."""
    a, b, net, refiner, clicks = _two_discs()
    negative = _disc(a.shape, (200, 500), 3)  # on ``b``: "not this"
    answer = refiner.predict(clicks, previous=a, negative=negative)
    assert answer[a].mean() > 0.9 and not answer[b].any()
    assert net.windows >= 4  # the click on ``b`` was asked, and its answer refused


def test_a_window_away_from_a_region_reads_as_zeros_there():
    window = Window(ROI(100, 100, 20), np.ones((20, 20), np.float32))
    assert not window.over(slice(0, 50), slice(0, 50)).any()
    assert window.over(slice(110, 130), slice(90, 105)).sum() == 10 * 5


def test_only_the_regions_of_a_parts_answer_that_hold_the_part_join():
    a, b, net, refiner, clicks = _two_discs()
    blob = _disc(a.shape, (200, 545), 8)  # bright, apart from ``b`` but inside the click's windows
    image = (a | b | blob).astype(np.float32)
    refiner.set_image(image)
    alone = refiner.predict(_disc(a.shape, (200, 480), 3))
    assert alone[blob].mean() > 0.9  # asked alone, the click on ``b`` answers the blob too
    answer = refiner.predict(clicks, previous=a)
    assert answer[b].mean() > 0.97 and not answer[blob].any()
