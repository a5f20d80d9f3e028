"""``inputs``: the per-channel intensity range every window is scaled by (training and engine alike), and the
user's clicks as disc strokes (``points_to_stroke``, ``click_masks``), the size training's clicks are drawn at."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from napari_segmentello.inputs import CLICK_RADIUS, click_masks, intensity_range, points_to_stroke
from napari_segmentello.strokes import click_stroke

SHAPE = (64, 80)


def _numpy_range(image: np.ndarray, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    sample = image[::step, ::step].reshape(-1, image.shape[2]).astype(np.float64)
    levels = np.array([np.percentile(col[np.isfinite(col)], [1.0, 99.8]) for col in sample.T])
    lo, hi = levels[:, 0], levels[:, 1]
    return lo, np.where(hi <= lo, lo + 1.0, hi)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 256), (np.uint16, 300), (np.uint16, 65536)])
def test_integer_images_get_numpys_percentiles_from_a_histogram(dtype, top):
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = (*rng.integers(1, 50, 2), rng.integers(1, 4))
        image = (rng.integers(0, top, shape) * (rng.random(shape) < rng.random())).astype(dtype)  # many zeros
        np.testing.assert_allclose(intensity_range(image), _numpy_range(image), rtol=1e-12)


def test_a_large_image_is_subsampled_and_a_flat_channel_keeps_its_level():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4000, (1500, 1000, 2)).astype(np.uint16)
    image[..., 1] = 9
    lo, hi = intensity_range(image)  # 1.5 M pixels: every 2nd row and column
    np.testing.assert_allclose((lo, hi), _numpy_range(image, step=2), rtol=1e-12)
    assert (lo[1], hi[1]) == (9.0, 10.0)


def test_float_images_ignore_nan_and_inf():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(40, 30, 3)).astype(np.float32)
    image[::7, ::5] = np.nan
    image[3, 4, 0], image[5, 6, 1] = np.inf, -np.inf
    np.testing.assert_allclose(intensity_range(image), _numpy_range(image), rtol=1e-12)


def test_click_masks_split_clicks_into_discs_and_the_negative_clicks_own_pixels():
    shape = (60, 70)
    pos, neg, points = click_masks([(10, 10, 1), (30, 40, 0), (50, 12, True), (80, 5, 0)], shape)
    np.testing.assert_array_equal(pos, points_to_stroke(np.array([[10.0, 10.0], [50.0, 12.0]]), shape))
    np.testing.assert_array_equal(neg, points_to_stroke(np.array([[30.0, 40.0]]), shape))  # off-canvas: none
    assert np.argwhere(points).tolist() == [[30, 40]]
    assert not any(m.any() for m in click_masks(np.zeros((0, 3)), shape))
    with pytest.raises(ValueError, match=r"\(N, 3\) array of \(row, col, positive\)"):
        click_masks([(1, 2)], shape)


def test_clicks_are_discs_of_the_training_click_size():
    stroke = points_to_stroke(np.array([[10.2, 12.7], [40, 60]]), SHAPE)
    expected = np.zeros(SHAPE, bool)
    for center in [(10.2, 12.7), (40, 60)]:
        expected[disk(center, CLICK_RADIUS, shape=SHAPE)] = True
    np.testing.assert_array_equal(stroke, expected)
    # click_stroke's discs (radius drawn from U(3, 6)) bracket a user's click
    obj = np.zeros(SHAPE, bool)
    obj[disk((32, 40), 30, shape=SHAPE)] = True
    sizes = []
    for seed in range(20):
        labels, n = ndi.label(click_stroke(obj, np.random.default_rng(seed)))
        sizes += ndi.sum_labels(labels > 0, labels, range(1, n + 1)).tolist()
    one = stroke.sum() / 2
    assert min(sizes) < one < max(sizes)


def test_clicks_outside_are_ignored_and_tiny_radii_keep_the_pixel():
    assert not points_to_stroke(np.zeros((0, 2)), SHAPE).any()
    outside = points_to_stroke(np.array([[-3.0, 5.0], [10.0, 80.4], [64.0, 1.0]]), SHAPE)
    assert not outside.any()
    edge = points_to_stroke(np.array([[0.0, 79.4]]), SHAPE)  # rounds to the last column: inside
    assert edge[0, 79]
    tiny = points_to_stroke([[5.4, 6.4]], SHAPE, radius=0.2)
    assert tiny.sum() == 1 and tiny[5, 6]


@pytest.mark.parametrize(
    "points, shape, radius",
    [
        (np.zeros(2), SHAPE, 4.0),
        (np.zeros((3, 3)), SHAPE, 4.0),
        (np.array([[np.nan, 1.0]]), SHAPE, 4.0),
        (np.zeros((1, 2)), (*SHAPE, 3), 4.0),
        (np.zeros((1, 2)), (0, 5), 4.0),
        (np.zeros((1, 2)), SHAPE, 0.0),
    ],
)
def test_bad_clicks_are_value_errors(points, shape, radius):
    with pytest.raises(ValueError):
        points_to_stroke(points, shape, radius)
