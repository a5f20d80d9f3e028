"""The object-aware family (issue 13): pretrained encoder, zero-init prompt fusion, the coarse-to-fine context rule.

An *oracle* stand-in network (bright pixels are the object, "not this" pixels are not)
checks the engine's window geometry exactly, without depending on a trained model.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi
import torch
import torch.nn.functional as F
from skimage import data
from skimage.draw import disk
from skimage.transform import resize
from torch import nn

from napari_segmentello import engine
from napari_segmentello.checkpoint import load_model_from_checkpoint, save_checkpoint
from napari_segmentello.checks import check_box
from napari_segmentello.engine import Refiner
from napari_segmentello.inputs import build_input, channel_of, intensity_range, window_input
from napari_segmentello.models import build_model, get_spec
from napari_segmentello.models.efficientnet import EfficientNetLite0, pretrained_file
from napari_segmentello.roi import ROI, crop, focus_roi, resize_mask, start_context, stroke_bbox
from napari_segmentello.samples import PromptMix, context_windows, earlier_mask, make_sample, perturb_mask
from napari_segmentello.seeds import ROUGH_EROSION, seed_from_mask

SPEC = get_spec("lite0-128")
NEG = 3 + SPEC.extras.index("neg")


class Oracle(nn.Module):
    """Logits from the image: bright is object, a "not this" pixel is not. Records every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = SPEC
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        return 40.0 * x[:, :1] - 100.0 * x[:, NEG : NEG + 1]


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


def _covers(roi: ROI, mask: np.ndarray) -> bool:
    y0, y1, x0, x1 = stroke_bbox(mask)
    return roi.y0 <= y0 and roi.x0 <= x0 and roi.y0 + roi.size >= y1 and roi.x0 + roi.size >= x1


def _traced(call):
    """``call()``'s result and the peak memory (bytes) Python allocated while it ran."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


class Shrinker(nn.Module):
    """Answers its prior (the 'prev' channel) eroded by 3 window pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = SPEC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev = x[:, channel_of(SPEC, "prev")][:, None]
        return 40.0 * (-F.max_pool2d(-prev, 7, stride=1, padding=3) - 0.5)


# ---------------------------------------------------------------- encoder


def test_every_encoder_key_loads_from_the_package_file():
    encoder = EfficientNetLite0(max_stride=32)
    info = encoder.load_pretrained()
    state = torch.load(pretrained_file(), map_location="cpu", weights_only=True)
    assert info["file"] == pretrained_file().name and len(info["sha256"]) == 64
    own = encoder.state_dict()
    assert set(own) <= set(state)
    assert set(state) - set(own) == {k for k in state if k.startswith(("_conv_head", "_bn1.", "_fc"))}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_the_pretrained_encoder_knows_a_cat():
    """chelsea (scikit-image) is ImageNet class 285, Egyptian cat: the weights are real and laid out right."""
    encoder = EfficientNetLite0(max_stride=32).eval()
    encoder.load_pretrained()
    state = torch.load(pretrained_file(), map_location="cpu", weights_only=True)
    image = resize(data.chelsea(), (224, 224), anti_aliasing=True)
    x = torch.from_numpy((image * 255 - 127) / 128).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        features = F.conv2d(encoder(x)[-1], state["_conv_head.weight"])
        bn = [state[f"_bn1.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        features = F.batch_norm(features, *bn, eps=1e-3).clamp(0, 6).mean((2, 3))
        logits = F.linear(features, state["_fc.weight"], state["_fc.bias"])
    assert int(logits.argmax()) == 285


def test_prompt_injection_is_a_no_op_at_init():
    torch.manual_seed(0)
    net = build_model("lite0-128").eval()
    net.encoder.load_pretrained()
    rgb = torch.rand(2, 3, 64, 64) * 2 - 1
    prompts = (torch.rand(2, len(SPEC.extras), 64, 64) > 0.7).float()
    with torch.no_grad():
        stem = net.encoder.stem(rgb)
        assert torch.equal(net.fusion(stem, prompts), stem)
        plain = net.encoder(rgb)
        fused = net.encoder.forward_from_stem(net.fusion(stem, prompts))
    for a, b in zip(plain, fused, strict=True):
        assert torch.equal(a, b)
    assert [t.shape[1] for t in plain] == [16, 24, 40, 112]


@pytest.mark.parametrize("name", ["lite0-128", "lite0-256", "lite0-64"])
def test_any_size_in_every_parameter_trained(name):
    torch.manual_seed(0)
    net = build_model(name)
    x = torch.randn(2, net.spec.in_channels, 45, 67, requires_grad=True)
    logits = net(x)
    assert logits.shape == (2, 1, 45, 67)
    logits.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None]
    assert not dead, dead


def test_checkpoint_alone_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    net = build_model("lite0-128").eval()
    path = save_checkpoint(tmp_path / "lite0.pt", net)
    again = load_model_from_checkpoint(path)
    x = torch.randn(1, net.spec.in_channels, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), again(x), atol=1e-5)
    assert again.spec == net.spec and path.stat().st_size < 25 * 2**20


# ---------------------------------------------------------------- context rule


def test_a_small_stroke_on_a_large_object_gets_a_window_that_holds_it():
    """Disc of radius 200, a 10-px stroke at its centre: the rule grows the window until it covers the disc."""
    gt = _disc((700, 700), (350, 350), 200)
    stroke = np.zeros_like(gt)
    stroke[350, 345:355] = True
    windows = context_windows(gt, stroke_bbox(stroke), SPEC.working_size)
    assert not _covers(windows[0], gt) and _covers(windows[-1], gt)
    assert [w.size for w in windows] == sorted(w.size for w in windows)

    refiner = Refiner(Oracle())
    refiner.set_image(gt.astype(np.float32))
    assert _iou(refiner.predict(stroke), gt) > 0.97


def test_a_click_at_the_centre_of_a_300_px_object_finds_the_object():
    gt = _disc((800, 900), (400, 450), 150)
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(gt.astype(np.float32))
    click = _disc(gt.shape, (400, 450), 4.5)
    assert _iou(refiner.predict(click), gt) > 0.97
    assert len(oracle.batches) >= 3  # grown at least once, then the focus pass


def test_negative_strokes_outside_the_first_window_change_the_answer():
    gt = _disc((700, 700), (350, 350), 200)
    stroke = np.zeros_like(gt)
    stroke[350, 345:355] = True
    negative = np.zeros_like(gt)
    negative[330:370, 480:500] = True  # inside the disc, far outside the first 64-px window
    first = start_context(stroke_bbox(stroke))
    assert not negative[max(first.y0, 0) : first.y0 + first.size, max(first.x0, 0) : first.x0 + first.size].any()

    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(gt.astype(np.float32))
    plain = refiner.predict(stroke)
    oracle.batches.clear()
    corrected = refiner.predict(stroke, negative=negative)
    assert plain[negative].all() and not corrected[negative].any()
    assert any(b[:, NEG].any() for b in oracle.batches), "the network never saw the negative stroke"


class Bright(Oracle):
    """Bright is object; it sees the "not this" channel but ignores it, so only the engine's rule removes pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        return 40.0 * x[:, :1]


def test_a_negative_click_holds_out_its_pixel_and_a_painted_negative_all_of_it():
    """A click marks a point: its disc reaches the network, but only the clicked pixel is kept out of the answer."""
    image = _disc((300, 300), (150, 150), 60)
    stroke = np.zeros(image.shape, bool)
    stroke[150, 140:160] = True
    click = (150, 208)  # 2 px inside the edge, as on a thin false-positive rim: its disc reaches farther in
    disc = _disc(image.shape, click, 4.5)
    kept = disc & image
    kept[click] = False
    assert kept.sum() > 20
    network = Bright()
    refiner = Refiner(network)
    refiner.set_image(image.astype(np.float32))

    painted = refiner.predict(stroke, negative=disc)
    assert not painted[disc].any()
    network.batches.clear()
    clicked = refiner.predict(stroke, clicks=[(*click, 0)])
    assert clicked[kept].all() and not clicked[click]
    assert any(b[:, NEG].sum() > 1 for b in network.batches), "the network never saw the click's disc"
    with_positive = refiner.predict(clicks=[(150, 150, 1), (*click, 0)])
    np.testing.assert_array_equal(with_positive, clicked)
    with pytest.raises(ValueError, match=r"clicks must be an \(N, 3\) array"):
        refiner.predict(stroke, clicks=[click])


def test_what_is_painted_as_one_object_is_no_part_of_another():
    """Label ids are distinct objects: each id's strokes are the others' "not this", in the input and the answer."""
    image = _disc((300, 300), (150, 150), 80)  # one bright region under both objects: the oracle cannot split it
    labels = np.zeros(image.shape, np.uint8)
    labels[150, 90:110] = 1
    labels[150, 190:210] = 2
    background = np.zeros(image.shape, bool)
    background[100:110, 140:160] = True  # inside the bright region, painted as neither object
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image.astype(np.float32))

    out = refiner.predict_labels(labels, negative=background)
    assert (out[labels == 1] == 1).all() and (out[labels == 2] == 2).all()  # a tie used to go to id 1 everywhere
    assert not out[background].any()
    focus = oracle.batches[-1]  # pass 2: each object's window holds the bright region, the other's stroke in it
    assert len(focus) == 2 and all(w[NEG].any() for w in focus), "the network never saw the other object's stroke"
    assert refiner.predict(labels == 1)[labels == 2].all()  # asked alone, the bright region is all one object

    oracle.batches.clear()
    refiner.predict_labels(labels, rough=True)  # rough masks may overlap at their edges: no "not this" between them
    assert not any(b[:, NEG].any() for b in oracle.batches)


def test_objects_with_their_own_prompts_as_predict_asks_each_overlaps_to_the_surer():
    """``predict_objects``: each id from its own prompts, the same answer as ``predict`` gives it alone,
    and where two answers overlap the higher probability wins (ties to the lower id), as in predict_labels."""
    image = _disc((300, 300), (150, 150), 80) | _disc((300, 300), (282, 40), 14)
    refiner = Refiner(Oracle())
    refiner.set_image(image.astype(np.float32))
    left, right = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    left[150, 90:110] = right[150, 190:210] = True
    cut = np.zeros(image.shape, bool)
    cut[140:160, 140:160] = True  # object 2's own "not this"
    previous = _disc(image.shape, (150, 150), 60)
    prompts = {
        2: {"stroke": right, "negative": cut, "previous": previous},
        1: {"stroke": left},
        9: {"clicks": [(282, 40, 1)]},
    }
    out = refiner.predict_objects(prompts)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1, 2, 9}
    expected, best = np.zeros_like(out), np.zeros(out.shape, np.float32)
    for k in sorted(prompts):  # each asked alone; a pixel to the surer answer, ties to the lower id
        prob = refiner.predict_proba(**prompts[k])
        claim = (prob > 0.5) & (prob > best)
        expected[claim], best[claim] = k, prob[claim]
    np.testing.assert_array_equal(out, expected)
    assert all((out == k).sum() > 100 for k in prompts)  # the overlaps did not all go to id 1
    assert not (out[cut] == 2).any() and (out[cut] == 1).all()  # 2's "not this" is 2's alone

    assert not refiner.predict_objects({}).any()
    with pytest.raises(ValueError, match=r"object 3: unknown prompt\(s\) \['strokes'\]"):
        refiner.predict_objects({3: {"strokes": left}})
    with pytest.raises(ValueError, match=r"positive integers \(0 is background\), got \[0\]"):
        refiner.predict_objects({0: {"stroke": left}})
    with pytest.raises(ValueError, match="no image set"):
        Refiner(Oracle()).predict_objects({1: {"stroke": left}})


def test_predict_objects_costs_each_object_its_windows_not_a_full_frame():
    """Ten small objects on a 4096² image: the widget's old loop held a float32 frame per object (64 MB each)."""
    image = np.zeros((4096, 4096), np.uint8)
    prompts = {}
    for k in range(1, 11):
        image[300 * k : 300 * k + 40, 300 * k : 300 * k + 40] = 200
        stroke = np.zeros(image.shape, bool)
        stroke[300 * k + 20, 300 * k + 10 : 300 * k + 30] = True
        prompts[k] = {"stroke": stroke}
    refiner = Refiner(Oracle())
    refiner.set_image(image)
    refiner.predict_objects({1: prompts[1]})  # warm-up: lazy imports allocate once
    out, peak = _traced(lambda: refiner.predict_objects(prompts))
    for k in prompts:
        square = np.zeros(image.shape, bool)
        square[300 * k : 300 * k + 40, 300 * k : 300 * k + 40] = True
        assert _iou(out == k, square) > 0.9
    # the uint8 result is 16 MB and each object's "stroke" prompt is a caller's full frame (not counted here)
    assert peak < 40e6, f"peak traced memory {peak / 1e6:.0f} MB"


def test_predict_objects_asks_each_pass_of_every_object_in_one_batch():
    """Ten objects, each with its own prompts (a stroke, clicks, a box, an earlier answer, a prior): the
    plain ones share each pass's forward, the priors theirs, and the answers are those asked one by one."""
    image = np.zeros((400, 400), np.float32)
    prompts = {}
    for k in range(1, 11):
        y, x = 40 * (k - 1) + 20, 60 + 25 * (k % 4)
        image[y - 12 : y + 12, x - 15 : x + 15] = 1.0
        stroke = np.zeros(image.shape, bool)
        stroke[y, x - 5 : x + 5] = True
        earlier = np.zeros(image.shape, bool)
        earlier[y - 10 : y + 10, x - 12 : x + 12] = True
        kinds = [
            {"stroke": stroke},
            {"clicks": [(y, x, 1)]},
            {"box": (y - 14, x - 17, y + 14, x + 17)},
            {"stroke": stroke, "previous": earlier},
            {"prior": earlier, "stroke": stroke},
        ]
        prompts[k] = kinds[k % len(kinds)]
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image)
    together = refiner.predict_objects(prompts)
    batches = [len(b) for b in oracle.batches]
    assert max(batches) >= 8 and len(batches) <= 6, batches  # not 10 objects × 2 passes of one window each
    oracle.batches.clear()
    alone, best = np.zeros_like(together), np.zeros(image.shape, np.float32)
    for k in sorted(prompts):  # each asked alone; a pixel to the surer answer, ties to the lower id
        prob = refiner.predict_proba(**prompts[k])
        claim = (prob > 0.5) & (prob > best)
        alone[claim], best[claim] = k, prob[claim]
    assert len(oracle.batches) >= 2 * len(prompts) - 2  # one by one: a forward per object and pass
    np.testing.assert_array_equal(together, alone)


def test_training_and_inference_cut_identical_windows():
    """With the ground truth as the image, the oracle's masks are the ground truth's: same windows, same inputs."""
    gt = _disc((600, 640), (300, 330), 170)
    image = gt.astype(np.float32)
    stroke = np.zeros_like(gt)
    stroke[295:305, 320:340] = True
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image)
    refiner.predict(stroke)
    windows = context_windows(gt, stroke_bbox(stroke), SPEC.working_size)
    lo, hi = intensity_range(image[..., None])
    assert len(oracle.batches) == len(windows) + 1  # every pass-1 step, then the focus pass
    for batch, roi in zip(oracle.batches, windows, strict=False):
        expected = window_input(image[..., None], roi, SPEC, lo, hi, pos=stroke)
        np.testing.assert_allclose(batch[0].numpy(), expected, atol=1e-6)


def test_training_samples_use_the_engine_windows():
    gt = _disc((600, 640), (300, 330), 170)
    image = np.repeat(gt.astype(np.float32)[..., None], 3, axis=2)
    lo, hi = intensity_range(image)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        sample = make_sample(image, gt, SPEC, "human-scribble", rng, lo=lo, hi=hi, mix=PromptMix(0.5, 0.0))
        windows = context_windows(gt, stroke_bbox(sample.stroke), SPEC.working_size)
        assert sample.roi in windows
        assert sample.x.shape == (SPEC.in_channels, SPEC.working_size, SPEC.working_size)


def test_window_jitter_scales_pass_one_windows_about_their_centre_within_its_range():
    gt = _disc((600, 640), (300, 330), 170)
    image = np.repeat(gt.astype(np.float32)[..., None], 3, axis=2)
    lo, hi = intensity_range(image)
    ratios = []
    for seed in range(12):
        plain = make_sample(
            image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi, mix=PromptMix(0.5, 0.0)
        )
        mix = PromptMix(0.5, 0.0, window_jitter=1.0)
        sample = make_sample(image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi, mix=mix)
        assert np.array_equal(sample.stroke, plain.stroke)  # same prompts, only the window moves
        centre = lambda r: (r.y0 + r.size / 2, r.x0 + r.size / 2)  # noqa: E731
        assert np.allclose(centre(sample.roi), centre(plain.roi), atol=1.0)
        ratios.append(sample.roi.size / plain.roi.size)
        assert np.array_equal(sample.y, resize_mask(crop(gt, sample.roi), SPEC.working_size))
    assert 0.5 - 0.01 <= min(ratios) < 0.9 and 1.1 < max(ratios) <= 2.0 + 0.01


def test_rough_masks_are_trained_as_the_engine_takes_them_when_asked():
    """``rough_prior`` = 1: a coarse mask is the sample's prior and a core of it the stroke; 0: the stroke."""
    gt = _disc((300, 320), (150, 160), 70)
    image = np.repeat(gt.astype(np.float32)[..., None], 3, axis=2)
    lo, hi = intensity_range(image)
    for seed in range(4):
        plain = PromptMix(negative=0.0, focus=0.0)  # pass 1, no "not this": prev is only ever the rough mask
        as_stroke = make_sample(image, gt, SPEC, "coarse", np.random.default_rng(seed), lo=lo, hi=hi, mix=plain)
        mix = PromptMix(negative=0.0, focus=0.0, rough_prior=1.0)
        as_prior = make_sample(image, gt, SPEC, "coarse", np.random.default_rng(seed), lo=lo, hi=hi, mix=mix)
        assert as_stroke.prev is None and as_prior.prev is not None
        assert as_prior.stroke.any() and not (as_prior.stroke & ~as_prior.prev).any()
        assert as_prior.stroke.sum() < 0.9 * as_prior.prev.sum()
        assert 0.45 < _iou(as_prior.prev, gt) < 0.99  # a coarse mask, not the object
        scribble = make_sample(image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi, mix=mix)
        assert scribble.prev is None  # other protocols are untouched


def test_carried_samples_are_cut_as_propagation_hands_a_plane_over():
    """``carried`` = 1: a mask close to the truth as the prior, its core as the stroke, the prior's focus window."""
    gt = _disc((300, 320), (150, 160), 70)
    image = np.repeat(gt.astype(np.float32)[..., None], 3, axis=2)
    lo, hi = intensity_range(image)
    exact = 0
    for seed in range(30):
        mix = PromptMix(negative=1.0, focus=0.0, carried=1.0)
        sample = make_sample(image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi, mix=mix)
        assert sample.neg is None and sample.box is None  # propagation gives no "not this" and no box
        assert 0.8 < _iou(sample.prev, gt) <= 1.0
        exact += _iou(sample.prev, gt) == 1.0
        assert sample.stroke.any() and not (sample.stroke & ~sample.prev).any()
        assert sample.stroke.sum() < 0.9 * sample.prev.sum()
        assert sample.roi == focus_roi(stroke_bbox(sample.prev))
        assert np.array_equal(sample.y, resize_mask(crop(gt, sample.roi), SPEC.working_size))
        prev = sample.x[3 + SPEC.extras.index("prev")]
        assert prev.max() == 1.0 and sample.x[NEG].max() == 0.0
    assert 0 < exact < 15  # the truth itself sometimes (an object that stood still), mostly a changed mask
    for seed in range(3):  # 0 draws nothing: the default mix's samples are unchanged
        plain = make_sample(image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi)
        off = make_sample(
            image, gt, SPEC, "human-scribble", np.random.default_rng(seed), lo=lo, hi=hi, mix=PromptMix(carried=0.0)
        )
        assert np.array_equal(plain.x, off.x) and np.array_equal(plain.y, off.y)


# ---------------------------------------------------------------- boxes


def test_a_box_alone_is_a_prompt_and_reaches_its_channel():
    gt = _disc((300, 300), (150, 150), 60)
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(gt.astype(np.float32))
    mask = refiner.predict(box=(85, 85, 215, 215))
    assert _iou(mask, gt) > 0.95
    box_channel = 3 + SPEC.extras.index("box")
    assert all(b[:, box_channel].any() for b in oracle.batches)


@pytest.mark.parametrize(
    ("box", "message"),
    [((50, 50, 40, 60), "inverted"), ((50, 50, 50, 60), "empty"), ((400, 400, 500, 500), "outside"), ((1, 2, 3), "4")],
)
def test_bad_boxes_are_clear_value_errors(box, message):
    with pytest.raises(ValueError, match=message):
        check_box(box, (300, 300))


def test_boxes_are_clipped_to_the_image():
    assert check_box((-10, -5, 120, 400), (100, 300)) == (0, 0, 100, 300)


def test_a_model_without_a_box_channel_refuses_a_box():
    refiner = Refiner(build_model("tiny16-32"))
    refiner.set_image(np.zeros((50, 50), np.float32))
    with pytest.raises(ValueError, match="takes no box"):
        refiner.predict(box=(5, 5, 20, 20))


def test_earlier_answers_in_training_are_sometimes_far_off():
    """Correction and pass-2 samples must not teach "copy the previous mask": some earlier masks are coarse."""
    gt = _disc((200, 200), (100, 100), 50)
    ious = [_iou(earlier_mask(gt, np.random.default_rng(seed)), gt) for seed in range(16)]
    assert min(ious) < 0.8 and max(ious) > 0.8 and min(ious) >= 0.45


def test_a_one_pixel_pen_line_reaches_the_network_in_a_shrunk_window():
    """People draw 1-px lines; in a window shrunk 3x (a 300-px object) the pos channel must still hold the line."""
    image = np.zeros((900, 900, 3), np.uint8)
    image[250:650, 250:650] = 200
    line = np.zeros((900, 900), bool)
    line[450, 300:600] = True
    refiner = Refiner(Oracle())
    refiner.set_image(image)
    refiner.predict(line)
    pos = 3 + SPEC.extras.index("pos")
    first = refiner.model.batches[0]
    assert first.shape[-1] == SPEC.working_size
    assert int(first[0, pos].sum()) >= 0.9 * 300 * SPEC.working_size / start_context(stroke_bbox(line)).size


def test_channel_of_follows_build_input_layout():
    planes = {"pos": np.full((4, 4), 1.0), "neg": np.full((4, 4), 2.0), "prev": np.full((4, 4), 3.0)}
    x = build_input(np.zeros((4, 4, 3), np.float32), planes["pos"], SPEC.extras, neg=planes["neg"], prev=planes["prev"])
    for name, plane in planes.items():
        assert np.array_equal(x[channel_of(SPEC, name)], plane)
    with pytest.raises(ValueError, match="'grad' is not in"):
        channel_of(SPEC, "grad")


def test_a_huge_object_costs_memory_in_proportion_to_the_working_size():
    """A 2400-px bright square on a 4096² image: its windows (up to ~7000 px) are shrunk strip by strip.

    Cropping each window whole as float32 (and block-averaging it in float64) took ~1 GB here.
    """
    image = np.zeros((4096, 4096), np.uint8)
    image[800:3200, 800:3200] = 200
    stroke = np.zeros(image.shape, bool)
    stroke[1500:2500, 2000] = True  # a 1-px line, 1000 px long
    refiner = Refiner(Oracle())
    refiner.set_image(image[:256, :256])
    refiner.predict(stroke[:256, :256] | True)  # warm-up: lazy imports allocate once
    refiner.set_image(image)
    mask, peak = _traced(lambda: refiner.predict(stroke))
    assert _iou(mask, image > 0) > 0.98
    # the bool result is 16 MB, a strip of RGB floats 12 MB (the old whole-window crop: 310 MB)
    assert peak < 100e6, f"peak traced memory {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("roi", [ROI(-40, -30, 120), ROI(50, 20, 700)], ids=["grown", "shrunk"])
def test_a_grayscale_window_is_the_rgb_window_of_its_repeated_channel(roi):
    """Grayscale is widened to RGB after the window is shrunk (a third of the work): the input must not change."""
    gray = np.random.default_rng(3).integers(0, 4096, (600, 500, 1)).astype(np.uint16)
    rgb = np.repeat(gray, 3, axis=2)
    stroke = np.zeros(gray.shape[:2], bool)
    stroke[200:300, 240] = True
    lo, hi = intensity_range(gray)
    widened = window_input(gray, roi, SPEC, lo, hi, pos=stroke)
    direct = window_input(rgb, roi, SPEC, np.repeat(lo, 3), np.repeat(hi, 3), pos=stroke)
    assert widened.shape == direct.shape == (len(SPEC.extras) + 3, SPEC.working_size, SPEC.working_size)
    np.testing.assert_allclose(widened, direct, atol=1e-6)


def test_some_earlier_masks_are_the_object_moved():
    """Propagation hands the model its neighbour's mask moved by the motion: training must show it such priors."""
    gt = _disc((200, 200), (100, 100), 40)
    moved = 0
    for seed in range(40):
        earlier = perturb_mask(gt, np.random.default_rng(seed))
        same_area = earlier.sum() == gt.sum()
        moved += bool(same_area and not np.array_equal(earlier, gt))
    assert 4 <= moved <= 20


def test_a_prior_is_refined_in_pass_2_and_a_previous_answer_is_not():
    """``prior`` (a mask carried from the neighbouring plane) is pass 2's coarse mask; ``previous`` gives way."""
    image = np.zeros((128, 128), np.uint8)
    image[40:80, 40:80] = 200
    carried = np.zeros(image.shape, bool)
    carried[50:90, 50:90] = True  # the neighbour's mask, 10 px off
    seed = np.zeros(image.shape, bool)
    seed[55:65, 55:65] = True
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image)
    prev_at = channel_of(SPEC, "prev")

    def last_prev_channel_vs_object(**prompt) -> float:
        refiner.predict(seed, **prompt)
        x = oracle.batches[-1][0].numpy()
        return _iou(x[prev_at] > 0.5, x[0] > 0)

    assert last_prev_channel_vs_object(previous=carried) > 0.9  # pass 1's answer: the bright square
    assert last_prev_channel_vs_object(prior=carried) < 0.7  # the carried mask itself
    with pytest.raises(ValueError, match="not both"):
        refiner.predict(seed, previous=carried, prior=carried)
    stroke_model = Refiner(build_model("tiny16-32"))
    stroke_model.set_image(image)
    with pytest.raises(ValueError, match="takes no previous"):
        stroke_model.predict(seed, prior=carried)


def test_a_prior_is_refined_in_one_forward_on_its_own_box():
    """A prior says where the object is: no pass 1, one window, the prior's box plus the focus margin.

    Training cuts its pass-2 samples the same way (``samples.py``: ``focus_roi`` of the coarse mask's box).
    """
    image = np.zeros((200, 200), np.uint8)
    image[40:140, 30:120] = 200
    carried = np.zeros(image.shape, bool)
    carried[50:150, 40:130] = True
    seed = seed_from_mask(carried, ROUGH_EROSION)
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image)
    refiner.predict(seed, previous=carried)
    assert len(oracle.batches) >= 2  # an earlier answer under correction: pass 1, then pass 2
    oracle.batches.clear()
    refiner.predict(seed, prior=carried)
    assert len(oracle.batches) == 1
    roi = focus_roi(stroke_bbox(carried))
    prev = oracle.batches[0][0, channel_of(SPEC, "prev")].numpy() > 0.5
    np.testing.assert_array_equal(prev, resize_mask(crop(carried, roi), SPEC.working_size))


def test_a_rough_mask_alone_is_the_prior_and_its_core_the_stroke(monkeypatch):
    """``predict(prior=rough)``: the mask goes in as pass 2's prior, its eroded core as the stroke."""
    monkeypatch.setattr(engine, "ROUGH_ROUNDS", 1)  # one round, any reach: the rounds and the reach are tested below
    monkeypatch.setattr(engine, "ROUGH_REACH", 10.0)
    image = np.zeros((128, 128), np.uint8)
    image[40:80, 40:80] = 200
    rough = _disc(image.shape, (62, 62), 26)  # over-paints the square's corners' inside, misses its corners
    oracle = Oracle()
    refiner = Refiner(oracle)
    refiner.set_image(image)
    mask = refiner.predict(prior=rough)
    x = oracle.batches[-1][0].numpy()  # pass 2
    prev, pos = x[channel_of(SPEC, "prev")] > 0.5, x[channel_of(SPEC, "pos")] > 0.5
    assert _iou(prev, x[0] > 0) < 0.75  # the rough mask (IoU 0.72 with the square), not pass 1's answer
    assert 0 < pos.sum() < 0.9 * prev.sum() and not (pos & ~prev).any()  # the core, inside the mask
    assert _iou(mask, image > 0) > 0.95  # the oracle moves the rough edge to the square's
    np.testing.assert_array_equal(mask, refiner.predict(seed_from_mask(rough, ROUGH_EROSION), prior=rough))

    image = np.pad(image, ((0, 128), (0, 128)))
    image[200:226, 200:226] = 200  # a second object, with a rough mask of its own
    refiner.set_image(image)
    labels = np.zeros(image.shape, np.uint16)
    labels[:128, :128][rough] = 7
    labels[202:224, 198:222] = 3
    out = refiner.predict_labels(labels, rough=True)
    np.testing.assert_array_equal(out == 7, refiner.predict(prior=labels == 7))
    first, second = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    first[40:80, 40:80], second[200:226, 200:226] = True, True
    assert _iou(out == 7, first) > 0.95 and _iou(out == 3, second) > 0.95  # each its own object
    np.testing.assert_array_equal(out == 3, refiner.predict(prior=labels == 3))

    with pytest.raises(ValueError, match="rough mask"):
        refiner.predict()
    with pytest.raises(ValueError, match="empty"):
        refiner.predict(prior=np.zeros(image.shape, bool))
    stroke_model = Refiner(build_model("tiny16-32"))
    stroke_model.set_image(image)
    with pytest.raises(ValueError, match="takes no rough mask"):
        stroke_model.predict(prior=labels == 7)
    with pytest.raises(ValueError, match="takes no rough mask"):
        stroke_model.predict_labels(labels, rough=True)


def test_the_answer_to_a_rough_mask_stays_within_reach_of_it(monkeypatch):
    """A rough mask well inside a big bright square: the answer stops ROUGH_REACH × √area (city-block) out."""
    image = np.zeros((200, 200), np.uint8)
    image[20:180, 20:180] = 200
    rough = np.zeros(image.shape, bool)
    rough[90:110, 90:110] = True  # √area 20
    refiner = Refiner(Oracle())
    refiner.set_image(image)
    reach = round(engine.ROUGH_REACH * 20)
    assert reach >= 2
    near = ndi.distance_transform_cdt(~rough, metric="taxicab") <= reach
    np.testing.assert_array_equal(refiner.predict(prior=rough), near)
    labels = rough.astype(np.uint8) * 5
    np.testing.assert_array_equal(refiner.predict_labels(labels, rough=True), near * 5)
    monkeypatch.setattr(engine, "ROUGH_REACH", 10.0)
    assert refiner.predict(prior=rough).sum() > 2 * near.sum()  # the oracle alone fills its windows


def test_a_rough_mask_is_refined_again_from_its_first_answer(monkeypatch):
    """``ROUGH_ROUNDS`` 2: the first answer is the second round's rough mask, per object in a label image too."""
    image = np.zeros((256, 256), np.uint8)
    refiner = Refiner(Shrinker())
    refiner.set_image(image)
    labels = np.zeros(image.shape, np.uint8)
    labels[_disc(image.shape, (60, 60), 30)], labels[_disc(image.shape, (190, 180), 40)] = 4, 9
    monkeypatch.setattr(engine, "ROUGH_REACH", 10.0)  # the rounds alone
    monkeypatch.setattr(engine, "ROUGH_ROUNDS", 1)
    once = {k: refiner.predict(prior=labels == k) for k in (4, 9)}
    twice = {k: refiner.predict(prior=once[k]) for k in (4, 9)}
    monkeypatch.setattr(engine, "ROUGH_ROUNDS", 2)
    out = refiner.predict_labels(labels, rough=True)
    for k in (4, 9):
        assert twice[k].sum() < once[k].sum() < (labels == k).sum()  # each round shrinks it: it ran twice
        np.testing.assert_array_equal(refiner.predict(prior=labels == k), twice[k])
        np.testing.assert_array_equal(out == k, twice[k])
