"""``scripts/device_pack.py``: the packed data gives training the same objects and split as the shared data."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from napari_segmentello.data import CocoInstances
from training.config import load_config
from training.dataset import open_sources, split_items


@pytest.mark.data
def test_the_pack_holds_the_same_objects_and_split(script, tmp_path, monkeypatch):
    config = tmp_path / "small.toml"
    config.write_text(
        'model = "lite0-128"\n'
        '[[datasets]]\ndataset = "coco-mini"\nsplit = "train"\nmax_images = 4\n'
        '[[datasets]]\ndataset = "dsb2018-nuclei"\nsplit = "train"\nmax_images = 3\n'
    )
    before = open_sources(load_config(config))
    out = tmp_path / "pack"
    assert script("device_pack").main(["--config", str(config), "--out", str(out), "--quality", "60"]) == 0
    for name in ("coco-mini", "dsb2018-nuclei"):  # unpacked as device_train.sh does
        ann = out / name / "annotations" / "instances_train.json"
        with gzip.open(f"{ann}.gz", "rb") as src, ann.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    monkeypatch.setenv("SEGMENTELLO_DATA", str(out))
    after = open_sources(load_config(config))
    for old, new in zip(before, after, strict=True):
        assert new.items == old.items and new.image_ids == old.image_ids
        assert isinstance(new, CocoInstances) and new.skipped == old.skipped
        a, b = old[0], new[0]
        assert np.array_equal(a.mask, b.mask) and a.image.shape == b.image.shape
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 12  # JPEG re-encoded, same picture
    assert split_items(before, 0.25, 0) == split_items(after, 0.25, 0)


@pytest.mark.data
def test_a_pack_over_budget_is_refused(script, tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text('model = "lite0-128"\n[[datasets]]\ndataset = "em-isbi2012"\nsplit = "train"\nmax_images = 1\n')
    assert script("device_pack").main(["--config", str(config), "--out", str(tmp_path / "p"), "--budget", "0.001"]) == 2
    assert "over --budget" in capsys.readouterr().err
