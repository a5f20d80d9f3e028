"""Metrics: hand-made known answers, independent reference implementations, empty conventions, real masks."""

from __future__ import annotations

import contextlib
import io
import time

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.distance import directed_hausdorff
from skimage.segmentation import find_boundaries

from napari_segmentello.data import dataset_files
from napari_segmentello.metrics import (
    METRIC_KEYS,
    boundary_iou,
    boundary_width,
    dice,
    hausdorff,
    hd95,
    iou,
    mask_metrics,
    pixel_accuracy,
)


def _square(shape=(60, 60), y=20, x=20, side=20) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y : y + side, x : x + side] = True
    return m


def _blob(seed: int, shape=(64, 80), sigma: float = 4.0) -> np.ndarray:
    """A random smooth blob that does not touch the image border."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    m = field > np.quantile(field, 0.6)
    m[:2], m[-2:], m[:, :2], m[:, -2:] = False, False, False, False
    return m


def _reference_boundary_iou(gt: np.ndarray, dt: np.ndarray, d: int) -> float:
    """Cheng et al.'s recipe, independently: 1-px zero padding, d iterations of a 3×3 cv2 erosion."""

    def band(m: np.ndarray) -> np.ndarray:
        padded = cv2.copyMakeBorder(m.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
        return m.astype(np.uint8) - eroded

    g, p = band(gt), band(dt)
    return float(((g * p) > 0).sum() / ((g + p) > 0).sum())


def _contour_points(m: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour outside the mask; the zero frame makes the image edge count as outside."""
    return np.argwhere(find_boundaries(np.pad(m, 1), connectivity=1, mode="inner"))


def test_two_squares_known_overlap() -> None:
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 px
    pred = np.zeros((10, 10), bool)
    pred[4:8, 4:8] = True  # 16 px, 4 shared
    assert iou(gt, pred) == pytest.approx(4 / 28)
    assert dice(gt, pred) == pytest.approx(8 / 32)
    assert pixel_accuracy(gt, pred) == pytest.approx(1 - 24 / 100)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_shifted_square_hausdorff_is_the_shift(k: int, axis: int) -> None:
    gt = _square()
    pred = np.roll(gt, k, axis=axis)
    assert hausdorff(gt, pred) == pytest.approx(k)
    assert hausdorff(pred, gt) == pytest.approx(k)
    assert 0 < hd95(gt, pred) <= k


@pytest.mark.parametrize("seed", range(6))
def test_hausdorff_and_hd95_match_independent_point_set_computation(seed: int) -> None:
    gt, pred = _blob(seed), _blob(seed + 100)
    a, b = _contour_points(gt), _contour_points(pred)
    expected = max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0])
    assert hausdorff(gt, pred) == pytest.approx(expected)
    pooled = np.concatenate([cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]])
    assert hd95(gt, pred) == pytest.approx(np.percentile(pooled, 95))
    assert hd95(gt, pred) <= hausdorff(gt, pred)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kwargs", [{}, {"dilation_ratio": 0.05}, {"dilation_px": 1}, {"dilation_px": 3}])
def test_boundary_iou_matches_reference_recipe(seed: int, kwargs: dict) -> None:
    gt, pred = _blob(seed), _blob(seed + 7, sigma=3.0)
    pred[:, :3] = True  # touches the image border: it must count as boundary there
    d = boundary_width(gt.shape, **kwargs)
    assert boundary_iou(gt, pred, **kwargs) == pytest.approx(_reference_boundary_iou(gt, pred, d))


def test_boundary_width_rule() -> None:
    assert boundary_width((480, 640)) == 16  # 0.02 × 800
    assert boundary_width((480, 640), 0.005) == 4
    assert boundary_width((20, 20)) == 1  # rounds to 1 at least
    assert boundary_width((480, 640), dilation_px=2) == 2


def test_boundary_iou_identical_and_disjoint() -> None:
    gt = _blob(1)
    assert boundary_iou(gt, gt) == 1.0
    assert boundary_iou(_square(x=0, side=10), _square(x=40, side=10), dilation_px=3) == 0.0


def test_thin_band_is_harsher_than_wide_band() -> None:
    gt = _square((200, 200), 50, 50, 100)
    pred = np.roll(gt, 2, axis=1)
    assert boundary_iou(gt, pred, dilation_px=1) < boundary_iou(gt, pred, dilation_px=3) < boundary_iou(gt, pred)


def test_both_empty_conventions() -> None:
    empty = np.zeros((30, 40), bool)
    assert mask_metrics(empty, empty) == {
        "pixel_accuracy": 1.0,
        "iou": 1.0,
        "dice": 1.0,
        "boundary_iou": 1.0,
        "hausdorff": 0.0,
        "hd95": 0.0,
    }


@pytest.mark.parametrize("gt_empty", [True, False])
def test_one_empty_conventions(gt_empty: bool) -> None:
    empty, full = np.zeros((30, 40), bool), _square((30, 40), 5, 5, 10)
    gt, pred = (empty, full) if gt_empty else (full, empty)
    m = mask_metrics(gt, pred)
    assert m["iou"] == m["dice"] == m["boundary_iou"] == 0.0
    assert m["hausdorff"] == m["hd95"] == 50.0  # the diagonal of a 30×40 image
    assert m["pixel_accuracy"] == pytest.approx(1 - 100 / 1200)


def test_mask_metrics_agrees_with_single_functions() -> None:
    gt, pred = _blob(3), _blob(4)
    m = mask_metrics(gt, pred, boundary_px=(1, 2))
    assert list(m) == [*METRIC_KEYS, "boundary_iou_1px", "boundary_iou_2px"]
    single = {"pixel_accuracy": pixel_accuracy, "iou": iou, "dice": dice, "boundary_iou": boundary_iou}
    single |= {"hausdorff": hausdorff, "hd95": hd95}
    for key, fn in single.items():
        assert m[key] == pytest.approx(fn(gt, pred)), key
    assert m["boundary_iou_2px"] == pytest.approx(boundary_iou(gt, pred, dilation_px=2))
    assert all(isinstance(v, float) for v in m.values())


def test_integer_masks_and_read_only_inputs() -> None:
    gt, pred = _blob(5), _blob(6)
    expected = mask_metrics(gt, pred)
    gt_ro, pred_ro = gt.astype(np.uint8), pred.astype(np.uint8)
    gt_ro.flags.writeable = pred_ro.flags.writeable = False  # any write would raise
    assert mask_metrics(gt_ro, pred_ro) == expected


@pytest.mark.parametrize(
    ("gt", "pred", "match"),
    [
        (np.zeros((5, 5), bool), np.zeros((5, 6), bool), "differ"),
        (np.zeros((2, 5, 5), bool), np.zeros((2, 5, 5), bool), "2D"),
        (np.zeros((5, 5), bool), np.zeros((5, 5), np.float32), "threshold"),
    ],
)
def test_bad_input_is_a_clear_value_error(gt, pred, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mask_metrics(gt, pred)


@pytest.mark.parametrize("kwargs", [{"dilation_px": 0}, {"dilation_px": 1.5}, {"dilation_ratio": 0.0}])
def test_bad_band_width(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="dilation"):
        boundary_iou(_blob(0), _blob(1), **kwargs)


@pytest.mark.data
def test_real_coco_masks_fast_and_consistent(data_root) -> None:
    """300 full-frame coco-mini val objects against a 2-px-dilated copy: reference BIoU, sane distances, speed."""
    _, ann_file = dataset_files("coco-mini", "val", data_root)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    anns = [a for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)) if a["area"] >= 64][:300]
    pairs = [(m, ndimage.binary_dilation(m, iterations=2)) for m in (coco.annToMask(a).astype(bool) for a in anns)]
    start = time.perf_counter()
    results = [mask_metrics(gt, pred) for gt, pred in pairs]
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0, f"{elapsed:.1f}s for {len(pairs)} objects: far slower than the ~1000-per-minute budget"
    for (gt, pred), m in list(zip(pairs, results, strict=False))[:20]:
        assert m["boundary_iou"] == pytest.approx(_reference_boundary_iou(gt, pred, boundary_width(gt.shape)))
        a, b = _contour_points(gt), _contour_points(pred)
        assert m["hausdorff"] == pytest.approx(max(directed_hausdorff(a, b)[0], directed_hausdorff(b, a)[0]))
    for (gt, _), m in zip(pairs, results, strict=False):
        assert mask_metrics(gt, gt)["hausdorff"] == 0.0
        assert 1.0 <= m["hd95"] <= m["hausdorff"] < 800.0
        assert 0 < m["iou"] < 1 and 0 < m["boundary_iou"] < 1
