"""Losses: gradients, known answers, weighted combinations, degenerate targets, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segmentello.losses import (
    BASE_LOSSES,
    COMBINED,
    batch_sdm,
    boundary_loss,
    distill_loss,
    focal_loss,
    loss_names,
    make_loss,
    prompt_loss,
    signed_distance_map,
)

ALL = loss_names()


def _target(seed: int = 0, shape=(2, 1, 12, 12)) -> torch.Tensor:
    """A blob per sample, so each target has both classes and a contour."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.zeros(shape, dtype=torch.float64)
    r = min(3, h // 3)
    for i in range(n):
        cy, cx = torch.randint(r, h - r, (2,), generator=g)
        out[i, 0] = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).double()
    return out


def _perfect(target: torch.Tensor, scale: float = 12.0) -> torch.Tensor:
    return scale * (2 * target - 1)


def test_names_cover_the_contract() -> None:
    assert set(ALL) == {"bce", "dice", "focal", "boundary", "bce-dice", "bce-dice-bound", "focal-dice"}


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        make_loss("nope")
    assert "nope" in str(err.value) and "bce-dice-bound" in str(err.value)


@pytest.mark.parametrize("name", list(BASE_LOSSES))
def test_gradcheck(name: str) -> None:
    target = _target(1, (2, 1, 6, 6))
    logits = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    logits.requires_grad_(True)
    loss = make_loss(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_perfect_prediction_beats_inverted_and_random(name: str) -> None:
    target = _target(3)
    loss = make_loss(name)
    perfect = loss(_perfect(target), target).item()
    inverted = loss(-_perfect(target), target).item()
    random = loss(torch.randn(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), target)
    assert perfect < random.item() < inverted


@pytest.mark.parametrize("name", ["bce", "dice", "focal"])
def test_region_losses_vanish_on_perfect_prediction(name: str) -> None:
    target = _target(5)
    assert make_loss(name)(_perfect(target), target).item() < 1e-4


def test_boundary_loss_reaches_its_minimum_on_perfect_prediction() -> None:
    """The minimum of mean(p × SDM) over p in [0, 1] is mean(min(SDM, 0)): on exactly the object."""
    target = _target(6)
    sdm = batch_sdm(target)
    minimum = sdm.clamp(max=0).mean().item()
    assert minimum < 0
    assert boundary_loss(_perfect(target), target).item() == pytest.approx(minimum, abs=1e-5)
    # any other prediction costs more, e.g. the object grown by one pixel ring
    grown = torch.nn.functional.max_pool2d(target, 3, stride=1, padding=1)
    assert boundary_loss(_perfect(grown), target).item() > minimum + 1e-4


def test_dice_known_value() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1  # 8 pixels
    pred = torch.zeros(1, 1, 4, 4)
    pred[..., :, :2] = 1  # 8 pixels, 4 shared with the target
    loss = make_loss("dice")(_perfect(pred, 50.0), target).item()
    assert loss == pytest.approx(1 - (2 * 4 + 1) / (8 + 8 + 1), abs=1e-6)


def test_dice_is_averaged_per_sample() -> None:
    """A small object's Dice counts as much as a large one's: batch loss = mean of per-sample losses."""
    target = torch.zeros(2, 1, 16, 16)
    target[0, 0, 2:4, 2:4] = 1
    target[1, 0, 1:15, 1:15] = 1
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(16))
    loss = make_loss("dice")
    per_sample = (loss(logits[:1], target[:1]) + loss(logits[1:], target[1:])) / 2
    assert loss(logits, target).item() == pytest.approx(per_sample.item(), rel=1e-6)


def test_focal_without_focusing_is_half_bce() -> None:
    """gamma=0, alpha=0.5 removes both focal factors except the constant 1/2."""
    target = _target(7)
    logits = torch.randn(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    plain = focal_loss(logits, target, alpha=0.5, gamma=0.0)
    assert plain.item() == pytest.approx(0.5 * make_loss("bce")(logits, target).item(), rel=1e-12)
    # with the defaults, confident correct pixels are down-weighted far more than BCE does
    confident = _perfect(target, 3.0)
    assert focal_loss(confident, target).item() < 0.01 * make_loss("bce")(confident, target).item()


@pytest.mark.parametrize("name", list(COMBINED))
def test_combined_is_the_weighted_sum_of_its_parts(name: str) -> None:
    target = _target(9)
    logits = torch.randn(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    expected = sum(w * make_loss(part)(logits, target) for part, w in COMBINED[name])
    assert make_loss(name)(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)


def test_study_weights() -> None:
    assert dict(COMBINED["bce-dice"]) == {"bce": 0.5, "dice": 0.5}
    assert dict(COMBINED["bce-dice-bound"]) == {"bce": 0.4, "dice": 0.4, "boundary": 0.2}
    assert make_loss("bce-dice-bound").uses_sdm and not make_loss("bce-dice").uses_sdm


def test_precomputed_sdm_gives_the_same_loss() -> None:
    target = _target(11).float()
    logits = torch.randn(target.shape, generator=torch.Generator().manual_seed(12))
    sdm = torch.from_numpy(np.stack([signed_distance_map(m) for m in target[:, 0].numpy()])[:, None])
    loss = make_loss("bce-dice-bound")
    assert loss(logits, target, sdm).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)
    with pytest.raises(ValueError, match="sdm shape"):
        loss(logits, target, sdm[:, :, :5])


def test_signed_distance_map_known_values_and_sign() -> None:
    mask = np.array([[1, 1, 0, 0]], bool)
    expected = np.array([[-1.5, -0.5, 0.5, 1.5]]) / np.hypot(1, 4)
    np.testing.assert_allclose(signed_distance_map(mask), expected, rtol=1e-6)
    blob = _target(13)[0, 0].numpy() > 0.5
    sdm = signed_distance_map(blob)
    assert (sdm[blob] < 0).all() and (sdm[~blob] > 0).all() and np.abs(sdm).max() < 1


@pytest.mark.parametrize("fill", [0.0, 1.0])
@pytest.mark.parametrize("name", ALL)
def test_empty_and_full_targets_give_finite_losses_and_gradients(name: str, fill: float) -> None:
    target = torch.full((2, 1, 8, 8), fill)
    logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(14)).requires_grad_(True)
    loss = make_loss(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # and the right answer is still the best one
    assert make_loss(name)(_perfect(target), target).item() <= loss.item()


def test_sdm_of_empty_and_full_masks_is_zero() -> None:
    assert not signed_distance_map(np.zeros((5, 6), bool)).any()
    assert not signed_distance_map(np.ones((5, 6), bool)).any()


def test_inputs_are_not_mutated() -> None:
    target = _target(15)
    logits = torch.randn(target.shape, dtype=torch.float64)
    before = (logits.clone(), target.clone())
    for name in ALL:
        make_loss(name)(logits, target)
    assert torch.equal(before[0], logits) and torch.equal(before[1], target)


@pytest.mark.parametrize(
    ("logits", "target", "match"),
    [
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 7), "does not match"),
        (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), r"\(N, 1, H, W\)"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), r"\(N, 1, H, W\)"),
        (torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long), "float"),
    ],
)
@pytest.mark.parametrize("name", ALL)
def test_bad_input_is_a_clear_value_error(name: str, logits, target, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_loss(name)(logits, target)


def test_signed_distance_map_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2D"):
        signed_distance_map(np.zeros((1, 4, 4), bool))


def _prompt_case():
    """Two 1×8×8 samples: the object is the left half; a stroke and a "not this" pixel on each."""
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, :, :4] = 1.0
    pos, neg = torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)
    pos[:, 0, 0] = 1.0  # on the object
    neg[:, 7, 7] = 1.0  # off it
    return target, pos, neg


def test_prompt_loss_is_high_only_when_the_answer_drops_a_prompted_pixel() -> None:
    target, pos, neg = _prompt_case()
    kept = _perfect(target)
    assert prompt_loss(kept, target, pos, neg).item() < 1e-4
    dropped = kept.clone()
    dropped[0, 0, 0, 0] = -12.0  # sample 0 leaves its click out; the rest of the answer is perfect
    loss = prompt_loss(dropped, target, pos, neg).item()
    # mean over sample 0's two prompted pixels (one wrong by 12 logits), then over the two samples
    assert loss == pytest.approx(12.0 / 2 / 2, rel=1e-3)
    assert make_loss("bce")(dropped, target).item() < loss / 10  # the region loss hardly sees it


def test_prompt_loss_ignores_stroke_pixels_off_the_object_and_samples_without_prompts() -> None:
    target, pos, neg = _prompt_case()
    wrong = _perfect(target)
    wrong[0, 0, 0, 0] = -12.0  # sample 0 leaves its click out
    coarse = pos.clone()
    coarse[:, :, 4:6] = 1.0  # a coarse mask given as the stroke spills over the object
    alone = prompt_loss(wrong[:1], target[:1], pos[:1], neg[:1]).item()
    assert prompt_loss(wrong[:1], target[:1], coarse[:1], neg[:1]).item() == pytest.approx(alone)
    empty = torch.zeros_like(pos)
    both = prompt_loss(wrong, target, torch.stack([pos[0], empty[1]]), torch.stack([neg[0], empty[1]])).item()
    assert both == pytest.approx(alone)  # a sample with no prompted pixel does not dilute the mean
    assert prompt_loss(wrong, target, empty, empty).item() == 0.0


def test_distill_loss_pulls_the_student_to_the_teachers_probabilities() -> None:
    teacher = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    same = teacher.clone().requires_grad_(True)
    distill_loss(same, teacher).backward()
    assert same.grad.abs().max().item() < 1e-12  # the teacher's answer is the student's optimum
    p = torch.sigmoid(teacher)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean()
    assert distill_loss(teacher, teacher).item() == pytest.approx(entropy.item())
    assert distill_loss(-teacher, teacher).item() > entropy.item() + 0.1
    with pytest.raises(ValueError, match="does not match"):
        distill_loss(teacher, teacher[:1])
