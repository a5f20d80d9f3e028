"""Simulated strokes: contract (dtype, shape, determinism), placement relative to the object, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.morphology import skeletonize

from napari_segmentello import strokes
from napari_segmentello.inputs import points_to_stroke
from napari_segmentello.strokes import PROTOCOLS, correction_strokes, first_click, next_click, simulate_stroke

NAMES = sorted(PROTOCOLS)


def _disc(shape=(120, 140), center=(60, 70), radius=25) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(center, radius, shape=shape)] = True
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _shapes() -> dict[str, np.ndarray]:
    """Objects that stress the recipes: thin, tiny, concave, cut by the image border."""
    tiny = np.zeros((40, 40), bool)
    tiny[10:15, 20:25] = True
    line = np.zeros((60, 80), bool)
    line[30:32, 5:75] = True
    pixel = np.zeros((20, 20), bool)
    pixel[7, 9] = True
    ell = np.zeros((90, 90), bool)
    ell[10:80, 10:30] = True
    ell[60:80, 10:80] = True
    border = np.zeros((50, 60), bool)
    border[:20, 40:] = True
    return {"disc": _disc(), "tiny5x5": tiny, "line2px": line, "pixel": pixel, "L": ell, "border": border}


SHAPES = _shapes()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_stroke_contract(name, shape):
    mask = SHAPES[shape]
    before = mask.copy()
    stroke = PROTOCOLS[name](mask, np.random.default_rng(3))
    assert stroke.dtype == bool and stroke.shape == mask.shape
    assert stroke.any(), f"{name} gave an empty stroke on {shape}"
    assert (stroke & mask).any(), f"{name} missed the {shape} object"
    np.testing.assert_array_equal(mask, before)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_stroke_other_seeds_differ(name):
    mask = SHAPES["L"]
    first = PROTOCOLS[name](mask, np.random.default_rng(11))
    again = PROTOCOLS[name](mask, np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    others = [PROTOCOLS[name](mask, np.random.default_rng(seed)) for seed in range(5)]
    assert sum(not np.array_equal(first, o) for o in others) >= 4


def _draws(name: str, mask: np.ndarray, n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [PROTOCOLS[name](mask, rng) for _ in range(n)]


@pytest.mark.parametrize("shape", ["disc", "L", "tiny5x5", "line2px", "border"])
def test_clicks_are_inside_the_object(shape):
    mask = SHAPES[shape]
    for stroke in _draws("click", mask):
        assert not (stroke & ~mask).any()


def test_study_stroke_is_a_shrunken_coarse_mask():
    mask = SHAPES["disc"]
    draws = _draws("study", mask)
    for stroke in draws:
        assert (stroke & mask).sum() >= 0.95 * stroke.sum()
    ious = [_iou(s, mask) for s in draws]
    assert 0.3 < np.mean(ious) < 0.9
    assert len({round(v, 3) for v in ious}) > 6  # random erosion/occlusion, not a fixed shape


def test_scribble_is_a_thin_interior_line_that_sometimes_spills():
    mask = SHAPES["L"]
    draws = _draws("scribble", mask, n=30)
    inside = [(s & mask).sum() / s.sum() for s in draws]
    assert np.mean(inside) > 0.8
    assert min(inside) < 1.0  # some strokes run over the edge
    assert 0.03 < np.mean([_iou(s, mask) for s in draws]) < 0.45


def test_lasso_covers_most_of_the_object_and_some_background():
    mask = SHAPES["disc"]
    for stroke in _draws("lasso", mask):
        assert (stroke & mask).sum() > 0.8 * mask.sum()
        assert (stroke & ~mask).sum() > 0.05 * mask.sum()


def test_clicks_are_small_deep_discs():
    mask = _disc(radius=40)
    for stroke in _draws("click", mask):
        assert stroke.sum() <= 3 * np.pi * 6.5**2
        ys, xs = np.nonzero(stroke)
        assert np.hypot(ys - 60, xs - 70).max() < 40 * 0.5 + 7  # centres at >= half the inscribed radius


def test_strokes_stay_local_on_a_big_frame():
    mask = np.zeros((3000, 3000), bool)
    mask[1500:1520, 2000:2030] = True
    for name in NAMES:
        stroke = PROTOCOLS[name](mask, np.random.default_rng(1))
        ys, xs = np.nonzero(stroke)
        assert 1450 < ys.min() and ys.max() < 1570 and 1950 < xs.min() and xs.max() < 2080


# ---------------------------------------------------------------- simulate_stroke


def test_simulate_by_name_matches_the_protocol():
    mask = SHAPES["L"]
    for name in NAMES:
        direct = PROTOCOLS[name](mask, np.random.default_rng(5))
        np.testing.assert_array_equal(simulate_stroke(mask, name, np.random.default_rng(5)), direct)


def test_mixture_draws_every_protocol_by_weight(monkeypatch):
    picked: list[str] = []
    for name in NAMES:
        monkeypatch.setitem(strokes.PROTOCOLS, name, lambda m, rng, name=name: picked.append(name) or m)
    weights = {"study": 1.0, "scribble": 2.0, "lasso": 1.0, "click": 0.0}
    rng = np.random.default_rng(0)
    for _ in range(400):
        simulate_stroke(SHAPES["disc"], weights, rng)
    counts = {name: picked.count(name) for name in NAMES}
    assert counts["click"] == 0
    assert min(counts["study"], counts["lasso"]) > 60
    assert counts["scribble"] > 1.5 * max(counts["study"], counts["lasso"])
    even = np.random.default_rng(1)
    picked.clear()
    for _ in range(200):
        simulate_stroke(SHAPES["disc"], dict.fromkeys(NAMES, 1.0), even)
    assert set(picked) == set(NAMES)


@pytest.mark.parametrize(
    ("mask", "protocol", "error", "match"),
    [
        (np.zeros((10, 10), bool), "study", ValueError, "empty"),
        (np.ones((4, 10, 10), bool), "click", ValueError, "2D"),
        (_disc(), "paint", KeyError, "scribble"),
        (_disc(), {"study": 1.0, "brush": 1.0}, KeyError, "brush"),
        (_disc(), {"study": -1.0, "click": 2.0}, ValueError, "weights"),
        (_disc(), {"study": 0.0}, ValueError, "weights"),
        (_disc(), {}, ValueError, "weights"),
    ],
)
def test_bad_input_is_a_clear_error(mask, protocol, error, match):
    with pytest.raises(error, match=match):
        simulate_stroke(mask, protocol, np.random.default_rng(0))


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="default_rng"):
        strokes.scribble_stroke(_disc(), 0)


# ---------------------------------------------------------------- correction strokes


def test_corrections_land_in_the_error_regions():
    gt = _disc(center=(60, 60), radius=25)
    pred = _disc(center=(60, 80), radius=25)
    rng = np.random.default_rng(2)
    for _ in range(10):
        pos, neg = correction_strokes(gt, pred, rng)
        assert pos.any() and not (pos & ~(gt & ~pred)).any()
        assert neg.any() and not (neg & ~(pred & ~gt)).any()


def test_corrections_target_the_largest_error_and_are_empty_without_one():
    gt = np.zeros((80, 80), bool)
    gt[5:15, 5:15] = True  # small miss
    gt[40:75, 40:75] = True  # large miss
    pos, neg = correction_strokes(gt, np.zeros_like(gt), np.random.default_rng(0))
    assert pos[40:75, 40:75].any() and not pos[5:15, 5:15].any()
    assert not neg.any()
    pos, neg = correction_strokes(gt, gt, np.random.default_rng(0))
    assert not pos.any() and not neg.any()
    with pytest.raises(ValueError, match="shapes differ"):
        correction_strokes(gt, gt[:-1], np.random.default_rng(0))


# ---------------------------------------------------------------- real objects


@pytest.mark.data
def test_strokes_on_real_coco_objects(data_root):
    from napari_segmentello.data import CocoInstances, dataset_files

    ds = CocoInstances(*dataset_files("coco-mini", "val", data_root), max_images=3)
    rng = np.random.default_rng(0)
    for image_id, ann_id in ds.items[:15]:
        mask = ds.coco.annToMask(ds.coco.anns[ann_id]).astype(bool)
        for name in NAMES:
            stroke = PROTOCOLS[name](mask, rng)
            assert stroke.any() and (stroke & mask).any(), (name, image_id, ann_id)
            if name == "click":
                assert not (stroke & ~mask).any()


# ---------------------------------------------------------------- standard click protocol


def _padded_dt(error: np.ndarray) -> np.ndarray:
    """RITM's full-frame reference: distance transform of the error padded by one zero pixel."""
    return ndi.distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]


@pytest.mark.parametrize("shape", ["disc", "L", "tiny5x5", "line2px", "pixel", "border"])
def test_first_click_is_at_the_distance_transform_maximum(shape):
    mask = SHAPES[shape]
    row, col, positive = first_click(mask)
    dt = _padded_dt(mask)
    assert positive and mask[row, col]
    assert dt[row, col] == dt.max()
    assert (row, col) == np.unravel_index(int(np.argmax(dt)), dt.shape)  # ties: first in row-major order
    assert next_click(mask, np.zeros_like(mask)) == (row, col, True)


def test_first_click_counts_the_image_border_as_boundary():
    mask = np.zeros((40, 100), bool)
    mask[:, :60] = True  # touches three image borders; without the padding the deepest pixel would hug the border
    row, col, _ = first_click(mask)
    assert 15 <= row <= 24 and 15 <= col <= 44


def test_next_click_goes_to_the_deeper_error_with_its_sign():
    gt = _disc(center=(60, 60), radius=25)
    pred = _disc(center=(60, 75), radius=25) | _disc(center=(18, 122), radius=12)
    fn, fp = gt & ~pred, pred & ~gt
    row, col, positive = next_click(gt, pred)
    assert not positive and fp[row, col]  # the FP blob at (18, 122) is deeper than the missed crescent
    assert _padded_dt(fp)[row, col] == _padded_dt(fp).max() > _padded_dt(fn).max()
    mirrored = _disc(center=(60, 75), radius=25)  # FN and FP crescents are mirror images: equally deep
    assert next_click(gt, mirrored)[2] is False  # a tie goes to the false positive, as in RITM's clicker
    row, col, positive = next_click(gt, _disc(center=(15, 120), radius=8))
    assert positive and gt[row, col]  # the whole missed disc is deeper than the small FP blob


def test_next_click_is_none_without_error_and_checks_its_input():
    gt = SHAPES["L"]
    assert next_click(gt, gt) is None
    assert next_click(np.zeros_like(gt), np.zeros_like(gt)) is None
    assert next_click(np.zeros_like(gt), gt)[2] is False
    with pytest.raises(ValueError, match="shapes differ"):
        next_click(gt, gt[:-1])
    with pytest.raises(ValueError, match="2D"):
        next_click(gt[None], gt[None])
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros_like(gt))


def _ritm_click(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, bool]:
    """RITM's clicker on the full frame, the reference the windowed ``next_click`` must reproduce."""
    fn_dt, fp_dt = _padded_dt(gt & ~pred), _padded_dt(pred & ~gt)
    positive = fn_dt.max() > fp_dt.max()
    dt = fn_dt if positive else fp_dt
    rows, cols = np.where(dt == dt.max())
    return int(rows[0]), int(cols[0]), bool(positive)


@pytest.mark.parametrize("seed", range(6))
def test_next_click_matches_the_full_frame_ritm_clicker(seed):
    rng = np.random.default_rng(seed)
    blobs = ndi.gaussian_filter(rng.standard_normal((2, 90, 110)), sigma=(0, 6, 6))
    gt, pred = blobs[0] > 0.02, blobs[1] > 0.02  # random shapes, many touching the image border
    assert next_click(gt, pred) == _ritm_click(gt, pred)


# ---------------------------------------------------------------- human-like strokes


def _big_disc(radius: int) -> np.ndarray:
    return _disc(shape=(2 * radius + 20, 2 * radius + 20), center=(radius + 10, radius + 10), radius=radius)


def _brush_diameters(draw, mask: np.ndarray, n: int = 40) -> np.ndarray:
    """Twice the stroke's deepest pixel: the brush's diameter, whatever the stroke's length."""
    rng = np.random.default_rng(0)
    return np.array([2.0 * ndi.distance_transform_edt(draw(mask, rng)).max() for _ in range(n)])


def test_human_scribble_brush_is_in_image_pixels_not_object_size():
    small = _brush_diameters(strokes.human_scribble_stroke, _big_disc(30))
    large = _brush_diameters(strokes.human_scribble_stroke, _big_disc(200))
    for q in (50, 75, 90):
        lo, hi = sorted([np.percentile(small, q), np.percentile(large, q)])
        assert hi <= 1.4 * lo + 1.0, (q, np.percentile(small, q), np.percentile(large, q))
    assert np.percentile(large, 90) <= 2 * (strokes.BRUSH_RADIUS[1] + 1)  # an object-scaled brush: ~10x wider
    assert (small < 3.0).mean() > 0.5  # most are 1-px pen lines, as on acdc-scribbles


def _skeleton_length(stroke: np.ndarray) -> int:
    return int(skeletonize(stroke).sum())


def test_human_scribble_lines_are_partial_or_long_mostly_inside_with_some_spill():
    mask = _big_disc(100)
    extent = 200
    draws = _draws("human-scribble", mask, n=40)
    lengths = np.array([_skeleton_length(s) / extent for s in draws])
    assert lengths.min() < 0.45 and lengths.max() > 1.0  # short dashes and long sweeps
    inside = np.array([(s & mask).sum() / s.sum() for s in draws])
    assert inside.mean() > 0.9 and inside.min() < 1.0
    counts = [ndi.label(s, structure=np.ones((3, 3)))[1] for s in draws]
    assert 1 <= min(counts) and max(counts) <= 3


def test_random_clicks_are_click_discs_inside_the_object():
    mask = _big_disc(40)
    one_click = points_to_stroke(np.array([[50.0, 50.0]]), mask.shape).sum()
    counts = []
    for stroke in _draws("clicks", mask, n=30):
        assert not (stroke & ~mask).any()
        labels, n = ndi.label(stroke)
        counts.append(n)
        sizes = ndi.sum_labels(stroke, labels, index=np.arange(1, n + 1))
        assert (sizes >= one_click).all() and stroke.sum() <= 3 * one_click
    assert set(counts) >= {1, 2, 3}


def _record_array_sizes(monkeypatch) -> list[int]:
    """Sizes of every array handed to a distance transform or a shortest-path search (skimage's included)."""
    sizes: list[int] = []

    def tracked(fn):
        def wrapper(arr, *args, **kwargs):
            sizes.append(np.asarray(arr).size)
            return fn(arr, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(ndi, "distance_transform_edt", tracked(ndi.distance_transform_edt))
    monkeypatch.setattr(strokes, "route_through_array", tracked(strokes.route_through_array))
    return sizes


WINDOWED = {
    "human-scribble": strokes.human_scribble_stroke,
    "clicks": strokes.random_clicks_stroke,
    "background": strokes.background_strokes,
    "coarse": strokes.coarse_stroke,
}


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_new_protocols_work_in_a_window_around_the_object(monkeypatch, name):
    mask = np.zeros((4000, 4000), bool)
    mask[2000:2030, 1000:1040] = True
    sizes = _record_array_sizes(monkeypatch)
    for seed in range(5):
        stroke = WINDOWED[name](mask, np.random.default_rng(seed))
        assert stroke.shape == mask.shape and stroke.any()
    assert sizes and max(sizes) < 200 * 200  # never a full-frame transform


def test_next_click_works_on_the_error_box(monkeypatch):
    gt = np.zeros((4000, 4000), bool)
    gt[2000:2030, 1000:1040] = True
    pred = np.roll(gt, 7, axis=1)
    sizes = _record_array_sizes(monkeypatch)
    assert next_click(gt, pred) is not None and first_click(gt)[2]
    assert sizes and max(sizes) < 100 * 100


def _gap(stroke: np.ndarray, mask: np.ndarray) -> float:
    """The stroke's closest approach to the object, in px."""
    return float(ndi.distance_transform_edt(~mask)[stroke].min())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_background_strokes_never_touch_the_object(shape):
    mask = SHAPES[shape]
    rng = np.random.default_rng(4)
    for _ in range(15):
        stroke = strokes.background_strokes(mask, rng)
        assert stroke.dtype == bool and stroke.shape == mask.shape and stroke.any()
        assert _gap(stroke, mask) > strokes.GAP


def test_background_strokes_are_half_beside_the_object_half_anywhere():
    mask = np.zeros((1200, 1200), bool)
    mask[300:330, 800:840] = True  # extent 40
    rng = np.random.default_rng(0)
    dist = ndi.distance_transform_edt(~mask)
    gaps = [dist[strokes.background_strokes(mask, rng)].min() for _ in range(60)]
    beside = np.mean([g <= 1.2 * 40 + 10 for g in gaps])  # within a context window of the object
    far = np.mean([g > 5 * 40 for g in gaps])
    assert beside > 0.45 and far > 0.2, (beside, far)


def test_background_strokes_seeded_and_empty_without_room():
    mask = SHAPES["L"]
    first = strokes.background_strokes(mask, np.random.default_rng(9))
    np.testing.assert_array_equal(first, strokes.background_strokes(mask, np.random.default_rng(9)))
    assert not np.array_equal(first, strokes.background_strokes(mask, np.random.default_rng(10)))
    full = np.ones((30, 30), bool)
    full[0, 0] = False  # the only background pixel touches the object
    assert not strokes.background_strokes(full, np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match="empty"):
        strokes.background_strokes(np.zeros((10, 10), bool), np.random.default_rng(0))


# ---------------------------------------------------------------- coarse masks and boxes


def _ring() -> np.ndarray:
    ring = _big_disc(60)
    ring[disk((70, 70), 40)] = False
    return ring


COARSE_SHAPES = {"disc": SHAPES["disc"], "L": SHAPES["L"], "border": SHAPES["border"], "ring": _ring()}


@pytest.mark.parametrize("shape", sorted(COARSE_SHAPES) + ["big-disc"])
def test_coarse_masks_land_near_their_target_iou(shape):
    mask = COARSE_SHAPES[shape] if shape != "big-disc" else _big_disc(300)  # big: searched on a coarse grid
    rng = np.random.default_rng(1)
    for target in rng.uniform(0.5, 0.95, size=6):
        stroke = strokes.coarse_stroke(mask, rng, target_iou=float(target))
        assert abs(_iou(stroke, mask) - target) < 0.06, (shape, target, _iou(stroke, mask))


def test_coarse_masks_draw_their_iou_between_half_and_most():
    mask = SHAPES["L"]
    ious = [_iou(s, mask) for s in _draws("coarse", mask, n=30)]
    assert 0.45 < min(ious) < 0.6 and 0.85 < max(ious) < 1.0
    draws = _draws("coarse", mask, n=10)
    assert all((s & ~mask).any() or (mask & ~s).any() for s in draws)  # coarse, never the object itself


@pytest.mark.parametrize("target", [0.0, -0.2, 1.5, float("nan")])
def test_coarse_target_out_of_range_is_a_clear_error(target):
    with pytest.raises(ValueError, match="target_iou"):
        strokes.coarse_stroke(SHAPES["disc"], np.random.default_rng(0), target_iou=target)


def test_jittered_box_is_near_the_true_box_clipped_and_never_empty():
    mask = SHAPES["border"]  # rows 0-19, cols 40-59: touches the top and right image borders
    h, w = mask.shape
    truth = np.array([0, 40, 20, 60])
    rng = np.random.default_rng(0)
    boxes = np.array([strokes.jittered_box(mask, rng) for _ in range(300)])
    assert (
        (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= h).all() and (boxes[:, 3] <= w).all()
    )
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (np.abs(boxes - truth) <= 5 * 3.0 + 0.03 * 20 + 1).all()
    assert 2.0 < np.std(boxes[:, 1] - 40) < 4.5  # a free side moves by about the jitter
    tiny = SHAPES["pixel"]
    for _ in range(50):
        r0, c0, r1, c1 = strokes.jittered_box(tiny, rng, jitter=20.0)
        assert 0 <= r0 < r1 <= 20 and 0 <= c0 < c1 <= 20
    assert strokes.jittered_box(tiny, rng, jitter=0.0) == (7, 9, 8, 10)  # no jitter, a 1-px side: the exact box
    assert strokes.jittered_box(mask, np.random.default_rng(5)) == strokes.jittered_box(mask, np.random.default_rng(5))
    with pytest.raises(ValueError, match="jitter"):
        strokes.jittered_box(mask, rng, jitter=-1.0)


# ---------------------------------------------------------------- calibration on real strokes


def test_stroke_measures_of_known_strokes():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 5:55] = True  # extent 50
    stroke = np.zeros_like(mask)
    stroke[19:22, 10:40] = True  # a 3-px-wide, 30-px-long line, all inside
    stroke[0:2, 0:5] = True  # a second, outside
    width, length, inside, n = strokes.stroke_measures(stroke, mask)
    assert 2.5 < width < 3.3 and 0.6 < length < 0.75 and inside == pytest.approx(90 / 100) and n == 2


@pytest.mark.data
def test_human_scribbles_match_real_acdc_strokes_within_half(data_root):
    from napari_segmentello.data import CocoInstances, dataset_files

    ds = CocoInstances(*dataset_files("acdc-scribbles", "val", data_root), min_area=10)
    objects = [ds[int(i)] for i in np.random.default_rng(0).choice(len(ds), size=80, replace=False)]
    real = np.median([strokes.stroke_measures(o.scribble, o.mask) for o in objects], axis=0)
    rng = np.random.default_rng(0)
    drawn = [(strokes.human_scribble_stroke(o.mask, rng), o.mask) for o in objects]
    simulated = np.median([strokes.stroke_measures(s, m) for s, m in drawn], axis=0)
    ratio = simulated / real
    assert ((ratio > 1 / 1.5) & (ratio < 1.5)).all(), (real, simulated)
    for o in objects[:20]:
        assert _gap(strokes.background_strokes(o.mask, rng), o.mask) > strokes.GAP
