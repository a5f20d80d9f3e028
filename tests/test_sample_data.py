"""The bundled sample: the PNGs match their generating script, the references are the stroked coins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, measure

from napari_segmentello._sample_data import load_sample, make_sample_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def make_sample(script):
    return script("make_sample")


def test_load_sample_shapes_and_ids():
    image, strokes, reference = load_sample()
    np.testing.assert_array_equal(image, data.coins())
    assert strokes.shape == reference.shape == image.shape
    assert strokes.dtype == reference.dtype == np.uint8
    assert set(np.unique(strokes)) == set(np.unique(reference)) == {0, 1, 2, 3}


def test_each_stroke_lies_inside_its_own_single_round_coin():
    image, strokes, reference = load_sample()
    for i in (1, 2, 3):
        obj = reference == i
        assert (reference[strokes == i] == i).all(), f"stroke {i} leaves its reference"
        assert measure.label(obj).max() == 1, f"reference {i} is not one piece"
        (props,) = measure.regionprops(obj.astype(np.uint8))
        assert props.solidity > 0.95 and props.eccentricity < 0.6, f"reference {i} is not coin-shaped"
        assert 3 * (strokes == i).sum() < obj.sum(), "a stroke should be rough, not the answer"
        # A coin is bright on a dark background: the mask's inside is much brighter than a band around it.
        band = ndi.binary_dilation(obj, iterations=4) & ~ndi.binary_dilation(obj, iterations=1)
        assert image[obj].mean() > image[band].mean() + 40


def test_pngs_are_what_the_script_makes(make_sample):
    image, strokes, reference = load_sample()
    redrawn = make_sample.draw_strokes(image.shape)
    np.testing.assert_array_equal(redrawn, strokes)
    np.testing.assert_array_equal(make_sample.reference_masks(make_sample.coin_components(image), redrawn), reference)


def test_make_sample_data_gives_napari_layer_tuples():
    (img, img_kw, img_kind), (lab, lab_kw, lab_kind) = make_sample_data()
    assert (img_kind, lab_kind) == ("image", "labels")
    assert img.shape == lab.shape and lab.dtype == np.uint8 and lab.max() == 3
    assert img_kw["name"] and lab_kw["name"] != img_kw["name"]


def test_sample_module_imports_neither_napari_nor_qt():
    code = (
        "import sys, napari_segmentello._sample_data as s; s.load_sample(); s.make_sample_data()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'magicgui')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
