"""Evaluation, the classical baselines and the study reproduction, on real coco-mini val objects and synthetic discs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.models import build_model, get_spec
from napari_segmentello.roi import roi_from_stroke
from napari_segmentello.strokes import ROUGH_PROTOCOLS, simulate_stroke

from training import baselines, evaluate, reproduce  # noqa: E402

METHODS = ("model", "identity", "grabcut", "randomwalker")
KEYS = ("pixel_accuracy", "iou", "dice", "boundary_iou", "hausdorff", "hd95", "boundary_iou_1px")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("eval") / "tiny.pt", build_model("tiny16-32", working_size=64))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, checkpoint, data_root):
    out = tmp_path_factory.mktemp("eval") / "out"
    argv = ["--checkpoint", str(checkpoint), "--max-objects", "4", "--max-images", "12", "--device", "cpu"]
    assert evaluate.main([*argv, "--baselines", "grabcut,randomwalker,identity", "--grid", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.data
def test_evaluate_writes_results_for_the_model_and_every_baseline(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    assert results["n_objects"] == len(results["objects"]) == 4
    assert results["dataset"]["ann_file"].endswith("coco-mini/annotations/instances_val.json")
    assert results["spec"] == get_spec("tiny16-32", working_size=64).to_dict()
    assert set(results["methods"]) == set(METHODS)
    for summary in results["methods"].values():
        assert set(summary["mean"]) == set(summary["median"]) == set(KEYS)
        assert summary["latency_ms_median"] > 0
    for record in results["objects"]:
        assert set(record["metrics"]) == set(METHODS)
        assert all(0 <= record["metrics"][m][k] <= 1 for m in METHODS for k in KEYS if "iou" in k or k == "dice")
    for m in METHODS:
        mean_iou = np.mean([r["metrics"][m]["iou"] for r in results["objects"]])
        assert results["methods"][m]["mean"]["iou"] == pytest.approx(mean_iou)
    table = (evaluated / "results.md").read_text()
    assert all(f"| {m} |" in table for m in METHODS)
    assert (evaluated / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.data
def test_stroke_and_model_scores_match_a_direct_computation(evaluated, checkpoint, data_root):
    """Same object, same seeded stroke, recomputed here: the identity baseline's IoU is the stroke's IoU."""
    results = json.loads((evaluated / "results.json").read_text())
    instances = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=12)
    by_ann = {ann_id: i for i, (_, ann_id) in enumerate(instances.items)}
    refiner = Refiner(checkpoint, device="cpu")
    for record in results["objects"]:
        inst = instances[by_ann[record["ann_id"]]]
        stroke = simulate_stroke(inst.mask, "study", np.random.default_rng([results["seed"], inst.ann_id]))
        assert record["metrics"]["identity"]["iou"] == pytest.approx(iou(inst.mask, stroke))
        refiner.set_image(inst.image)
        assert record["metrics"]["model"]["iou"] == pytest.approx(iou(inst.mask, refiner.predict(stroke)))


def test_unknown_baseline_or_lonely_data_root_exit_2(checkpoint, tmp_path, capsys):
    ckpt = ["--checkpoint", str(checkpoint)]
    assert evaluate.main([*ckpt, "--baselines", "grabcut,watershed", "--out", str(tmp_path)]) == 2
    assert "watershed" in capsys.readouterr().err
    assert evaluate.main([*ckpt, "--data-root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--ann-file" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


# ---------------------------------------------------------------- baselines


def disc_scene(rgb: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright disc to segment, a second one far away (outside the ROI), noise; a coarse stroke inside the first.

    The stroke is what the study protocol draws (a shrunken blob of the object): its
    ROI holds the whole disc, as the baselines' background rule assumes.
    """
    yy, xx = np.mgrid[:120, :160]
    disc = (yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2
    other = (yy - 90) ** 2 + (xx - 130) ** 2 <= 15**2
    noise = np.random.default_rng(0).normal(0, 6, disc.shape)
    image = np.clip(30 + 170 * (disc | other) + noise, 0, 255).astype(np.uint8)
    stroke = ((yy - 51) / 14) ** 2 + ((xx - 49) / 12) ** 2 <= 1
    return (np.repeat(image[..., None], 3, axis=2) if rgb else image), stroke, disc


@pytest.mark.parametrize("name", ["grabcut", "randomwalker"])
@pytest.mark.parametrize("rgb", [True, False])
def test_baselines_segment_a_disc_inside_the_stroke_roi_only(name, rgb):
    image, stroke, disc = disc_scene(rgb)
    before = image.copy(), stroke.copy()
    pred = baselines.BASELINES[name](image, stroke)
    assert pred.shape == disc.shape and pred.dtype == bool
    assert iou(disc, pred) > 0.9
    rows, cols, _, _ = roi_from_stroke(stroke, margin=0.4).clipped(disc.shape)
    outside = np.ones(disc.shape, bool)
    outside[rows, cols] = False
    assert not pred[outside].any()  # the far disc is as bright, but outside the window
    assert np.array_equal(before[0], image) and np.array_equal(before[1], stroke)


def test_identity_is_the_stroke_and_bad_input_is_a_clear_error():
    image, stroke, _ = disc_scene()
    assert np.array_equal(baselines.identity(image, stroke.astype(np.uint8)), stroke)
    with pytest.raises(ValueError, match="margin"):
        baselines.grabcut(image, stroke, margin=0)
    with pytest.raises(ValueError, match="do not line up"):
        baselines.random_walker(image[:50], stroke)


# ---------------------------------------------------------------- reproduction


@pytest.mark.data
@pytest.mark.slow
def test_reproduce_writes_both_tables_with_the_published_row(tmp_path, data_root):
    argv = ["--configs", "tiny16-32_bce-dice", "--max-images", "3", "--max-steps", "1", "--budget-minutes", "0.01"]
    argv += ["--max-objects", "3", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)]
    threads = torch.get_num_threads()
    try:
        assert reproduce.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # training.run sets it process-wide
    report = (tmp_path / "reproduce.md").read_text()
    assert "0.8796" in report and "## Table 1" in report and "## Table 2: size" in report
    params = sum(p.numel() for p in build_model("tiny16-32", image_channels=1, extras=("pos", "grad")).parameters())
    table2 = report.split("## Table 2")[1]
    assert f"| tiny16-32_bce-dice | {params:,} |" in table2
    (row,) = json.loads((tmp_path / "reproduce.json").read_text())["rows"]
    assert row["epochs"] == 1 and row["n_objects"] == 3  # the budget stops training after its first epoch
    assert reproduce.main(["--configs", "nope", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- real strokes and boxes


@pytest.fixture(scope="module")
def neg_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("tiny16-32", working_size=32, extras=("pos", "neg"))
    return save_checkpoint(tmp_path_factory.mktemp("eval") / "neg.pt", model)


def _acdc(data_root):
    return CocoInstances(*dataset_files("acdc-scribbles", "val", data_root))


@pytest.mark.data
def test_real_protocol_scores_the_recorded_strokes_with_their_negatives(tmp_path, neg_checkpoint, data_root):
    out, grid = tmp_path / "out", tmp_path / "figures" / "real.png"
    argv = ["--checkpoint", str(neg_checkpoint), "--dataset", "acdc-scribbles", "--protocol", "real"]
    argv += ["--max-objects", "3", "--device", "cpu", "--grid", "2", "--grid-out", str(grid), "--out", str(out)]
    assert evaluate.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model_prompt"] == "stroke + negative strokes" and set(results["methods"]) == set(METHODS)
    instances = _acdc(data_root)
    by_ann = {ann_id: i for i, (_, ann_id) in enumerate(instances.items)}
    refiner = Refiner(neg_checkpoint, device="cpu")
    for record in results["objects"]:
        inst = instances[by_ann[record["ann_id"]]]
        assert record["metrics"]["identity"]["iou"] == pytest.approx(iou(inst.mask, inst.scribble))
        refiner.set_image(inst.image)
        pred = refiner.predict(inst.scribble, negative=inst.negative_scribble)
        assert record["metrics"]["model"]["iou"] == pytest.approx(iou(inst.mask, pred))
        rw = baselines.random_walker(inst.image, inst.scribble, negative=inst.negative_scribble)
        assert record["metrics"]["randomwalker"]["iou"] == pytest.approx(iou(inst.mask, rw))
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (out / "grid.png").exists()
    assert "stroke + negative strokes" in (out / "results.md").read_text()


@pytest.mark.data
def test_real_all_adds_the_other_structures_strokes_to_each_objects_not_this(tmp_path, neg_checkpoint, data_root):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(neg_checkpoint), "--dataset", "acdc-scribbles", "--protocol", "real-all"]
    assert evaluate.main([*argv, "--max-objects", "3", "--device", "cpu", "--grid", "0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "study families" in results["model_prompt"]  # a stroke-context model: predict_labels gives it no others
    instances = _acdc(data_root)
    by_ann = {ann_id: i for i, (_, ann_id) in enumerate(instances.items)}
    refiner = Refiner(neg_checkpoint, device="cpu")
    for record in results["objects"]:
        inst = instances[by_ann[record["ann_id"]]]
        strokes = instances.scribbles(inst.image_id)
        assert len(strokes) >= 2 and inst.ann_id in strokes  # a slice holds several painted structures
        others = np.logical_or.reduce([m for k, m in strokes.items() if k != inst.ann_id])
        negative = inst.negative_scribble | (others & ~inst.scribble)
        assert (negative & ~inst.negative_scribble).any()
        refiner.set_image(inst.image)
        pred = refiner.predict(inst.scribble, negative=inst.negative_scribble)
        assert record["metrics"]["model"]["iou"] == pytest.approx(iou(inst.mask, pred))
        rw = baselines.random_walker(inst.image, inst.scribble, negative=negative)
        assert record["metrics"]["randomwalker"]["iou"] == pytest.approx(iou(inst.mask, rw))


@pytest.mark.data
def test_real_all_gives_an_object_aware_model_every_stroke_painted_as_not_this(data_root):
    instances = _acdc(data_root)
    inst = instances[0]
    others = np.logical_or.reduce([m for k, m in instances.scribbles(inst.image_id).items() if k != inst.ann_id])
    prompt = evaluate.make_prompt(inst, "real-all", seed=0, others=others)
    np.testing.assert_array_equal(prompt.not_this, inst.negative_scribble | (others & ~inst.scribble))
    torch.manual_seed(0)
    refiner = Refiner(build_model("lite0-64"), device="cpu")
    ask, note = evaluate.model_call(refiner, "real-all")
    assert "other structures" in note
    refiner.set_image(inst.image)
    np.testing.assert_array_equal(ask(prompt), refiner.predict(inst.scribble, negative=prompt.not_this))
    assert evaluate.make_prompt(inst, "real", seed=0, others=others).others is None  # "real": the object alone


@pytest.mark.data
def test_a_model_without_a_negative_input_gets_the_positive_stroke_and_says_so(checkpoint, data_root):
    inst = _acdc(data_root)[0]
    refiner = Refiner(checkpoint, device="cpu")  # extras ("pos",)
    ask, note = evaluate.model_call(refiner, "real")
    assert "positive stroke only" in note
    refiner.set_image(inst.image)
    prompt = evaluate.make_prompt(inst, "real", seed=0)
    assert prompt.negative is not None and prompt.negative.any()
    np.testing.assert_array_equal(ask(prompt), refiner.predict(inst.scribble))


@pytest.mark.data
def test_real_protocol_refuses_a_dataset_without_recorded_strokes(data_root):
    inst = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=1)[0]
    with pytest.raises(ValueError, match="recorded human strokes"):
        evaluate.make_prompt(inst, "real", seed=0)


@pytest.mark.data
def test_box_protocol_reports_a_model_without_a_box_channel_instead_of_crashing(tmp_path, checkpoint, data_root):
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--protocol", "box", "--max-objects", "3", "--max-images", "12"]
    assert evaluate.main([*argv, "--device", "cpu", "--grid", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model_prompt"] == "model takes no box"
    assert set(results["methods"]) == {"grabcut", "identity"}
    instances = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=12)
    by_ann = {ann_id: i for i, (_, ann_id) in enumerate(instances.items)}
    for record in results["objects"]:
        inst = instances[by_ann[record["ann_id"]]]
        box = evaluate.make_prompt(inst, "box", seed=results["seed"]).box
        assert record["metrics"]["identity"]["iou"] == pytest.approx(
            iou(inst.mask, baselines.box_mask(inst.mask.shape, box))
        )
        grabcut = baselines.grabcut_box(inst.image, box)
        assert record["metrics"]["grabcut"]["iou"] == pytest.approx(iou(inst.mask, grabcut))
    assert "| model | model takes no box |" in (out / "results.md").read_text()


def test_box_protocol_refuses_stroke_only_baselines(checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--protocol", "box", "--baselines", "randomwalker", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 2
    assert "randomwalker" in capsys.readouterr().err and not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("name", ["grabcut", "randomwalker"])
def test_negative_strokes_are_sure_background_for_the_stroke_baselines(name):
    image, stroke, disc = disc_scene()
    negative = np.zeros_like(disc)
    negative[58:72, 35:65] = True  # the lower part of the disc: "not this"
    without = baselines.BASELINES[name](image, stroke)
    with_neg = baselines.BASELINES[name](image, stroke, negative=negative)
    assert without[negative & disc].mean() > 0.9
    assert not with_neg[negative].any() and with_neg[stroke & ~negative].all()  # where both, "not this" wins


def test_grabcut_rough_moves_a_rough_mask_to_the_disc_and_keeps_outside_it_background():
    image, _, disc = disc_scene()
    rough = ndi.binary_dilation(disc, iterations=4)  # the disc (rows/cols 30-70) over-painted...
    rough[30:38, 45:55] = False  # ...and a notch cut into it
    pred = baselines.grabcut_rough(image, rough)
    assert iou(disc, pred) > 0.85 > iou(disc, rough)
    assert not pred[~rough].any()  # outside the outline is sure background
    assert set(baselines.ROUGH_BASELINES) == {"identity", "grabcut"}


@pytest.mark.data
def test_rough_protocols_give_the_model_the_mask_as_a_prior(tmp_path, checkpoint, data_root):
    """coarse and lasso: an object-aware model gets the mask as ``prior``; a stroke model as its stroke, and says so."""
    assert ROUGH_PROTOCOLS == ("coarse", "lasso")
    spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"), context="object", working_size=64)
    torch.manual_seed(0)
    model = build_model(spec)
    inst = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=1)[0]
    prompt = evaluate.make_prompt(inst, "coarse", seed=0)
    for refiner, how, expected in (
        (Refiner(model, device="cpu"), "rough mask as prior", lambda r: r.predict(prior=prompt.stroke)),
        (Refiner(checkpoint, device="cpu"), "rough mask as the stroke", lambda r: r.predict(prompt.stroke)),
    ):
        ask, note = evaluate.model_call(refiner, "coarse")
        assert note.startswith(how)
        refiner.set_image(inst.image)
        np.testing.assert_array_equal(ask(prompt), expected(refiner))
    assert evaluate.baseline_registry("lasso") is baselines.ROUGH_BASELINES


@pytest.mark.data
def test_grabcut_answers_depend_on_their_inputs_alone_not_on_earlier_calls(data_root):
    """GrabCut's k-means starts from OpenCV's global random state: another call in between must not move an answer."""
    source = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=6)
    objects = [source[i] for i in range(min(6, len(source)))]
    strokes = [simulate_stroke(inst.mask, "human-scribble", np.random.default_rng(i)) for i, inst in enumerate(objects)]
    first = [baselines.grabcut(inst.image, stroke) for inst, stroke in zip(objects, strokes, strict=True)]
    for j in reversed(range(len(objects))):  # backwards: after the first, each call follows another object's
        np.testing.assert_array_equal(baselines.grabcut(objects[j].image, strokes[j]), first[j])


def test_grabcut_box_segments_the_disc_inside_a_loose_box():
    image, _, disc = disc_scene()
    pred = baselines.grabcut_box(image, (27, 26, 74, 75))  # the disc (rows/cols 30-70) with a few px of slack
    box = baselines.box_mask(disc.shape, (27, 26, 74, 75))
    assert iou(disc, pred) > 0.9 > iou(disc, box)
    assert not pred[~box].any()  # outside the rectangle is sure background


@pytest.mark.parametrize(
    "box, match", [((40, 40, 40, 60), "empty"), ((50, 60, 40, 70), "inverted"), ((200, 0, 210, 5), "outside")]
)
def test_bad_boxes_are_clear_errors(box, match):
    with pytest.raises(ValueError, match=match):
        baselines.box_mask((120, 160), box)


def test_box_mask_clips_to_the_image():
    mask = baselines.box_mask((10, 12), (-5, 8, 4, 30))
    assert mask.sum() == 4 * 4 and mask[:4, 8:].all()


@pytest.mark.data
def test_the_grid_spreads_its_cases_over_the_categories(neg_checkpoint, data_root):
    instances = _acdc(data_root)  # three structures; the first objects of a slice are of every kind
    refiner = Refiner(neg_checkpoint, device="cpu")
    _, kept = evaluate.evaluate(refiner, instances, list(range(12)), protocol="real", seed=0, baselines=[], keep=3)
    assert sorted(k["category"] for k in kept) == sorted(c["name"] for c in instances.coco.cats.values())
