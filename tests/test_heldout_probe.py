"""``scripts/heldout_probe.py``'s synthetic clips: the object travels with its own pixels, frame 0 is the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk


@pytest.fixture(scope="module")
def probe(script):
    return script("heldout_probe")


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)  # dark noise
    mask = np.zeros((120, 160), bool)
    mask[disk((60, 80), 15)] = True
    image[mask] = (250, 30, 30)  # a red disc
    return image, mask


def test_a_clip_starts_at_the_image_and_moves_the_object_with_its_pixels(probe):
    image, mask = _scene()
    frames, masks = probe.clip(image, mask, np.random.default_rng(3), frames=8, deform=0.05)
    assert frames.shape == (8, *image.shape) and masks.shape == (8, *mask.shape)
    np.testing.assert_array_equal(frames[0], image)
    np.testing.assert_array_equal(masks[0], mask)
    centres = np.array([ndi.center_of_mass(m) for m in masks])
    assert np.linalg.norm(centres[-1] - centres[0]) > 2  # it moved
    for frame, m in zip(frames, masks, strict=True):
        assert 0.8 < m.sum() / mask.sum() < 1.25  # turned, zoomed and bent a little, not lost
        assert (frame[m][:, 0] > 200).mean() > 0.9  # the mask covers the red disc in that frame


@pytest.mark.data
def test_neighbour_strokes_lie_on_the_images_other_objects(probe, data_root):
    from napari_segmentello.data import CocoInstances, dataset_files

    source = CocoInstances(*dataset_files("dsb2018-nuclei", "train", data_root), max_images=1)
    inst = source[0]
    others = probe.neighbour_strokes(source, inst)
    anns = source.coco.loadAnns(source.coco.getAnnIds(imgIds=[inst.image_id]))
    masks = [source.coco.annToMask(a).astype(bool) for a in anns if a["id"] != inst.ann_id]
    assert len(masks) > 1 and others is not None and not (others & inst.mask).any()
    on = np.logical_or.reduce(masks)
    assert (others & on).sum() > 0.9 * others.sum()  # painted over the other nuclei
    assert sum((others & m).any() for m in masks) > len(masks) // 2  # most of them


def test_the_mean_of_sets_and_its_standard_error(probe):
    a = np.array([[0.0, 1.0], [2.0, 3.0]])  # set 1: two objects, two figures
    b = np.array([[4.0, 5.0], [4.0, 7.0], [4.0, 9.0]])
    mean, error = probe.set_mean([a, b])
    np.testing.assert_allclose(mean, [(1 + 4) / 2, (2 + 7) / 2])
    var_a, var_b = a.var(axis=0, ddof=1) / 2, b.var(axis=0, ddof=1) / 3  # each set mean's variance
    np.testing.assert_allclose(error, np.sqrt(var_a + var_b) / 2)
    assert probe.set_mean([a[:1]])[1].tolist() == [0.0, 0.0]  # one object: no spread to measure
