"""Propagation through a stack: the walk (with stand-in refiners), input checks, and a real nucleus volume.

No volume ships offline (skimage's ``cells3d`` is a download), so :func:`nucleus_stack`
builds one from a real dsb2018-nuclei *val* image: one nucleus is given sphere-like
cross-sections (scaled about its centre, vanishing beyond the sphere) on a background
where it was inpainted away, so every plane has exact ground truth.

Run as a script for the per-plane IoU measurement reported in the docs::

    python tests/test_propagate.py --model PATH_OR_NAME
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from scipy.special import expit
from skimage.draw import disk
from skimage.filters import threshold_otsu
from skimage.restoration import inpaint_biharmonic
from skimage.transform import warp

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.engine import Refiner
from napari_segmentello.models import build_model
from napari_segmentello.propagate import carried, confidence, propagate
from napari_segmentello.seeds import seed_from_mask
from napari_segmentello.roi import roi_from_stroke
from training import report
from training.propagation import first_below, load_sequence, start_frame
from training.propagation import main as propagation_main
from napari_segmentello.strokes import simulate_stroke

SHAPE = (64, 80)
REPO = Path(__file__).resolve().parents[1]


def _disc(center, radius, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    if radius > 0:
        mask[disk(center, radius, shape=shape)] = True
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


BACKGROUND = 0.01  # a stand-in's probability off the object: above 0, so inside its window


class StandIn:
    """What a refiner has that propagation reads: a threshold and a spec (a model without a 'prev' channel)."""

    threshold = 0.5
    spec = SimpleNamespace(extras=("pos",))


class ComponentRefiner(StandIn):
    """Stand-in for a perfect model on a label stack: the labelled component(s) under the stroke, sure of them."""

    def __init__(self) -> None:
        self.strokes: list[tuple[int, np.ndarray]] = []
        self.plane: np.ndarray | None = None

    def set_image(self, image) -> None:
        self.plane = np.asarray(image)

    def predict_proba(self, stroke, *, prior=None) -> np.ndarray:
        assert prior is None  # this model takes no previous mask
        self.strokes.append((int(self.plane.max()), np.asarray(stroke).copy()))
        labels, _ = ndi.label(self.plane > 0)
        hit = np.unique(labels[np.asarray(stroke, bool)])
        return np.where(np.isin(labels, hit[hit > 0]), 0.99, BACKGROUND).astype(np.float32)


class ListRefiner(StandIn):
    """Stand-in with a fixed mask and confidence per plane (the plane image carries its own index)."""

    def __init__(self, masks: list[np.ndarray], sure: list[float] | None = None, extras=("pos",)) -> None:
        self.masks, self.sure, self.k = masks, sure or [0.99] * len(masks), -1
        self.spec = SimpleNamespace(extras=extras)
        self.calls: list[tuple[int, np.ndarray, np.ndarray | None]] = []

    def set_image(self, image) -> None:
        self.k = int(np.asarray(image).flat[0])

    def predict_proba(self, stroke=None, *, prior=None) -> np.ndarray:
        self.calls.append((self.k, np.asarray(stroke).copy(), None if prior is None else prior.copy()))
        return np.where(self.masks[self.k], self.sure[self.k], BACKGROUND).astype(np.float32)


def _indexed(n: int) -> np.ndarray:
    return np.stack([np.full(SHAPE, z) for z in range(n)])


def _sphere_labels(n=15, center=(32, 40), radius=7.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A label stack of a ball's cross-sections (planes carry their index + 1 as the label value)."""
    mid = n // 2
    gt = [_disc(center, math.sqrt(max(radius**2 - (z - mid) ** 2, 0.0))) for z in range(n)]
    return np.stack([m * (z + 1) for z, m in enumerate(gt)]).astype(np.int32), gt


# ------------------------------------------------------------------ the walk


def test_walk_recovers_a_ball_and_stops_where_it_vanishes():
    stack, gt = _sphere_labels()
    before = stack.copy()
    stroke = _disc((32, 40), 3)
    calls = []
    refiner = ComponentRefiner()
    out = propagate(stack, stroke, 7, refiner=refiner, progress=lambda d, t: calls.append((d, t)))
    assert out.dtype == bool and out.shape == stack.shape
    present = [z for z, m in enumerate(gt) if m.any()]
    for z in range(len(gt)):
        np.testing.assert_array_equal(out[z], gt[z], err_msg=f"plane {z}")
    assert present == list(range(1, 14))  # the ball is absent from planes 0 and 14
    # the walk asked plane 0 and 14 (and found nothing there) and went no further
    assert sorted(label for label, _ in refiner.strokes) == [0, 0, *range(2, 15)]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1] == (15, 15)
    np.testing.assert_array_equal(stack, before)


def test_each_seed_is_the_previous_mask_eroded():
    stack, gt = _sphere_labels()
    refiner = ComponentRefiner()
    propagate(stack, _disc((32, 40), 3), 7, refiner=refiner, erosion=0.3)
    for label, stroke in refiner.strokes[1:]:
        if label == 0:
            continue
        z = label - 1
        source = gt[z - 1] if z > 7 else gt[z + 1]  # the neighbour it was seeded from (the ball does not move)
        assert stroke.any() and not (stroke & ~source).any()
        assert stroke.sum() < source.sum()


def test_seed_of_a_thin_object_is_its_skeleton():
    line = np.zeros(SHAPE, bool)
    line[30:32, 10:70] = True
    seed = seed_from_mask(line, 0.5)
    assert seed.any() and not (seed & ~line).any()


def test_seed_of_a_large_mask_is_eroded_subsampled_and_stays_inside():
    """A mask wider than ``seeds.SEED_SIDE`` is eroded on a subsampled grid: the same core within a few pixels."""
    mask = _disc((700, 650), 620, shape=(1400, 1300))
    mask[600:800, 1100:] = False  # a notch, so the core is not a disc either
    seed = seed_from_mask(mask, 0.3)
    radius = 0.3 * math.sqrt(mask.sum() / math.pi)
    full = ndi.distance_transform_edt(mask) > radius  # the full-resolution erosion
    assert not (seed & ~mask).any()
    assert _iou(seed, full) > 0.98


def _moving(masks: list[np.ndarray]) -> np.ndarray:
    """Planes that show ``masks`` as smooth bright objects; pixel (0, 0) holds the plane's index (ListRefiner)."""
    planes = np.stack([ndi.gaussian_filter(m.astype(np.float32) * 100.0, 1.5) for m in masks])
    planes[:, 0, 0] = np.arange(len(masks))
    return planes


def test_the_window_follows_the_object_motion():
    """A disc moving 3 px per plane: each seed sits where the disc moved to on that plane, not where it was."""
    n = 8
    masks = [_disc((32, 12 + 3 * z), 6) for z in range(n)]
    refiner = ListRefiner(masks)
    out = propagate(_moving(masks), masks[0], 0, refiner=refiner, erosion=0.3)
    assert all(out[z].sum() == masks[z].sum() for z in range(n))
    for k, seed, _ in refiner.calls[1:]:
        cy, cx = ndi.center_of_mass(seed)
        assert (cy, cx) == pytest.approx((32, 12 + 3 * k), abs=1.0), k


def test_the_carried_mask_is_the_prior_when_the_model_takes_one():
    n = 5
    masks = [_disc((32, 20 + 4 * z), 8) for z in range(n)]
    planes = _moving(masks)
    refiner = ListRefiner(masks, extras=("pos", "neg", "prev"))
    propagate(planes, _disc((32, 20), 3), 0, refiner=refiner)
    (_, _, first), *walk = refiner.calls
    assert first is None  # the user's stroke alone on its plane
    for k, seed, prior in walk:
        np.testing.assert_array_equal(prior, carried(masks[k - 1], planes[k - 1], planes[k]))
        assert _iou(prior, masks[k]) > 0.8 > _iou(masks[k - 1], masks[k])
        assert not (seed & ~prior).any()


def test_a_rough_start_is_refined_as_a_prior_alone():
    """``rough``: the start plane's paint is a rough mask, its prior (no stroke); then the walk as usual."""
    n = 4
    masks = [_disc((32, 20 + 4 * z), 8) for z in range(n)]
    refiner = ListRefiner(masks, extras=("pos", "neg", "prev"))
    rough = _disc((33, 21), 10)
    out = propagate(_moving(masks), rough, 0, refiner=refiner, rough=True)
    (k, stroke, prior), *walk = refiner.calls
    assert k == 0 and stroke.ndim == 0 and stroke.item() is None  # the engine seeds the core itself
    np.testing.assert_array_equal(prior, rough)
    assert len(walk) == n - 1 and all(p is not None for _, _, p in walk)
    np.testing.assert_array_equal(out, np.stack(masks))
    with pytest.raises(ValueError, match="takes no rough mask"):
        propagate(_moving(masks), rough, 0, refiner=Refiner(build_model("tiny16-32")), rough=True)


class FixedRefiner(StandIn):
    """Stand-in answering the same probability map on every plane."""

    def __init__(self, prob: np.ndarray) -> None:
        self.prob = prob.astype(np.float32)

    def set_image(self, image) -> None:
        pass

    def predict_proba(self, stroke=None, *, prior=None) -> np.ndarray:
        return self.prob


def test_the_answer_keeps_the_carried_mask_where_the_model_is_unsure():
    """carry 0.35: an unsure part (p 0.3) of the carried disc stays and a fairly sure new bit (p 0.7) is not
    added; with carry 0 the model's answer alone drops the one and adds the other."""
    start = _disc((32, 40), 10)
    unsure = start & (np.arange(SHAPE[1]) >= 45)
    new_bit = _disc((32, 60), 3)
    prob = np.where(start, 0.99, BACKGROUND)
    prob[unsure], prob[new_bit] = 0.3, 0.7
    flat = np.zeros((3, *SHAPE))  # no texture: the carried mask is the previous one
    kept = propagate(flat, start, 0, refiner=FixedRefiner(prob), refine_start=False, carry=0.35)
    np.testing.assert_array_equal(kept, np.stack([start] * 3))
    alone = propagate(flat, start, 0, refiner=FixedRefiner(prob), refine_start=False, carry=0.0)
    np.testing.assert_array_equal(alone[1], (start & ~unsure) | new_bit)


def test_carried_follows_a_real_texture_and_stays_on_flat_planes():
    """A region of a photograph shifted by (3, -4) px: its mask is carried with it; no texture, no motion."""
    from skimage import data

    photo = data.camera().astype(np.float32)
    before, after = photo[100:300, 100:300], photo[97:297, 104:304]  # after(y, x) = before(y - 3, x + 4)
    mask = np.zeros(before.shape, bool)
    mask[60:140, 70:130] = True
    expected = np.zeros_like(mask)
    expected[63:143, 66:126] = True
    assert _iou(carried(mask, before, after), expected) > 0.9
    flat = np.full(before.shape, 7.0)
    np.testing.assert_array_equal(carried(mask, flat, flat), mask)


@pytest.mark.parametrize(
    "sure, masks_change, reason",
    [
        (0.6, None, "unsure of plane 6"),
        (0.99, np.zeros(SHAPE, bool), "plane 6 empty"),
    ],
)
def test_low_confidence_or_an_empty_mask_stops_that_direction(sure, masks_change, reason):
    n = 9
    masks = [_disc((32, 40 + z // 3), 10) for z in range(n)]  # slowly drifting disc
    confidences = [0.99] * n
    confidences[6] = sure
    if masks_change is not None:
        masks[6] = masks_change
    out = propagate(_indexed(n), masks[4], 4, refiner=ListRefiner(masks, confidences))
    assert all(out[z].any() for z in range(6)), reason
    assert not out[6:].any(), reason


def test_confidence_is_the_mean_probability_inside_the_mask():
    prob = np.array([[0.9, 0.7, 0.2], [0.0, 0.5, 0.8]], np.float32)
    assert confidence(prob, 0.5) == pytest.approx(0.8)
    assert confidence(np.zeros((2, 2), np.float32), 0.5) == 0.0


def test_a_stop_raised_by_progress_ends_the_walk():
    class Stopped(Exception):
        pass

    def stop(done, total):
        if done == 3:
            raise Stopped

    refiner = ListRefiner([_disc((32, 40), 10)] * 6)
    with pytest.raises(Stopped):
        propagate(_indexed(6), _disc((32, 40), 3), 0, refiner=refiner, progress=stop)
    assert [k for k, _, _ in refiner.calls] == [0, 1, 2]


def test_a_finished_start_mask_is_carried_on_unrefined():
    masks = [_disc((32, 40), 10)] * 4
    start = _disc((32, 40), 9)
    refiner = ListRefiner(masks)
    out = propagate(_indexed(4), start, 1, refiner=refiner, refine_start=False)
    np.testing.assert_array_equal(out[1], start)
    assert sorted(k for k, _, _ in refiner.calls) == [0, 2, 3]


def test_empty_first_plane_gives_an_empty_stack_and_full_progress():
    calls = []
    masks = [_disc((32, 40), 10) for _ in range(5)]
    masks[2] = np.zeros(SHAPE, bool)
    out = propagate(
        _indexed(5), _disc((32, 40), 3), 2, refiner=ListRefiner(masks), progress=lambda d, t: calls.append((d, t))
    )
    assert not out.any() and calls[-1] == (5, 5)


def test_channels_last_stack_sends_rgb_planes():
    seen = []

    class Recorder(ComponentRefiner):
        def set_image(self, image):
            seen.append(np.shape(image))
            super().set_image(np.asarray(image)[..., 0])

    stack, _ = _sphere_labels(n=5, radius=3)
    rgb = np.repeat(stack[..., None], 3, axis=3)
    out = propagate(rgb, _disc((32, 40), 2), 2, refiner=Recorder())
    assert out.shape == stack.shape and out[2].any()
    assert set(seen) == {(*SHAPE, 3)}


@pytest.mark.parametrize(
    "image_shape, stroke_shape, index, match",
    [
        (SHAPE, SHAPE, 0, "stack"),
        ((*SHAPE, 3), SHAPE, 0, "one 2D plane"),
        ((4, *SHAPE), (10, 10), 0, "stack"),
        ((4, *SHAPE), (4, *SHAPE), 0, "2D"),
        ((4, *SHAPE), SHAPE, 4, "index"),
        ((4, *SHAPE), SHAPE, -1, "index"),
        ((4, *SHAPE), SHAPE, 1.0, "index"),
    ],
)
def test_bad_input_is_a_value_error(image_shape, stroke_shape, index, match):
    stroke = np.zeros(stroke_shape, bool)
    with pytest.raises(ValueError, match=match):
        propagate(np.zeros(image_shape), stroke, index, refiner=ComponentRefiner())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"erosion": 1.0}, "erosion"),
        ({"erosion": -0.1}, "erosion"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"min_confidence": -0.1}, "min_confidence"),
        ({"carry": 0.5}, "carry"),
        ({"carry": -0.1}, "carry"),
        ({"adapt": -1.0}, "adapt"),
        ({"adapt": float("nan")}, "adapt"),
        ({"adapt": "30"}, "adapt"),
    ],
)
def test_bad_settings_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        propagate(np.zeros((3, *SHAPE)), _disc((32, 40), 3), 1, refiner=ComponentRefiner(), **kwargs)


def test_adapting_needs_a_refiner_with_a_model():
    with pytest.raises(ValueError, match="adapt needs a refiner with a model"):
        propagate(_indexed(3), _disc((32, 40), 5), 1, refiner=ComponentRefiner(), adapt=1.0)


class _Everywhere(torch.nn.Module):
    """A 'finetuned' model that claims every pixel of its window: its planes are easy to tell apart."""

    def __init__(self, spec) -> None:
        super().__init__()
        self.spec = spec
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), 10.0) + 0 * self.weight


def test_the_adapted_copy_walks_the_stack_trained_on_the_start_plane(monkeypatch):
    """``adapt``: the start plane and its mask go to ``finetune.adapt``, whose model then refines every other plane."""
    from napari_segmentello import propagate as module
    from napari_segmentello.finetune import Adapted

    source = build_model("tiny16-32", working_size=64)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    seen = {}

    def fake_adapt(pairs, *, model, minutes, device, should_stop):
        seen.update(pairs=pairs, model=model, minutes=minutes, stopped=should_stop())
        return Adapted(_Everywhere(model.spec), "m", {}, False, None, {}, [0.0])

    monkeypatch.setattr(module, "finetuned", fake_adapt)
    stack = np.stack([np.random.default_rng(z).random(SHAPE).astype(np.float32) for z in range(3)])
    start = _disc((32, 40), 8)
    out = propagate(stack, start, 1, refiner=Refiner(source, "cpu"), refine_start=False, adapt=6.0)
    ((plane, mask),) = seen["pairs"]
    np.testing.assert_array_equal(plane, stack[1])
    np.testing.assert_array_equal(mask, start.astype(np.uint8))
    assert seen["model"] is source and seen["minutes"] == pytest.approx(0.1) and seen["stopped"] is False
    window = roi_from_stroke(start, margin=source.spec.roi_margin).clipped(SHAPE)
    assert out[0].sum() > 2 * start.sum() and out[2].sum() > 2 * start.sum()  # the adapted model's answers
    assert out[0][window[0], window[1]].all()
    assert all(torch.equal(v, before[k]) for k, v in source.state_dict().items())  # the caller's model untouched


def test_a_start_too_small_to_learn_from_walks_unadapted(monkeypatch):
    from napari_segmentello import propagate as module

    monkeypatch.setattr(module, "finetuned", lambda *a, **k: pytest.fail("adapted on a 5-pixel mask"))
    refiner = Refiner(build_model("tiny16-32", working_size=64), "cpu")
    stack = np.stack([np.random.default_rng(z).random(SHAPE).astype(np.float32) for z in range(3)])
    start = _disc((32, 40), 1.5)
    assert 0 < start.sum() < module.MIN_AREA
    out = propagate(stack, start, 1, refiner=refiner, refine_start=False, adapt=5.0)
    assert out.shape == (3, *SHAPE)


def test_a_stop_during_adaptation_ends_the_walk():
    """Each adaptation step first reports progress, so a user's Stop raised there ends the walk."""
    torch.manual_seed(0)
    refiner = Refiner(build_model("tiny16-32", working_size=64), "cpu")
    stack = np.stack([np.random.default_rng(z).random(SHAPE).astype(np.float32) for z in range(3)])
    calls = []

    def stop(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) > 2:
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        propagate(stack, _disc((32, 40), 8), 1, refiner=refiner, refine_start=False, adapt=60.0, progress=stop)
    assert calls == [1, 1, 1]  # the start plane, then two adaptation steps; no plane after it


# ------------------------------------------------------------------ a real volume


def nucleus_stack(root=None, n_planes: int = 15, absent: int = 2) -> tuple[np.ndarray, np.ndarray, int]:
    """(Z×H×W×3 uint8 stack, Z×H×W bool ground truth, middle plane) around a real dsb2018 *val* nucleus.

    The nucleus is the largest one of the first 8 val images that lies away from the
    border with no other nucleus within 10 px (an isolated one: its neighbours do not
    change across the planes). Plane z shows it scaled about its centre by ``sqrt(1 - t²)``,
    ``t = (z - mid) / R`` (a ball's cross-sections), blended onto the image with that
    nucleus inpainted away; the ``absent`` planes at each end lie beyond the ball, without it.
    """
    instances = CocoInstances(*dataset_files("dsb2018-nuclei", "val", root), max_images=8)
    masks = [instances[i].mask for i in range(len(instances))]
    best = None
    for i, (image_id, _) in enumerate(instances.items):
        others = [m for j, m in enumerate(masks) if j != i and instances.items[j][0] == image_id]
        rows, cols = np.nonzero(masks[i])
        h, w = masks[i].shape
        inside = rows.min() > 8 and cols.min() > 8 and rows.max() < h - 9 and cols.max() < w - 9
        alone = not (ndi.binary_dilation(masks[i], iterations=10) & np.any(others, axis=0)).any()
        if inside and alone and (best is None or masks[i].sum() > masks[best].sum()):
            best = i
    image, mask = instances[best].image.astype(np.float64), masks[best]
    center = np.array(ndi.center_of_mass(mask))[::-1]  # (x, y) for warp's coordinates
    around = ndi.binary_dilation(mask, iterations=3)
    box = ndi.find_objects(ndi.binary_dilation(around, iterations=8).astype(int))[0]
    background = image.copy()
    background[box] = inpaint_biharmonic(image[box], around[box], channel_axis=-1)
    alpha = ndi.gaussian_filter(ndi.binary_dilation(mask, iterations=1).astype(float), 1.0)
    mid = n_planes // 2
    radius = mid - absent + 0.5
    planes, truth = [], []
    for z in range(n_planes):
        t = (z - mid) / radius
        if abs(t) >= 1:
            planes.append(background)
            truth.append(np.zeros_like(mask))
            continue
        s = math.sqrt(1 - t * t)

        def shrink(a, s=s):
            return warp(a, lambda xy: center + (xy - center) / s, order=1, preserve_range=True)

        a = shrink(alpha)[..., None]
        planes.append(a * shrink(image) + (1 - a) * background)
        truth.append(shrink(mask.astype(float)) >= 0.5)
    stack = np.clip(np.round(np.stack(planes)), 0, 255).astype(np.uint8)
    return stack, np.stack(truth), mid


class OtsuRefiner(StandIn):
    """A classical refiner: Otsu's threshold in the stroke's window, the component(s) under the stroke.

    Its probability is a logistic of each pixel's distance from the threshold (``CONTRAST``
    gray levels per unit): sure on a nucleus against its background, unsure on a flat one.
    """

    def set_image(self, image) -> None:
        self.gray = np.asarray(image, float).mean(axis=-1)

    def predict_proba(self, stroke, *, prior=None) -> np.ndarray:
        stroke = np.asarray(stroke, bool)
        rows, cols, _, _ = roi_from_stroke(stroke).clipped(stroke.shape)
        window = self.gray[rows, cols]
        above = window - threshold_otsu(window)
        if window[stroke[rows, cols]].mean() < window.mean():  # dark objects on a bright background
            above = -above
        labels, _ = ndi.label(above > 0)
        hit = np.unique(labels[stroke[rows, cols]])
        inside = ndi.binary_fill_holes(np.isin(labels, hit[hit > 0]))
        out = np.zeros(stroke.shape, np.float32)
        out[rows, cols] = np.where(inside, expit(np.abs(above) / CONTRAST), BACKGROUND)
        return out


CONTRAST = 3.0  # gray levels: nucleus planes score ~0.9, the empty end planes ~0.67 (min_confidence 0.8)


@pytest.fixture(scope="module")
def nucleus(data_root):
    return nucleus_stack(data_root)


def _middle_stroke(truth: np.ndarray, mid: int) -> np.ndarray:
    return simulate_stroke(truth[mid], "scribble", np.random.default_rng(0))


@pytest.mark.data
def test_real_stack_has_ball_cross_sections(nucleus):
    stack, truth, mid = nucleus
    areas = truth.reshape(len(truth), -1).sum(axis=1)
    assert stack.dtype == np.uint8 and stack.shape[:3] == truth.shape
    assert areas[:2].sum() == 0 and areas[-2:].sum() == 0 and (areas[2:-2] > 0).all()
    assert areas[mid] == areas.max() and (np.diff(areas[: mid + 1]) >= 0).all()


@pytest.mark.data
def test_propagation_follows_a_real_nucleus_with_a_classical_refiner(nucleus):
    """Behaviour on real planes: it follows the nucleus while it is there, and stops where it is gone."""
    stack, truth, mid = nucleus
    out = propagate(stack, _middle_stroke(truth, mid), mid, refiner=OtsuRefiner())
    present = truth.reshape(len(truth), -1).any(axis=1)
    ious = [_iou(truth[z], out[z]) for z in range(len(truth)) if present[z]]
    assert not out[~present].any()
    assert np.mean(ious) > 0.7, ious


@pytest.mark.data
def test_propagation_with_a_real_refiner_returns_a_contiguous_run(nucleus, tmp_path):
    """The real Refiner path (random weights: behaviour only, no accuracy)."""
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", build_model("tiny16-32", working_size=64))
    stack, truth, mid = nucleus
    calls = []
    out = propagate(
        stack, _middle_stroke(truth, mid), mid, model=path, device="cpu", progress=lambda d, t: calls.append(d)
    )
    assert out.dtype == bool and out.shape == truth.shape
    reached = np.flatnonzero(out.reshape(len(out), -1).any(axis=1))
    if reached.size:
        assert mid in reached and (np.diff(reached) == 1).all()
    assert calls[-1] == len(stack)
    refiner = Refiner(path, device="cpu")
    refiner.set_image(stack[mid])
    first = refiner.predict(_middle_stroke(truth, mid))
    assert np.count_nonzero(out[mid] & first) >= 0.5 * np.count_nonzero(first)  # the stroke's mask, grown at most


# ------------------------------------------------------------------ real video (davis2016)


@pytest.fixture(scope="module")
def video(data_root):
    """The first 6 frames of a real DAVIS-2016 sequence and its masks (read via the shared data root)."""
    return load_sequence("car-roundabout", data_root, slice(0, 6))


@pytest.mark.data
def test_video_slice_is_read_as_frames_and_masks(video):
    frames, masks = video
    assert frames.shape == (6, 480, 854, 3) and frames.dtype == np.uint8
    assert masks.shape == (6, 480, 854) and masks.dtype == bool and masks.reshape(6, -1).any(axis=1).all()


@pytest.mark.data
def test_the_default_model_follows_a_real_car_from_its_true_mask(video):
    """Started from frame 0's true mask, the bundled model keeps the moving car on every frame."""
    frames, masks = video
    out = propagate(frames, masks[0], 0, model="default", device="cpu", refine_start=False)
    ious = [_iou(g, p) for g, p in zip(masks, out, strict=True)]
    assert min(ious[1:]) > 0.5, ious


@pytest.mark.data
def test_the_evaluation_writes_its_table_json_and_strip(data_root, tmp_path):
    """``python -m training.propagation`` end to end on 4 frames of one sequence (random weights: behaviour only)."""
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", build_model("tiny16-32", working_size=64))
    args = ["--model", str(path), "--sequences", "dog", "--frames", "4", "--device", "cpu", "--out", str(tmp_path)]
    assert propagation_main([*args, "--data-root", str(data_root)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    seq = results["sequences"]["dog"]
    assert seq["frames"] == 4 and seq["first"]["start"] == 0 and seq["middle"]["start"] == 2
    assert seq["first"]["copy"]["j"][0] == 1.0 and seq["first"]["gt-start"]["j"][0] == 1.0
    assert (tmp_path / "strip.png").stat().st_size > 0 and "| dog | 4 |" in (tmp_path / "results.md").read_text()
    assert results["carry"] == 0.0 and results["adapt"] == 0.0
    assert "adapt a copy" not in (tmp_path / "results.md").read_text()
    name, lines = report.propagation_block(tmp_path / "results.json")  # the README block, from the JSON alone
    assert name == "propagation" and lines[0].startswith(f"Command: `python -m training.propagation --model {path}")
    assert any(line.startswith("| dog | 4 |") for line in lines) and not any(line.startswith("![") for line in lines)
    results["strip"] = "docs/propagation_strip.png"  # a strip written for the README is shown there
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert report.propagation_block(tmp_path / "results.json")[1][-1].endswith("(docs/propagation_strip.png)")
    assert propagation_main([*args, "--data-root", str(data_root), "--carry", "0.7"]) == 2  # a clear error, not a crash
    assert propagation_main([*args, "--data-root", str(data_root), "--adapt", "-1"]) == 2
    assert propagation_main([*args, "--data-root", str(data_root), "--adapt", "0.2"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["adapt"] == 0.2
    assert "adapt a copy of the model to the start frame's mask for 0.2 s" in (tmp_path / "results.md").read_text()
    assert report.propagation_block(tmp_path / "results.json")[0] == "propagation-adapt"
    strip = tmp_path / "elsewhere" / "strip.png"
    assert propagation_main([*args, "--data-root", str(data_root), "--strip-out", str(strip)]) == 0
    assert strip.stat().st_size > 0


@pytest.mark.data
def test_the_latency_benchmark_runs_through_run_all(data_root, tmp_path):
    """``benchmarks.run_all --only propagation --quick``: figures per propagated frame and the engine's share."""
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", build_model("tiny16-32", working_size=64))
    args = ["--quick", "--only", "propagation", "--model", str(path), "--device", "cpu", "--out", str(tmp_path)]
    env = {**os.environ, "SEGMENTELLO_DATA": str(data_root)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "propagation.json").read_text())
    walk, engine = result["all"]["propagate_ms"], result["all"]["engine_ms"]
    assert engine["n"] == 3 and 1 <= walk["n"] <= 3  # random weights may stop the walk early
    assert all(0 < row["min"] <= row["median"] <= row["max"] for row in (walk, engine))
    assert "### Propagation latency per frame" in (tmp_path / "performance.md").read_text()


def test_first_drop_under_half_in_each_direction():
    ious = [0.4, 0.9, 0.8, 1.0, 0.7, 0.45, 0.3]
    assert first_below(ious, 3) == {"forward": 5, "backward": 0}
    assert first_below([1.0, 0.9], 0) == {"forward": None, "backward": None}


def test_start_frames_show_the_object():
    masks = np.zeros((7, 4, 4), bool)
    masks[2:5, 1, 1] = True
    assert start_frame(masks, "first") == 2 and start_frame(masks, "middle") == 3
    with pytest.raises(ValueError, match="no frame"):
        start_frame(np.zeros((3, 4, 4), bool), "first")


if __name__ == "__main__":  # the per-plane IoU measurement
    import argparse

    parser = argparse.ArgumentParser(description="per-plane IoU of propagation on the nucleus stack")
    parser.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    args = parser.parse_args()
    stack, truth, mid = nucleus_stack()
    stroke = _middle_stroke(truth, mid)
    results = {
        "model": propagate(stack, stroke, mid, model=args.model, device="cpu"),
        "otsu": propagate(stack, stroke, mid, refiner=OtsuRefiner()),
    }
    print("plane | gt area | " + " | ".join(f"{name} IoU" for name in results))
    for z in range(len(truth)):
        cells = [
            f"{_iou(truth[z], r[z]):.3f}" if truth[z].any() else ("empty" if not r[z].any() else "FP")
            for r in results.values()
        ]
        print(f"{z} | {int(truth[z].sum())} | " + " | ".join(cells))
    for name, r in results.items():
        present = truth.reshape(len(truth), -1).any(axis=1)
        mean = np.mean([_iou(truth[z], r[z]) for z in np.flatnonzero(present)])
        print(f"{name}: mean IoU over planes with the nucleus {mean:.3f}")
