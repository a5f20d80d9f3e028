"""Training augmentation (training.augment): mirror and grayscale, their hook in the samples, the new fields' checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.models import get_spec

from training.augment import LUMA, augmented
from training.config import load_config
from training.dataset import StrokeSamples

STUDY = Path(__file__).parent.parent / "training" / "configs" / "tiny16-32_bce-dice.toml"


def _object() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[5:20, 2:12] = True  # left of centre, so a mirror moves it
    return image, mask


def test_flip_mirrors_image_and_mask_together():
    image, mask = _object()
    flipped, fmask, changed = augmented(image, mask, np.random.default_rng(0), flip_prob=1.0)
    assert changed and flipped.flags.c_contiguous and fmask.flags.c_contiguous
    assert np.array_equal(flipped, image[:, ::-1]) and np.array_equal(fmask, mask[:, ::-1])
    assert fmask[:, -12:-2].all(axis=1)[5:20].all()


def test_gray_is_the_luma_in_the_image_dtype():
    image, mask = _object()
    for source in (image, image.astype(np.float32) / 255):
        gray, same_mask, changed = augmented(source, mask, np.random.default_rng(0), gray_prob=1.0)
        assert changed and gray.shape == (30, 40, 1) and gray.dtype == source.dtype
        assert np.array_equal(same_mask, mask)
        expected = source.astype(np.float64) @ LUMA.astype(np.float64)
        assert np.abs(gray[..., 0] - expected).max() <= (0.5 if source.dtype == np.uint8 else 1e-5)
    one_channel = image[..., :1]
    kept, _, changed = augmented(one_channel, mask, np.random.default_rng(0), gray_prob=1.0)
    assert not changed and np.array_equal(kept, one_channel)


def test_zero_probabilities_draw_nothing():
    image, mask = _object()
    rng = np.random.default_rng(5)
    out, out_mask, changed = augmented(image, mask, rng)
    assert not changed and np.array_equal(out, image) and np.array_equal(out_mask, mask)
    assert rng.random() == np.random.default_rng(5).random()  # the generator was not advanced


def test_config_fields_are_checked():
    assert load_config(STUDY).flip_prob == 0.0 and load_config(STUDY).gray_prob == 0.0
    for field in ("flip_prob", "gray_prob", "carried_prob"):
        with pytest.raises(ValueError, match=field):
            load_config(STUDY, sets=[f"{field}=1.5"])
    with pytest.raises(ValueError, match="carried_prob.*object-aware"):  # a stroke U-Net takes no prior
        load_config(STUDY, sets=["carried_prob=0.2"])


@pytest.mark.data
def test_training_samples_are_gray_and_mirrored_only_when_asked(data_root):
    source = CocoInstances(*dataset_files("coco-mini", "train", data_root), max_images=2)
    spec = get_spec("tiny16-32", working_size=64)
    items = [(0, i) for i in range(4)]
    plain = StrokeSamples([source], items, spec, "study", seed=3)
    off = StrokeSamples([source], items, spec, "study", seed=3, flip_prob=0.0, gray_prob=0.0)
    gray = StrokeSamples([source], items, spec, "study", seed=3, gray_prob=1.0)
    for index in range(len(items)):
        a, b = plain.sample(index, 1), off.sample(index, 1)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        g = gray.sample(index, 1)
        assert g.y.any()
        assert np.array_equal(g.x[0], g.x[1]) and np.array_equal(g.x[1], g.x[2])  # one gray plane, repeated
        assert not np.array_equal(a.x[0], a.x[1])  # the photo itself has colour
