"""``inputs.intensity_range``: the per-channel percentiles every window is scaled by (training and engine alike)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segmentello.inputs import click_masks, intensity_range, points_to_stroke


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
