"""The bundled ``default`` refiner: shipped, self-describing, small, and actually refining.

Thresholds are floors well below what the model measures (README results), set
to catch a broken or untrained bundle, not to restate the results.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_segmentello import list_models
from napari_segmentello._sample_data import load_sample
from napari_segmentello.checkpoint import load_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.engine import Refiner, refine_labels
from napari_segmentello.loader import WEIGHTS_DIR
from napari_segmentello.metrics import iou
from napari_segmentello.strokes import simulate_stroke

DEFAULT = WEIGHTS_DIR / "default.pt"


def test_default_is_bundled_first_small_object_aware_and_describes_itself():
    assert list_models()[0] == "default"
    assert DEFAULT.stat().st_size <= 25_000_000
    ckpt = load_checkpoint(DEFAULT)
    assert ckpt.spec.context == "object" and {"neg", "prev", "box"} <= set(ckpt.spec.extras)
    config = ckpt.provenance["config"]
    assert config["model"] == ckpt.spec.name
    trained_on = {entry["ann_file"].split("/")[-3] for entry in ckpt.provenance["datasets"]}
    assert trained_on == {"coco-mini", "coco-mval", "dsb2018-nuclei", "nuclei-histology", "em-isbi2012"}
    assert all(entry["ann_file"].endswith("instances_train.json") for entry in ckpt.provenance["datasets"])
    assert 0.0 < ckpt.metrics["coco-mini/val"]["scribble"]["iou"] <= 1.0


@pytest.mark.parametrize(
    ("name", "model", "context"),
    [
        ("fast-2026c", "lite0-64", "object"),
        ("fast-2026b", "lite0-64", "object"),
        ("fast-2026", "lite0-64", "object"),
        ("lite0-2026", "lite0-128", "object"),
        ("tiny-2025", "tiny16-128", "stroke"),
    ],
)
def test_the_previous_defaults_stay_loadable_by_name(name, model, context):
    ckpt = load_checkpoint(WEIGHTS_DIR / f"{name}.pt")
    assert ckpt.spec.name == model and ckpt.spec.context == context
    assert Refiner(name, device="cpu").spec == ckpt.spec


@pytest.mark.parametrize("model", ["default", "lite0-2026"])
def test_default_refines_the_bundled_sample(model):
    image, strokes, reference = load_sample()
    refined = refine_labels(image, strokes, model=model, device="cpu")
    ids = [i for i in np.unique(strokes) if i]
    refined_iou = np.mean([iou(reference == i, refined == i) for i in ids])
    stroke_iou = np.mean([iou(reference == i, strokes == i) for i in ids])
    assert refined_iou > 0.8
    assert refined_iou > stroke_iou + 0.2


def _val_objects(data_root, refiner: Refiner, n: int = 20):
    """The first ``n`` coco-mini val objects (of its first 6 images), ``refiner`` set on each one's image."""
    instances = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=6)
    for i in range(min(len(instances), n)):
        inst = instances[i]
        refiner.set_image(inst.image)
        yield inst


@pytest.mark.data
def test_default_beats_the_scribble_itself_on_real_val_objects(data_root):
    refiner = Refiner("default", device="cpu")
    gains = []
    for inst in _val_objects(data_root, refiner):
        stroke = simulate_stroke(inst.mask, "scribble", np.random.default_rng([7, inst.ann_id]))
        gains.append(iou(inst.mask, refiner.predict(stroke)) - iou(inst.mask, stroke))
    assert np.mean(gains) > 0.05  # measured +0.15 on these 20 objects; a broken bundle goes negative


@pytest.mark.data
def test_default_refines_rough_masks_better_as_priors_than_as_strokes(data_root):
    """What "Rough masks" is for: a coarse mask or lasso given as the prior, not as a stroke."""
    refiner = Refiner("default", device="cpu")
    gains = []
    for inst in _val_objects(data_root, refiner):
        for protocol in ("coarse", "lasso"):
            rough = simulate_stroke(inst.mask, protocol, np.random.default_rng([7, inst.ann_id]))
            gains.append(iou(inst.mask, refiner.predict(prior=rough)) - iou(inst.mask, refiner.predict(rough)))
    assert np.mean(gains) > 0.04  # measured +0.11 on these 40 masks (coarse +0.10, lasso +0.11)


def test_default_continues_the_previous_defaults_which_are_lite0_2026_at_half_width_distilled():
    ckpt, before = load_checkpoint(DEFAULT), load_checkpoint(WEIGHTS_DIR / "fast-2026c.pt")
    second = load_checkpoint(WEIGHTS_DIR / "fast-2026b.pt")
    fast, teacher = load_checkpoint(WEIGHTS_DIR / "fast-2026.pt"), load_checkpoint(WEIGHTS_DIR / "lite0-2026.pt")
    assert ckpt.spec == before.spec == second.spec == fast.spec
    assert (fast.spec.name, teacher.spec.name) == ("lite0-64", "lite0-128") and ckpt.spec.extras == teacher.spec.extras
    # each run started from the weights bundled as default then: run 24 from 23, 23 from 21, 21 from 12
    for run, start in ((ckpt, before), (before, second), (second, fast)):
        assert run.provenance["init_checkpoint"]["provenance"]["created_utc"] == start.provenance["created_utc"]
        assert run.provenance["config"]["teacher"] is None
    assert [c.provenance["config"]["encoder_lr_scale"] for c in (ckpt, before)] == [0.5, 0.1]  # run 24's one change
    assert fast.provenance["config"]["teacher"] == "default"  # trained while lite0-2026 was bundled as default
