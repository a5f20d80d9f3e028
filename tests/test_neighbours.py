"""Neighbours painted as "not this" in training (``neighbour_prob``): the lookup, the strokes, the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.models import get_spec
from napari_segmentello.samples import PromptMix, make_sample, neighbour_scribbles

from training.config import load_config
from training.dataset import StrokeSamples

CONFIGS = Path(__file__).parent.parent / "training" / "configs"


@pytest.fixture(scope="module")
def nuclei(data_root: Path) -> CocoInstances:
    """Two dsb2018 train images: crowded with nuclei, some touching."""
    return CocoInstances(*dataset_files("dsb2018-nuclei", "train", data_root), max_images=2)


def _gap(a: np.ndarray, b: np.ndarray) -> int:
    """Chebyshev gap in px between two masks' boxes (0 when they touch or overlap)."""
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    gy = max(0, yb.min() - ya.max() - 1, ya.min() - yb.max() - 1)
    gx = max(0, xb.min() - xa.max() - 1, xa.min() - xb.max() - 1)
    return max(gy, gx)


@pytest.mark.data
def test_neighbours_are_the_other_objects_of_the_image_nearest_first(nuclei):
    inst = nuclei[0]
    every = nuclei.neighbours(inst)
    same_image = [a for a in nuclei.coco.getAnnIds(imgIds=[inst.image_id]) if a != inst.ann_id]
    assert inst.ann_id not in every and sorted(every) == sorted(same_image)  # small ones too: people see them
    gaps = [_gap(inst.mask, m) for m in every.values()]
    assert gaps == sorted(gaps) and gaps[-1] > 20
    reach = gaps[len(gaps) // 2]
    near = nuclei.neighbours(inst, reach=reach)
    assert 0 < len(near) < len(every)
    assert all(_gap(inst.mask, m) <= reach + 1 for m in near.values())  # boxes' float edges: 1 px slack
    assert list(nuclei.neighbours(inst, limit=3)) == list(every)[:3]


def test_neighbour_scribbles_lie_on_the_neighbours_never_on_the_object():
    gt = np.zeros((80, 80), bool)
    gt[20:50, 10:40] = True
    touching = np.zeros_like(gt)
    touching[20:50, 40:70] = True
    speck = np.zeros_like(gt)
    speck[70:73, 70:73] = True
    painted = [neighbour_scribbles(gt, [touching, speck], np.random.default_rng(s)) for s in range(20)]
    strokes = [p for p in painted if p is not None]
    assert 8 <= len(strokes) < 20  # each neighbour painted with a chance, not always
    for stroke in strokes:
        assert not (stroke & gt).any() and not (stroke & speck).any()  # nobody scribbles on a speck
        assert (stroke & touching).sum() >= 0.75 * stroke.sum()  # human scribbles spill a little, never onto the object
    assert neighbour_scribbles(gt, [], np.random.default_rng(0)) is None


def test_neighbour_strokes_are_an_object_aware_models_not_this():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    gt = np.zeros((80, 80), bool)
    gt[20:50, 10:40] = True
    others = np.zeros_like(gt)
    others[25:45, 45:60] = True
    lo, hi = np.zeros(3, np.float32), np.full(3, 255, np.float32)
    spec = get_spec("lite0-64", working_size=64)
    no_background = PromptMix(negative=0.0)
    sample = make_sample(image, gt, spec, "human-scribble", rng, lo=lo, hi=hi, mix=no_background, others=others)
    assert np.array_equal(sample.neg, others)
    with pytest.raises(ValueError, match="object-aware"):
        make_sample(image, gt, get_spec("tiny16-32", working_size=64), "study", rng, lo=lo, hi=hi, others=others)


@pytest.mark.data
def test_training_samples_paint_the_neighbours_when_asked_mirrored_with_the_image(nuclei):
    spec = get_spec("lite0-64", working_size=64)
    items = [(0, i) for i in range(6)]
    mix = PromptMix(negative=0.0)  # no background strokes: every "not this" pixel is a neighbour's
    plain = StrokeSamples([nuclei], items, spec, "human-scribble", seed=3, mix=mix)
    off = StrokeSamples([nuclei], items, spec, "human-scribble", seed=3, mix=PromptMix(negative=0.0, neighbours=0.0))
    on = StrokeSamples([nuclei], items, spec, "human-scribble", seed=3, mix=PromptMix(negative=0.0, neighbours=1.0))
    mirrored = StrokeSamples(
        [nuclei], items, spec, "human-scribble", seed=3, mix=PromptMix(negative=0.0, neighbours=1.0), flip_prob=1.0
    )
    painted = 0
    for index, (_, i) in enumerate(items):
        a, b = plain.sample(index, 1), off.sample(index, 1)
        assert a.neg is None and np.array_equal(a.x, b.x)  # 0 draws nothing: earlier configs keep their samples
        inst = nuclei[i]
        others = np.logical_or.reduce(list(nuclei.neighbours(inst).values()))
        s, m = on.sample(index, 1), mirrored.sample(index, 1)
        if s.neg is None:
            continue
        painted += 1
        assert not (s.neg & inst.mask).any() and (s.neg & others).sum() >= 0.4 * s.neg.sum()  # small nuclei: spill
        assert np.array_equal(m.neg, s.neg[:, ::-1])  # the same strokes, mirrored with the image
    assert painted >= 4


def test_neighbour_prob_is_checked():
    default = CONFIGS / "default.toml"
    assert load_config(default).neighbour_prob == 0.0
    with pytest.raises(ValueError, match="neighbour_prob"):
        load_config(default, sets=["neighbour_prob=1.5"])
    with pytest.raises(ValueError, match="neighbour_prob.*object-aware"):  # a stroke U-Net's window has no neighbours
        load_config(CONFIGS / "tiny16-32_bce-dice.toml", sets=["neighbour_prob=0.2"])
