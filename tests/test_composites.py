"""Synthetic composite objects (training.composites) and their hook in the training samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.inputs import intensity_range
from napari_segmentello.models import get_spec
from napari_segmentello.samples import make_sample

from training.composites import KINDS, MIN_PIXELS, composite_object
from training.config import load_config
from training.dataset import StrokeSamples

STUDY = Path(__file__).parent.parent / "training" / "configs" / "tiny16-32_bce-dice.toml"


def _disk(shape: tuple[int, int] = (300, 320), center: tuple[int, int] = (150, 160), radius: int = 120) -> np.ndarray:
    gt = np.zeros(shape, bool)
    gt[disk(center, radius, shape=shape)] = True
    return gt


def _far_from(mask: np.ndarray) -> np.ndarray:
    """Pixels beyond the 1-px feather's reach (3 px in each axis) outside ``mask``."""
    return ~ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=3)


def _inside(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` beyond the feather's reach: pure texture."""
    return _far_from(~mask)


@pytest.mark.parametrize("kind", [*KINDS, None])
def test_shape_dtype_and_mask(kind):
    rng = np.random.default_rng(0)
    gt = _disk()
    for background in (
        rng.integers(0, 256, (*gt.shape, 3), dtype=np.uint8),
        rng.random((*gt.shape, 1), dtype=np.float32) * 4.0 - 1.0,
    ):
        texture = np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8)
        image, mask = composite_object(background, texture, gt, rng, kind=kind)
        assert image.shape == background.shape and image.dtype == background.dtype
        assert mask.dtype == bool and mask.shape == gt.shape and np.count_nonzero(mask) >= MIN_PIXELS
        assert not np.array_equal(image, background)


@pytest.mark.parametrize("seed", range(6))
def test_rings_and_holes_have_holes(seed):
    background = np.zeros((300, 320, 3), np.uint8)
    texture = np.full((60, 50, 3), 200, np.uint8)
    ring = composite_object(background, texture, _disk(), np.random.default_rng(seed), kind="ring")[1]
    assert np.count_nonzero(ndimage.binary_fill_holes(ring)) > 1.5 * np.count_nonzero(ring)  # a thin annulus
    holed = composite_object(background, texture, _disk(), np.random.default_rng(seed), kind="hole")[1]
    assert np.count_nonzero(ndimage.binary_fill_holes(holed)) > np.count_nonzero(holed) + 20
    band = composite_object(background, texture, _disk(), np.random.default_rng(seed), kind="band")[1]
    assert ndimage.label(band)[1] == 1 and np.array_equal(ndimage.binary_fill_holes(band), band)  # an open arc


@pytest.mark.parametrize("kind", KINDS)
def test_object_is_texture_hole_and_surroundings_are_background(kind):
    background = np.zeros((300, 320, 3), np.uint8)
    texture = np.full((50, 60, 3), 200, np.uint8)  # smaller than the object's box: enlarged
    for seed in range(3):
        image, mask = composite_object(
            background, texture, _disk(), np.random.default_rng(seed), kind=kind, shift=False
        )
        inside = _inside(mask)
        assert inside.any() and np.all(image[inside] == 200)
        assert np.all(image[_far_from(mask)] == 0)  # the hole and everything around stay background
        edge = mask & ~inside
        assert np.any((image[edge] > 0) & (image[edge] < 200))  # feathered, not a perfect cut


def test_texture_structure_is_kept():
    rng = np.random.default_rng(5)
    background = np.zeros((300, 320, 3), np.uint8)
    texture = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
    image, mask = composite_object(background, texture, _disk(), rng, kind="hole", shift=False)
    inside = image[_inside(mask)]
    assert inside.std() > 40  # a crop of the noise, not a flat fill
    assert np.isin(inside, texture).all()


def test_shift_changes_contrast_but_keeps_a_flat_texture_flat():
    background = np.zeros((300, 320, 3), np.uint8)
    texture = np.full((200, 200, 3), 120, np.uint8)
    levels = set()
    for seed in range(12):
        image, mask = composite_object(background, texture, _disk(), np.random.default_rng(seed), kind="ring")
        inside = image[_inside(mask)]
        assert np.ptp(inside, axis=0).max() <= 1  # a gain/offset: a flat texture stays flat
        levels.add(tuple(inside[0]))
    assert len(levels) > 4 and (120, 120, 120) in levels  # shifted, and sometimes left as it is


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(2)
    background = rng.integers(0, 256, (300, 320, 3), dtype=np.uint8)
    texture = rng.integers(0, 256, (120, 140, 3), dtype=np.uint8)
    first = composite_object(background, texture, _disk(), np.random.default_rng(11))
    again = composite_object(background, texture, _disk(), np.random.default_rng(11))
    other = composite_object(background, texture, _disk(), np.random.default_rng(12))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not (np.array_equal(first[0], other[0]) and np.array_equal(first[1], other[1]))


def test_channels_and_value_scale_follow_the_background():
    gray = np.zeros((300, 320, 1), np.uint8)
    texture = np.empty((80, 80, 3), np.uint8)
    texture[...] = (30, 120, 210)
    image, mask = composite_object(gray, texture, _disk(), np.random.default_rng(0), kind="ring", shift=False)
    assert image.shape == gray.shape and np.all(image[_inside(mask)] == 120)
    floats = np.zeros((300, 320, 3), np.float32)
    floats[0, 0] = 1.0  # a [0, 1] image: a uint8 texture is mapped onto that range
    texture = np.full((80, 80), 255, np.uint8)
    image, mask = composite_object(floats, texture, _disk(), np.random.default_rng(0), shift=False)
    assert np.allclose(image[_inside(mask)], 1.0)


def test_tiny_objects_fall_back_to_the_real_outline():
    gt = np.zeros((60, 60), bool)
    gt[20:25, 30:35] = True  # 25 px: no ring of MIN_PIXELS fits
    image, mask = composite_object(
        np.zeros((60, 60, 3), np.uint8),
        np.full((9, 9, 3), 90, np.uint8),
        gt,
        np.random.default_rng(0),
        kind="ring",
        shift=False,
    )
    assert np.array_equal(mask, gt) and np.all(image[22, 32] == 90)


def test_bad_arguments_are_refused():
    background = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="kind"):
        composite_object(background, background, _disk((40, 40), (20, 20), 10), np.random.default_rng(0), kind="star")
    with pytest.raises(ValueError, match="non-empty"):
        composite_object(background, background, np.zeros((40, 40), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="composite_prob"):
        load_config(STUDY, sets=["composite_prob=1.5"])
    assert load_config(STUDY).composite_prob == 0.0


@pytest.mark.data
def test_training_samples_get_composites_only_when_asked(data_root):
    source = CocoInstances(*dataset_files("coco-mini", "train", data_root), max_images=3)
    spec = get_spec("tiny16-32", working_size=64)
    items = [(0, i) for i in range(min(len(source), 6))]
    plain = StrokeSamples([source], items, spec, "study", seed=3)
    off = StrokeSamples([source], items, spec, "study", seed=3, composite_prob=0.0)
    on = StrokeSamples([source], items, spec, "study", seed=3, composite_prob=1.0)
    assert len(items) == 6
    changed = 0
    for index, (_, i) in enumerate(items):
        inst = source[i]
        lo, hi = intensity_range(inst.image)
        before = make_sample(inst.image, inst.mask, spec, "study", on.rng(index, 1), lo=lo, hi=hi)
        for sample in (plain.sample(index, 1), off.sample(index, 1)):  # bit-identical to the real sample
            assert np.array_equal(sample.x, before.x) and np.array_equal(sample.y, before.y)
            assert np.array_equal(sample.stroke, before.stroke)
        composite = on.sample(index, 1)
        changed += not (np.array_equal(composite.x, before.x) and np.array_equal(composite.y, before.y))
        again = on.sample(index, 1)
        assert np.array_equal(again.x, composite.x) and np.array_equal(again.y, composite.y)
        assert composite.y.any()
    assert changed == len(items)
    assert not on._ranges  # a composite's intensity range is never cached under the real image
