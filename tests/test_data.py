"""COCO-format instance loading: filtering counts, mask decoding, image conversion, data-root lookup."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imsave

from napari_segmentello.data import DATASETS, CocoInstances, dataset_files, default_data_root, read_rgb

CHECKOUT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- data root


def test_env_variable_overrides_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGMENTELLO_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        dataset_files("coco-mini", "val")


def test_default_root_is_beside_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("SEGMENTELLO_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # independent of the working directory
    assert default_data_root().resolve() == (CHECKOUT.parent / "shared" / "data").resolve()


@pytest.mark.data
def test_dataset_files_rejects_unknown_names(data_root):
    with pytest.raises(KeyError, match="coco-mini"):
        dataset_files("imagenet", "val", data_root)
    with pytest.raises(ValueError, match="split"):
        dataset_files("coco-mini", "test", data_root)
    images, ann = dataset_files("dsb2018-nuclei", "train", data_root)
    assert images.is_dir() and ann.name == "instances_train.json"


# ---------------------------------------------------------------- real data


@pytest.mark.data
def test_coco_mini_val_counts_add_up(data_root):
    images, ann_file = dataset_files("coco-mini", "val", data_root)
    raw = json.loads(ann_file.read_text())
    ds = CocoInstances(images, ann_file)
    assert len(ds.coco.anns) == len(raw["annotations"]) == 815
    assert len(ds) + sum(ds.skipped.values()) == 815
    assert ds.skipped["crowd"] == sum(a.get("iscrowd", 0) for a in raw["annotations"])
    assert ds.skipped["missing_file"] == 0
    assert 0.8 * 815 < len(ds) < 815
    assert ds.image_ids == sorted(img["id"] for img in raw["images"])
    assert f"{len(ds)} instances" in ds.summary()


@pytest.mark.data
def test_coco_mini_items_are_rgb_images_with_nonempty_masks(data_root):
    ds = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=4)
    assert len(ds) > 0
    for i in range(len(ds)):
        inst = ds[i]
        assert (inst.image_id, inst.ann_id) == ds.items[i]
        assert inst.image.dtype == np.uint8 and inst.image.shape[2] == 3
        assert inst.mask.dtype == bool and inst.mask.shape == inst.image.shape[:2]
        assert inst.mask.sum() >= ds.min_area
        assert inst.category == ds.coco.cats[ds.coco.anns[inst.ann_id]["category_id"]]["name"]
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.data
def test_max_images_and_min_area_filter(data_root):
    files = dataset_files("coco-mini", "val", data_root)
    few = CocoInstances(*files, max_images=3)
    assert few.image_ids == sorted(few.coco.getImgIds())[:3]
    assert {image_id for image_id, _ in few.items} <= set(few.image_ids)
    strict = CocoInstances(*files, max_images=3, min_area=2000)
    assert len(strict) < len(few)
    assert strict.skipped["small"] - few.skipped["small"] == len(few) - len(strict)
    with pytest.raises(ValueError, match="max_images"):
        CocoInstances(*files, max_images=0)


@pytest.mark.data
def test_dsb_rle_masks_decode_to_their_area(data_root):
    ds = CocoInstances(*dataset_files("dsb2018-nuclei", "val", data_root), max_images=2)
    assert len(ds) > 0
    for i in range(len(ds)):
        inst = ds[i]
        ann = ds.coco.anns[inst.ann_id]
        assert isinstance(ann["segmentation"], dict)  # RLE, not polygons
        assert inst.mask.sum() == ann["area"]
        assert inst.image.shape == (*inst.mask.shape, 3)


@pytest.mark.data
def test_load_image_returns_a_fresh_copy(data_root):
    ds = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=1)
    image_id = ds.image_ids[0]
    first = ds.load_image(image_id)
    before = first.copy()
    first[:] = 0
    np.testing.assert_array_equal(ds.load_image(image_id), before)
    with pytest.raises(KeyError, match="-1"):
        ds.load_image(-1)


@pytest.mark.data
def test_acdc_instances_carry_the_annotators_strokes(data_root):
    ds = CocoInstances(*dataset_files("acdc-scribbles", "val", data_root), min_area=10)
    assert len(ds) == 1267 and sum(ds.skipped.values()) == 0  # the README's count, every object kept
    by_image: dict[int, list] = {}
    for i in range(0, len(ds), 25):
        inst = ds[i]
        assert inst.scribble.dtype == inst.negative_scribble.dtype == bool
        assert inst.scribble.shape == inst.negative_scribble.shape == inst.mask.shape
        assert inst.scribble.any()
        assert (inst.scribble & inst.mask).sum() > 0.9 * inst.scribble.sum()  # drawn on the object
        assert not (inst.negative_scribble & inst.mask).any()  # "not this" lies off the object
        by_image.setdefault(inst.image_id, []).append(inst.negative_scribble)
    first = ds[0]
    same_slice = [ds[i] for i, (image_id, _) in enumerate(ds.items) if image_id == first.image_id]
    assert len(same_slice) > 1 and all(np.array_equal(o.negative_scribble, first.negative_scribble) for o in same_slice)
    assert not any(np.array_equal(o.scribble, first.scribble) for o in same_slice[1:])  # one stroke per object


@pytest.mark.data
def test_sets_without_recorded_strokes_have_none(data_root):
    inst = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=1)[0]
    assert inst.scribble is None and inst.negative_scribble is None


@pytest.mark.data
@pytest.mark.parametrize("name", DATASETS)
def test_every_named_dataset_opens(name, data_root):
    split = "val" if name != "coco-mval" else "train"  # coco-mval is training data only
    ds = CocoInstances(*dataset_files(name, split, data_root), max_images=2)
    assert len(ds) > 0 and ds[0].mask.any()


def _check_data(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEGMENTELLO_DATA": str(root)}
    return subprocess.run(
        ["bash", str(CHECKOUT / ".ci" / "check-data"), *args], env=env, capture_output=True, text=True
    )


def _link_tree(real: Path, fake: Path, paths: list[str]) -> None:
    for path in paths:
        (fake / path).parent.mkdir(parents=True, exist_ok=True)
        (fake / path).symlink_to(real / path)


@pytest.mark.data
def test_ci_data_check_covers_every_named_dataset_and_davis(data_root):
    required = _check_data(data_root, "--list").stdout.split()
    sets = {path.split("/")[0] for path in required}
    assert sets == {*DATASETS, "davis2016"}
    assert _check_data(data_root).returncode == 0


@pytest.mark.data
def test_ci_data_check_fails_loudly_naming_each_missing_path(data_root, tmp_path):
    required = _check_data(data_root, "--list").stdout.split()
    for missing in required:
        fake = tmp_path / missing.replace("/", "_")
        _link_tree(data_root, fake, [p for p in required if p != missing])
        result = _check_data(fake)
        assert result.returncode == 1 and "FATAL" in result.stderr
        assert result.stderr.split(":\n", 1)[1].split()[0] == missing


def test_a_malformed_stroke_rle_names_the_annotation(tmp_path):
    images, ann_file = _write_dataset(tmp_path)
    dataset = json.loads(ann_file.read_text())
    dataset["annotations"][0]["scribble"] = {"size": [40, 50]}  # no counts
    ann_file.write_text(json.dumps(dataset))
    with pytest.warns(UserWarning):
        ds = CocoInstances(images, ann_file)
    with pytest.raises(ValueError, match="annotation 1: 'scribble'"):
        ds[0]


# ---------------------------------------------------------------- synthetic files


def _square(y: int, x: int, side: int) -> list[list[float]]:
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def _write_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three 40×50 images (gray, RGBA, missing) with big, small and crowd annotations."""
    images = tmp_path / "images"
    images.mkdir()
    imsave(images / "gray.png", np.full((40, 50), 100, np.uint8), check_contrast=False)
    imsave(images / "rgba.png", np.full((40, 50, 4), 200, np.uint8), check_contrast=False)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": _square(5, 5, 20)},
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": _square(30, 30, 3)},
        {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1, "segmentation": _square(5, 5, 20)},
        {"id": 4, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": _square(10, 10, 15)},
        {"id": 5, "image_id": 3, "category_id": 7, "iscrowd": 0, "segmentation": _square(5, 5, 20)},
    ]
    for ann in anns:
        ann["area"] = 400.0  # deliberately wrong: the filter must use decoded pixel counts
        ann["bbox"] = [0, 0, 1, 1]
    dataset = {
        "images": [
            {"id": 1, "file_name": "gray.png", "height": 40, "width": 50},
            {"id": 2, "file_name": "rgba.png", "height": 40, "width": 50},
            {"id": 3, "file_name": "missing.png", "height": 40, "width": 50},
        ],
        "annotations": anns,
        "categories": [{"id": 7, "name": "blob"}],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(dataset))
    return images, ann_file


def test_missing_files_are_counted_and_warned_not_fatal(tmp_path):
    images, ann_file = _write_dataset(tmp_path)
    with pytest.warns(UserWarning, match="missing.png"):
        ds = CocoInstances(images, ann_file)
    assert ds.skipped == {"crowd": 1, "small": 1, "missing_file": 1}
    assert ds.items == [(1, 1), (2, 4)]
    assert "1 missing_file" in ds.summary()


def test_gray_and_rgba_images_become_rgb(tmp_path):
    images, ann_file = _write_dataset(tmp_path)
    with pytest.warns(UserWarning):
        ds = CocoInstances(images, ann_file)
    gray, rgba = ds[0], ds[1]
    assert gray.image.shape == rgba.image.shape == (40, 50, 3)
    assert (gray.image == 100).all() and (rgba.image == 200).all()
    assert gray.category == "blob"
    assert gray.mask.dtype == bool and 350 < gray.mask.sum() <= 441  # 20-px polygon square


def test_read_rgb_scales_16_bit_images(tmp_path):
    path = tmp_path / "deep.png"
    imsave(path, np.full((8, 9), 65535, np.uint16), check_contrast=False)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (8, 9, 3) and (out == 255).all()


def test_image_size_disagreeing_with_json_is_an_error(tmp_path):
    images, ann_file = _write_dataset(tmp_path)
    imsave(images / "gray.png", np.zeros((10, 10), np.uint8), check_contrast=False)
    with pytest.warns(UserWarning):
        ds = CocoInstances(images, ann_file)
    with pytest.raises(ValueError, match="gray.png"):
        ds[0]


def test_corrupt_annotation_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        CocoInstances(tmp_path, bad)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        CocoInstances(tmp_path, tmp_path / "absent.json")
