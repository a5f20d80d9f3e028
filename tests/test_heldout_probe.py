"""``scripts/heldout_probe.py``'s synthetic clips: the object travels with its own pixels, frame 0 is the image."""

from __future__ import annotations

from pathlib import Path

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


def test_against_prints_paired_differences_object_by_object(probe, capsys):
    """Two stand-in models on the same objects: each row is the first's figures minus the second's."""
    from types import SimpleNamespace

    class Model:
        def __init__(self, offset: float) -> None:
            self.offset, self.images = offset, []

        def set_image(self, image) -> None:
            self.images.append(image)

    class Source:
        ann_file = Path("/data/toyset/annotations/instances_train.json")

        def __getitem__(self, i: int):
            return SimpleNamespace(image_id=i // 2, image=f"image {i // 2}")

    def figures(refiner, source, item, inst):
        return [refiner.offset + item, 10 * refiner.offset]

    a, b = Model(0.5), Model(0.25)
    probe._table(a, [(Source(), [0, 1, 2])], "x | y", figures, against=b)
    out = capsys.readouterr().out
    assert "paired" in out and "toyset | 3 | 0.250 | 2.500" in out and "± s.e. | | 0.000 | 0.000" in out
    assert a.images == b.images == ["image 0", "image 1"]  # both see each image, once
    probe._table(a, [(Source(), [0, 1, 2])], "x | y", figures)
    assert "toyset | 3 | 1.500 | 5.000" in capsys.readouterr().out  # unpaired: the model's own figures
