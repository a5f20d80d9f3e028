"""The window rule shared by training and inference: ROI from a stroke, crop/paste, resizing."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.transform import downscale_local_mean, resize

from napari_segmentello import roi as roi_module
from napari_segmentello.roi import (
    ROI,
    block_mean,
    crop,
    paste,
    read_prompt,
    read_resized,
    resize_image,
    resize_mask,
    resize_prompt,
    roi_from_stroke,
)


def test_roi_is_centred_and_enlarged_by_the_margin():
    stroke = np.zeros((200, 200), bool)
    stroke[90:110, 60:140] = True  # box 20 x 80
    roi = roi_from_stroke(stroke, margin=0.5)
    assert roi.size == 160 and (roi.y0 + roi.size / 2, roi.x0 + roi.size / 2) == (100, 100)
    dot = np.zeros((200, 200), bool)
    dot[5, 5] = True
    assert roi_from_stroke(dot, min_size=32).size == 32


def test_crop_pads_overhang_and_paste_writes_only_inside():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    roi = ROI(-2, 6, 6)  # overhangs the top and the right
    window = crop(image, roi, fill=-1)
    assert window.shape == (6, 6) and (window[:2] == -1).all() and (window[:, 4:] == -1).all()
    assert window[2, 0] == image[0, 6]
    out = paste(np.zeros((10, 10)), np.ones((6, 6)), roi)
    assert out.sum() == 4 * 4 and out[0:4, 6:10].all()


def test_growing_is_bilinear_on_the_half_pixel_grid():
    """Away from the border (held there, not mirrored) the numbers are scikit-image's bilinear resize."""
    window = resize(data.astronaut() / 255.0, (100, 100, 3)).astype(np.float32)
    expected = resize(window, (160, 160, 3), order=1, anti_aliasing=False, preserve_range=True)
    grown = resize_image(window, 160)
    assert grown.shape == (160, 160, 3) and grown.dtype == np.float32
    assert np.allclose(grown[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize("side", [161, 300, 511])  # from 512 px block means come first
def test_small_windows_shrink_exactly_as_skimage(side):
    """The matrix form of the anti-aliased resize gives scikit-image's numbers, the ones the models were trained on."""
    window = resize(data.astronaut() / 255.0, (side, side, 3)).astype(np.float32)
    expected = resize(window, (128, 128, 3), order=1, anti_aliasing=True, preserve_range=True)
    small = resize_image(window, 128)
    assert small.shape == (128, 128, 3) and small.dtype == np.float32 and small.flags.c_contiguous
    assert np.allclose(small, expected, atol=1e-6)
    assert np.allclose(resize_image(window[..., 0], 128), expected[..., 0], atol=1e-6)


def test_large_windows_shrink_like_the_exact_resize():
    """Block means first (fast), then the anti-aliased resize: same picture, same mask."""
    window = resize(data.astronaut() / 255.0, (1500, 1500, 3)).astype(np.float32)
    exact = resize(window, (128, 128, 3), order=1, anti_aliasing=True, preserve_range=True)
    fast = resize_image(window, 128)
    assert fast.shape == (128, 128, 3) and fast.dtype == np.float32
    assert np.abs(fast - exact).mean() < 0.01
    mask = np.zeros((1500, 1500), bool)
    mask[300:1100, 400:900] = True
    small = resize_mask(mask, 128)
    assert abs(small.mean() - mask.mean()) < 0.005


def test_resize_prompt_keeps_thin_lines_and_clicks_when_shrinking():
    """A 1-px pen line or a small click in a window shrunk 4x vanishes by area coverage, never as a prompt."""
    line = np.zeros((640, 640), bool)
    line[300, 40:600] = True
    click = np.zeros((640, 640), bool)
    click[100:103, 500:503] = True
    assert not resize_mask(line, 160).any() and not resize_mask(click, 160).any()
    small_line = resize_prompt(line, 160)
    assert small_line[75].sum() == 140 and small_line.sum() == 140  # one row: row 300 // 4, cols 10..149
    assert np.argwhere(resize_prompt(click, 160)).tolist() == [[25, 125]]


def test_resize_prompt_is_resize_mask_when_growing():
    stroke = np.zeros((90, 90), bool)
    stroke[40:43, 10:80] = True
    assert np.array_equal(resize_prompt(stroke, 160), resize_mask(stroke, 160))


def test_block_mean_is_skimages_local_mean():
    rng = np.random.default_rng(0)
    for shape in ((60, 84), (60, 84, 3)):
        image = rng.random(shape).astype(np.float32)
        factors = (6, 6) if len(shape) == 2 else (6, 6, 1)
        assert np.allclose(block_mean(image, 6), downscale_local_mean(image, factors), atol=1e-6)


class _CountingArray:
    """An H×W×C array that records the pixels of every block read from it (a lazy image's reads)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append(block.shape[0] * block.shape[1])
        return block


def _scaled(block: np.ndarray) -> np.ndarray:
    return block.astype(np.float32) / 255.0


def test_a_large_window_is_read_in_strips_with_the_same_result(monkeypatch):
    """A window around a huge object never exists whole as floats, and the input does not change."""
    image = (data.astronaut()[:, :400]).astype(np.uint8)  # 512 x 400 x 3
    roi = ROI(-150, -200, 900)  # overhangs three sides; 900 // (2 * 64) = 7-fold block means
    whole = resize_image(_scaled(crop(image, roi)) * roi.inside(image.shape[:2])[..., None], 64)
    monkeypatch.setattr(roi_module, "STRIP_PIXELS", 20_000)
    counting = _CountingArray(image)
    strips = read_resized(counting, roi, 64, _scaled)
    assert strips.shape == (64, 64, 3) and np.allclose(strips, whole, atol=1e-6)
    assert len(counting.reads) > 10 and max(counting.reads) <= 20_000 + 7 * 900


def test_a_small_window_is_read_once():
    image = data.astronaut()
    roi = ROI(100, 120, 200)
    counting = _CountingArray(image)
    out = read_resized(counting, roi, 64, _scaled)
    assert counting.reads == [200 * 200]
    assert np.allclose(out, resize_image(_scaled(crop(image, roi)), 64), atol=1e-6)


def test_a_prompt_is_read_from_its_in_image_pixels_as_resize_prompt_would():
    stroke = np.zeros((300, 400), bool)
    stroke[150, 10:390] = True
    stroke[20:23, 30:33] = True
    for roi in (ROI(-500, -300, 1200), ROI(100, 100, 90), ROI(0, 0, 300)):
        expected = resize_prompt(crop(stroke, roi), 64)
        assert np.array_equal(read_prompt(stroke, roi, 64), expected)
