"""NoC evaluation: the convention on hand-made IoU curves, the correction loop, GrabCut with negatives, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.inputs import points_to_stroke
from napari_segmentello.models import build_model
from napari_segmentello.strokes import first_click
from training import noc as noc_module
from training.baselines import grabcut
from training.noc import (
    clicks_to_strokes,
    drawn_clicks,
    interact,
    interact_clicks,
    noc,
    parse_targets,
    summarize,
    target_key,
)
from training.report import splice


@pytest.mark.parametrize(
    "ious, target, max_rounds, expected",
    [
        ([0.5, 0.86, 0.91], 0.85, 3, 2),
        ([0.5, 0.86, 0.91], 0.90, 3, 3),
        ([0.95, 0.2], 0.90, 2, 1),  # reached in round 1; later drops do not matter
        ([0.85, 0.9], 0.85, 2, 1),  # reaching the target exactly counts
        ([0.5] * 10, 0.85, 10, 10),  # never reached: counted as the number of rounds
        ([0.5, 0.5, 0.99], 0.9, 2, 2),  # reached only after the last counted round: a failure
    ],
)
def test_noc_convention(ious, target, max_rounds, expected):
    assert noc(ious, target, max_rounds) == expected


def test_summary_means_failures_and_curve():
    records = [{"iou": {"m": [0.5, 0.86, 0.91]}}, {"iou": {"m": [0.2, 0.3, 0.4]}}]
    s = summarize(records, ["m"], [0.85, 0.9], rounds=3)["m"]
    assert s["noc"] == {"85": pytest.approx((2 + 3) / 2), "90": pytest.approx((3 + 3) / 2)}
    assert s["failures"] == {"85": 1, "90": 1}
    assert s["mean_iou"] == pytest.approx([0.35, 0.58, 0.655])


def test_targets_parse_and_name():
    assert parse_targets("0.90, 0.85") == [0.85, 0.9]
    assert [target_key(t) for t in (0.85, 0.9, 0.875)] == ["85", "90", "87.5"]
    for bad in ("", "1.5", "a,b", "0"):
        with pytest.raises(ValueError):
            parse_targets(bad)


def test_interact_accumulates_corrections_on_the_methods_own_errors():
    gt = np.zeros((60, 60), bool)
    gt[10:50, 10:50] = True
    first = np.zeros_like(gt)
    first[25:35, 25:35] = True
    calls = []

    def method(pos, neg, prev):
        calls.append((pos.copy(), neg.copy(), None if prev is None else prev.copy()))
        out = pos.copy()
        out[:, 55:] = True  # a false positive strip for a negative click to land on
        return out

    ious = interact(method, gt, first, 3, np.random.default_rng(0))
    assert len(ious) == 3 and ious[0] < ious[-1] <= 1
    (p1, n1, prev1), (p2, n2, prev2), (p3, n3, prev3) = calls
    assert prev1 is None and not n1.any() and np.array_equal(p1, first)
    assert (p2 & ~p1).any() and not (p2 & ~p1 & ~gt).any()  # new positive click inside the missed object
    assert n2.any() and not (n2 & gt).any() and n2[:, 55:].any()  # negative click on the false positive strip
    assert (p3 >= p2).all() and (n3 >= n2).all()  # strokes accumulate
    np.testing.assert_array_equal(prev3, p2 | np.pad(np.ones((60, 5), bool), ((0, 0), (55, 0))))


def test_grabcut_keeps_strokes_as_hard_constraints():
    image = np.full((80, 80, 3), 20, np.uint8)
    image[20:60, 15:65] = 200  # one bright region
    pos = np.zeros((80, 80), bool)
    pos[25:55, 20:35] = True  # its window reaches column 54
    neg = np.zeros_like(pos)
    neg[35:45, 45:52] = True
    without = grabcut(image, pos, negative=np.zeros_like(pos))
    with_neg = grabcut(image, pos, negative=neg)
    assert without[neg].all()  # the bright region is taken whole...
    assert with_neg[pos].all() and not with_neg[neg].any()  # ...until a negative stroke says otherwise
    assert not with_neg[:15].any() and not with_neg[:, 55:].any()  # dark background and beyond the window stay out


@pytest.mark.data
def test_cli_writes_results_for_three_val_objects(tmp_path, data_root):
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.pt", build_model("tiny16-32", working_size=32, extras=("pos", "neg", "prev")))
    out = tmp_path / "noc"
    argv = ["--model", str(model), "--max-objects", "3", "--rounds", "3", "--out", str(out), "--device", "cpu"]
    assert noc_module.main(argv) == 0
    results = json.loads((out / "noc.json").read_text())
    assert results["n_objects"] == 3 and results["rounds"] == 3 and results["targets"] == [0.85, 0.9]
    assert set(results["methods"]) == {"model", "grabcut"}
    for summary in results["methods"].values():
        assert set(summary["noc"]) == set(summary["failures"]) == {"85", "90"}
        assert all(1 <= v <= 3 for v in summary["noc"].values()) and len(summary["mean_iou"]) == 3
    for record in results["objects"]:
        assert all(len(curve) == 3 and all(0 <= v <= 1 for v in curve) for curve in record["iou"].values())
    table = (out / "noc.md").read_text()
    assert "| method | NoC@85 | NoC@90 | failures@85 | failures@90 | IoU@1 | IoU@3 |" in table
    assert f"Command: `python -m training.noc {' '.join(argv)}`" in table and "coco-mini val" in table
    assert (out / "noc_curve.png").stat().st_size > 0


def _square_scene() -> np.ndarray:
    gt = np.zeros((60, 70), bool)
    gt[10:50, 10:40] = True
    return gt


def test_clicks_start_at_the_deepest_pixel_and_follow_the_methods_own_errors():
    gt = _square_scene()
    calls = []

    def method(pos, neg, prev):
        calls.append((pos.copy(), neg.copy(), prev))
        out = pos.copy()
        if not neg.any():  # a false positive blob, deeper than any missed part, until a negative click
            out[15:45, 42:69] = True
        return out

    ious, clicks = interact_clicks(drawn_clicks(method, gt.shape), gt, 4)
    assert len(ious) == 4 and clicks[0] == first_click(gt)
    np.testing.assert_array_equal(calls[0][0], points_to_stroke(np.array([clicks[0][:2]], float), gt.shape))
    row, col, positive = clicks[1]
    assert not positive and 15 <= row < 45 and 42 <= col < 69  # negative, inside the false positive
    assert not calls[1][1][gt].any() and calls[1][1].any()  # the negative disc lies off the object
    assert all(p for _, _, p in clicks[2:]) and all(gt[r, c] for r, c, _ in clicks[2:])  # then missed object
    assert calls[0][2] is None and calls[1][2] is not None  # the method's last mask comes back as `previous`
    assert all((b[0] >= a[0]).all() and (b[1] >= a[1]).all() for a, b in zip(calls, calls[1:], strict=False))


def test_a_perfect_mask_ends_the_clicking():
    gt = _square_scene()
    ious, clicks = interact_clicks(lambda clicks, prev: gt.copy(), gt, 5)
    assert ious == [1.0] * 5 and len(clicks) == 1


def test_clicks_to_strokes_splits_positive_and_negative():
    pos, neg = clicks_to_strokes([(10, 10, True), (30, 40, False), (50, 12, True)], (60, 70))
    assert pos[10, 10] and pos[50, 12] and not pos[30, 40]
    assert neg[30, 40] and not neg[10, 10] and not neg[50, 12]
    empty_pos, _ = clicks_to_strokes([(30, 40, False)], (60, 70))
    assert not empty_pos.any()


@pytest.mark.data
def test_cli_clicks_protocol_starts_from_the_first_click(tmp_path, data_root):
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.pt", build_model("tiny16-32", working_size=32, extras=("pos", "neg", "prev")))
    out = tmp_path / "noc"
    argv = ["--model", str(model), "--dataset", "dsb2018-nuclei", "--protocol", "clicks", "--rounds", "3"]
    argv += ["--max-objects", "2", "--out", str(out), "--device", "cpu"]
    assert noc_module.main(argv) == 0
    results = json.loads((out / "noc.json").read_text())
    instances = CocoInstances(*dataset_files("dsb2018-nuclei", "val", data_root))
    by_ann = {ann_id: i for i, (_, ann_id) in enumerate(instances.items)}
    for record in results["objects"]:
        gt = instances[by_ann[record["ann_id"]]].mask
        for name in ("model", "grabcut"):
            clicks = record["clicks"][name]
            assert tuple(clicks[0]) == first_click(gt) and 1 <= len(clicks) <= 3
            assert len(record["iou"][name]) == 3
    table = (out / "noc.md").read_text()
    assert "standard click protocol" in table and "dsb2018-nuclei val" in table
    assert (out / "noc_curve.png").stat().st_size > 0


@pytest.mark.parametrize(
    "extra", [["--targets", "1.5"], ["--rounds", "0"], ["--dataset", "nope"], ["--max-objects", "1"]]
)
def test_cli_bad_arguments_exit_2(extra, tmp_path, capsys):
    argv = ["--model", "no-such-model", "--out", str(tmp_path), *extra]
    assert noc_module.main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_report_splices_between_markers_only():
    text = "intro\n<!-- noc:begin -->\nold\n<!-- noc:end -->\noutro\n"
    assert splice(text, "noc", "new table\n") == "intro\n<!-- noc:begin -->\nnew table\n<!-- noc:end -->\noutro\n"
    with pytest.raises(ValueError, match="performance:begin"):
        splice(text, "performance", "x")
