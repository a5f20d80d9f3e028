"""Finetuning on user labels: it lowers the loss on real objects, saves a loadable checkpoint, and checks input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segmentello.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.engine import Refiner
from napari_segmentello.loader import load_model
from napari_segmentello.finetune import FinetuneCancelled, collect_objects, finetune, make_batch
from napari_segmentello.losses import make_loss
from napari_segmentello.models import build_model

TINY = {"working_size": 32}  # small windows keep every step cheap


def _source(tmp_path, name="source.pt", *, half=False, provenance=None, **spec) -> str:
    torch.manual_seed(0)
    model = build_model("tiny16-32", **{**TINY, **spec})
    return str(save_checkpoint(tmp_path / name, model, half=half, provenance=provenance))


def _blobs(shape=(60, 70)) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic gray image with two bright labelled squares."""
    image = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.int32)
    for value, (r, c) in enumerate([(10, 10), (35, 40)], start=1):
        image[r : r + 15, c : c + 15] = 200
        labels[r : r + 15, c : c + 15] = value
    return image, labels


@pytest.fixture(scope="module")
def coco_pairs(data_root) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two real coco-mini *train* images with their objects as label images."""
    instances = CocoInstances(*dataset_files("coco-mini", "train", data_root), max_images=2)
    pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in range(len(instances)):
        inst = instances[i]
        image, labels = pairs.setdefault(inst.image_id, (inst.image, np.zeros(inst.mask.shape, np.int32)))
        labels[inst.mask & (labels == 0)] = i + 1
    return list(pairs.values())


def _loss(model, x, y) -> float:
    with torch.no_grad():
        return float(make_loss("bce-dice")(model.eval()(x), y))


@pytest.mark.data
def test_finetuning_lowers_the_loss_on_real_objects(coco_pairs, tmp_path):
    source = _source(tmp_path)
    data = collect_objects(coco_pairs)
    spec = load_checkpoint(source).spec
    x, y = make_batch(data, range(len(data)), spec, "click", np.random.default_rng(123))
    before = _loss(load_model_from_checkpoint(source), x, y)
    labels_before = [labels.copy() for _, labels in coco_pairs]
    steps = []
    out = finetune(
        coco_pairs,
        model=source,
        out=tmp_path / "ft.pt",
        minutes=10 / 60,
        device="cpu",
        protocol="click",  # the cheapest strokes: more steps in the 10 s
        batch_size=2,
        lr=1e-3,  # random weights: the default 1e-4 is for nudging trained ones
        progress=lambda step, total, loss: steps.append((step, total, loss)),
    )
    after = _loss(load_model_from_checkpoint(out), x, y)
    assert after < before, (before, after)
    assert out == tmp_path / "ft.pt"
    ckpt = load_checkpoint(out)
    assert ckpt.provenance["finetuned_from"] == source
    assert ckpt.provenance["objects"] == len(data) >= 3
    assert ckpt.provenance["steps"] == len(steps) >= 2
    assert ckpt.provenance["minutes"] == pytest.approx(10 / 60)
    assert np.isfinite(ckpt.metrics["train_loss"])
    assert [s for s, _, _ in steps] == list(range(1, len(steps) + 1))
    assert all(total >= step for step, total, _ in steps)
    for (_, labels), kept in zip(coco_pairs, labels_before, strict=True):
        np.testing.assert_array_equal(labels, kept)
    refiner = Refiner(out, device="cpu")
    refiner.set_image(coco_pairs[0][0])
    assert refiner.predict(coco_pairs[0][1] == coco_pairs[0][1].max()).shape == coco_pairs[0][1].shape
    assert load_model(out, device="cpu").spec == spec


def test_precision_and_recipe_follow_the_source(tmp_path):
    recipe = {"protocol": "click", "loss": "dice", "correction_prob": 0.5}
    source = _source(tmp_path, half=True, provenance={"config": recipe}, extras=("pos", "neg", "prev"))
    out = finetune([_blobs()], model=source, out=tmp_path / "ft.pt", minutes=1e-4, device="cpu", batch_size=2)
    stored = torch.load(out, weights_only=True)["state_dict"]
    assert any(v.dtype == torch.float16 for v in stored.values())
    record = load_checkpoint(out).provenance["finetune"]
    assert {k: record[k] for k in recipe} == recipe
    assert load_checkpoint(out).provenance["source_provenance"]["config"] == recipe


def test_unrecorded_recipe_uses_fallbacks_and_no_corrections_without_channels(tmp_path):
    out = finetune([_blobs()], model=_source(tmp_path), out=tmp_path / "ft.pt", minutes=1e-4, device="cpu")
    ckpt = load_checkpoint(out)
    assert ckpt.provenance["finetune"]["correction_prob"] == 0.0
    assert ckpt.provenance["finetune"]["loss"] == "bce-dice"
    assert not any(v.dtype == torch.float16 for v in ckpt.state_dict.values())


def test_a_module_can_be_finetuned_and_is_left_untouched(tmp_path):
    torch.manual_seed(0)
    module = build_model("tiny16-32", **TINY)
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    out = finetune([_blobs()], model=module, out=tmp_path / "ft.pt", minutes=1e-4, device="cpu", lr=1e-2)
    for k, v in module.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert load_checkpoint(out).provenance["finetuned_from"] == "UNet"


def test_correction_samples_show_the_previous_mask_and_negative_clicks(tmp_path):
    data = collect_objects([_blobs()])
    spec = load_checkpoint(_source(tmp_path, extras=("pos", "neg", "prev"))).spec
    x, _ = make_batch(data, [0, 1], spec, "scribble", np.random.default_rng(0), correction_prob=1.0)
    assert x.shape == (2, spec.in_channels, 32, 32)
    assert (x[:, 5] > 0).any()  # channel order: RGB, pos, neg, prev


def test_stacks_count_each_labelled_plane():
    image, labels = _blobs()
    stack = np.stack([image, image, image])
    label_stack = np.stack([labels, np.zeros_like(labels), labels == 1]).astype(np.int32)
    data = collect_objects([(stack, label_stack), (np.repeat(image[..., None], 3, axis=2), labels)])
    assert len(data) == 2 + 1 + 2 and len(data.planes) == 3
    assert data.planes[0].image.shape == (*labels.shape, 1) and data.planes[2].image.shape == (*labels.shape, 3)


def test_cancel_raises_and_writes_nothing(tmp_path):
    with pytest.raises(FinetuneCancelled):
        finetune([_blobs()], model=_source(tmp_path), out=tmp_path / "ft.pt", device="cpu", should_stop=lambda: True)
    assert not (tmp_path / "ft.pt").exists()


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([], "no labelled objects"),
        ([(np.zeros((20, 20)), np.zeros((20, 20), int))], "no labelled objects"),
        (
            [(np.zeros((20, 20)), np.pad(np.ones((3, 3), int), ((5, 12), (5, 12))))],
            "no labelled objects",
        ),  # 9 px: a slip
        ([(np.zeros((20, 20)), np.zeros((20, 21), int))], "do not line up"),
        ([(np.zeros((20, 20)), np.zeros((20, 20)))], "integer label image"),
        ([(np.zeros((20, 20), str), np.zeros((20, 20), int))], "numbers"),
        ([np.zeros((20, 20))], r"pairs\[0\]"),
    ],
)
def test_bad_pairs_are_value_errors(pairs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        finetune(pairs, model=_source(tmp_path), out=tmp_path / "ft.pt", device="cpu")


@pytest.mark.parametrize("kwargs", [{"minutes": 0}, {"batch_size": 0}, {"lr": -1.0}, {"minutes": float("nan")}])
def test_bad_settings_are_value_errors(kwargs, tmp_path):
    with pytest.raises(ValueError):
        finetune([_blobs()], model=_source(tmp_path), out=tmp_path / "ft.pt", device="cpu", **kwargs)
