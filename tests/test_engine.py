"""Inference engine: every dtype/layout, the shared window recipe, labels, bad input, devices, caching.

Random-init weights give arbitrary masks, so these tests check shapes, dtypes and
behaviour; stand-in modules (echo the stroke, record the input) check the
geometry exactly without depending on model quality.
"""

from __future__ import annotations

import shutil
import tracemalloc

import dask.array as da
import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from torch import nn

from napari_segmentello import engine, loader
from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.engine import Refiner, refine, refine_labels, resolve_device
from napari_segmentello.loader import list_models, load_model
from napari_segmentello.inputs import intensity_range, prepare_window
from napari_segmentello.models import build_model, get_spec

H, W = 96, 120


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_model("tiny16-32"))


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """An empty bundled-weights folder, so tests never see weights trained later."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(loader, "WEIGHTS_DIR", folder)
    return folder


class Echo(nn.Module):
    """Returns the ``pos`` channel as logits (±1): the refined mask must be (about) the stroke.

    Not 0 off the stroke: a probability of exactly 0.5 would sit on the threshold, where a
    resize's float rounding (0.5000001) decides.
    """

    def __init__(self, spec=None):
        super().__init__()
        self.spec = spec or get_spec("tiny16-32")

    def forward(self, x):
        i = self.spec.image_channels + self.spec.extras.index("pos")
        return x[:, i : i + 1] * 2 - 1


class Recorder(Echo):
    """Echo that keeps every batch it was given."""

    def __init__(self, spec=None):
        super().__init__(spec)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.cpu().clone())
        return super().forward(x)


class _WrongShape(Echo):
    def forward(self, x):
        return x[:, :2]


def bar(rows=slice(40, 50), cols=slice(30, 80), shape=(H, W)) -> np.ndarray:
    stroke = np.zeros(shape, bool)
    stroke[rows, cols] = True
    return stroke


def assert_is_the_stroke(mask: np.ndarray, stroke: np.ndarray) -> None:
    """The stroke, give or take a rim of two pixels (resizing to the working size and back blurs edges)."""
    assert mask[stroke].all()
    assert not (mask & ~binary_dilation(stroke, np.ones((5, 5), bool))).any()


def _float_with_nonfinite(rng):
    img = rng.normal(100, 20, (H, W)).astype(np.float32)
    img[0, :10] = np.nan  # outside the stroke's window: only the intensity range sees it
    img[44, 30:40], img[45, 30:40], img[46, 30:40] = np.nan, np.inf, -np.inf  # inside the window
    return img


IMAGES = {
    "uint8-gray": lambda rng: rng.integers(0, 256, (H, W), dtype=np.uint8),
    "uint16-gray": lambda rng: rng.integers(0, 65536, (H, W), dtype=np.uint16),
    "float32-nan-inf": _float_with_nonfinite,
    "rgb-uint8": lambda rng: rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "rgba-uint8": lambda rng: rng.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "2-channel-float64": lambda rng: rng.random((H, W, 2)),
    "5-channel-int32": lambda rng: rng.integers(-1000, 1000, (H, W, 5), dtype=np.int32),
    "bool": lambda rng: rng.random((H, W)) > 0.5,
}


@pytest.mark.parametrize("kind", list(IMAGES))
def test_every_dtype_and_layout_gives_a_bool_mask_and_finite_inputs(kind, checkpoint):
    image = IMAGES[kind](np.random.default_rng(0))
    stroke = bar().astype(np.uint8) * 5
    image_before, stroke_before = image.copy(), stroke.copy()
    image.flags.writeable = stroke.flags.writeable = False

    mask = refine(image, stroke, model=checkpoint, device="cpu")
    assert mask.shape == (H, W) and mask.dtype == bool

    recorder = Recorder()
    refine(image, stroke, model=recorder)
    (x,) = recorder.inputs
    assert x.shape == (1, 4, 128, 128) and torch.isfinite(x).all()
    assert x[:, :3].min() >= -0.5 and x[:, :3].max() <= 0.5
    assert x[:, :3].std() > 0.01  # the image made it through the normalisation
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(stroke, stroke_before)


def test_grayscale_recipe_model_takes_an_rgb_image():
    spec = get_spec("tiny16-32", image_channels=1, extras=("pos", "grad"))
    recorder = Recorder(spec)
    image = IMAGES["rgb-uint8"](np.random.default_rng(1))
    assert refine(image, bar(), model=recorder).shape == (H, W)
    assert recorder.inputs[0].shape == (1, 3, 128, 128)
    mask = refine(image, bar(), model=build_model(spec), device="cpu")
    assert mask.shape == (H, W) and mask.dtype == bool


@pytest.mark.parametrize("where", ["centre", "corner"])
def test_window_is_the_full_frame_prepare_window(where):
    """The engine cuts only the window, yet feeds exactly what training's prepare_window builds."""
    image = IMAGES["rgba-uint8"](np.random.default_rng(2))
    stroke = bar() if where == "centre" else bar(slice(0, 12), slice(100, 120))
    recorder = Recorder()
    refiner = Refiner(recorder)
    refiner.set_image(image)
    refiner.predict(stroke)
    expected, _ = prepare_window(image, stroke, recorder.spec, *intensity_range(image))
    np.testing.assert_allclose(recorder.inputs[0][0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("where", ["centre", "corner"])
def test_echo_model_returns_the_stroke(where):
    """The round trip frame -> working size -> frame keeps the stroke, up to a thin rim."""
    stroke = bar() if where == "centre" else bar(slice(0, 12), slice(100, 120))
    image = IMAGES["uint8-gray"](np.random.default_rng(3))
    assert_is_the_stroke(refine(image, stroke, model=Echo()), stroke)
    refiner = Refiner(Echo())
    refiner.set_image(image)
    proba = refiner.predict_proba(stroke)
    assert proba.dtype == np.float32 and proba.shape == (H, W)
    assert proba[stroke].min() > 0.5 and proba.max() < 0.75
    if where == "corner":
        assert proba[-1, 0] == 0.0  # outside the stroke's window nothing is predicted


def test_refine_labels_two_ids_keep_their_ids_and_dtype(checkpoint):
    labels = np.zeros((H, W), np.uint16)
    labels[10:16, 10:40] = 3
    labels[70:80, 60:110] = 7
    before = labels.copy()
    labels.flags.writeable = False
    image = IMAGES["rgb-uint8"](np.random.default_rng(4))

    out = refine_labels(image, labels, model=Echo())
    assert out.dtype == np.uint16 and out.shape == (H, W)
    assert set(np.unique(out)) == {0, 3, 7}
    assert_is_the_stroke(out == 3, labels == 3)
    assert_is_the_stroke(out == 7, labels == 7)
    np.testing.assert_array_equal(labels, before)

    out = refine_labels(image, labels.astype(np.int32), model=checkpoint, device="cpu")
    assert out.dtype == np.int32 and set(np.unique(out)) <= {0, 3, 7}


@pytest.mark.parametrize("ids", [(1, 2), (2, 1)])
def test_overlaps_go_to_the_highest_probability_then_the_lower_id(ids):
    a, b = ids
    labels = np.zeros((H, W), np.uint8)
    labels[40:45, 20:60] = a
    labels[50:55, 30:70] = b
    image = IMAGES["uint8-gray"](np.random.default_rng(5))
    refiner = Refiner(Echo(), threshold=0.25)  # each object claims its whole window: they overlap
    refiner.set_image(image)
    out = refiner.predict_labels(labels)

    probs = np.stack([refiner.predict_proba(labels == i) for i in (1, 2)])
    expected = np.where(probs.max(0) > 0.25, probs.argmax(0) + 1, 0)  # argmax: ties to the first (lower) id
    np.testing.assert_array_equal(out, expected)
    both = (probs > 0.25).all(0)
    assert (both & (probs[0] == probs[1])).sum() > 100  # real ties were resolved
    assert (out[labels == 2] == 2).mean() > 0.9  # the higher id keeps its stroke where it is more probable
    assert (out[40:45, 20:60] == a).all() and (out[50:55, 30:70] == b).all()


def test_refiner_reuses_preprocessing_and_matches_refine(checkpoint, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "intensity_range", lambda img: calls.append(1) or intensity_range(img))
    image = IMAGES["uint16-gray"](np.random.default_rng(6))
    refiner = Refiner(checkpoint, device="cpu")
    refiner.set_image(image)
    first, second = refiner.predict(bar()), refiner.predict(bar())
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, refine(image, bar(), model=checkpoint, device="cpu"))
    clicks = np.column_stack([np.argwhere(bar()), np.ones(int(bar().sum()))])
    np.testing.assert_array_equal(refiner.predict(clicks=clicks), refine(image, clicks=clicks, model=checkpoint))


def test_negative_and_previous_prompts_reach_their_channels():
    recorder = Recorder(get_spec("tiny16-32", extras=("pos", "neg", "prev")))
    refiner = Refiner(recorder)
    refiner.set_image(IMAGES["rgb-uint8"](np.random.default_rng(7)))
    refiner.predict(bar(), negative=bar(slice(52, 56), slice(40, 60)), previous=bar(slice(38, 52), slice(28, 82)))
    x = recorder.inputs[0][0]
    assert x[3].sum() > 0 and x[4].sum() > 0 and x[5].sum() > x[3].sum()
    assert (x[3] * x[4]).sum() == 0  # the negative stroke is where the positive one is not
    with pytest.raises(ValueError, match="negative of shape"):
        refiner.predict(bar(), negative=np.zeros((H, W + 1), bool))
    plain = Refiner(Echo())
    plain.set_image(np.zeros((H, W)))
    with pytest.raises(ValueError, match="takes no previous mask"):
        plain.predict(bar(), previous=bar())


def test_a_lent_training_module_keeps_its_mode():
    model = build_model("tiny16-32").train()
    refine(IMAGES["uint8-gray"](np.random.default_rng(8)), bar(), model=model, device="cpu")
    assert model.training and all(m.training for m in model.modules())


BAD_INPUTS = {
    "empty stroke": (np.zeros((H, W)), np.zeros((H, W), bool), "empty"),
    "stroke shape mismatch": (np.zeros((H, W)), bar(shape=(H, W + 1)), "do not line up"),
    "3D stroke with 2D image": (np.zeros((H, W)), np.zeros((2, H, W), bool), "must be 2D"),
    "channels-first image": (np.zeros((3, H, W)), bar(), r"channels\s+last"),
    "4D image": (np.zeros((2, H, W, 3)), bar(), "must be 2D"),
    "text image": (np.full((H, W), "a"), bar(), "numbers"),
    "all-NaN image": (np.full((H, W), np.nan), bar(), "no finite pixel values"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_value_error(case):
    image, stroke, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        refine(image, stroke, model=Echo())


@pytest.mark.parametrize("clicks", [[(H + 50, 5, 1)], [(H // 2, W // 2, 0)], [(-3, 4, 1), (H // 2, W // 2, 0)]])
def test_clicks_that_name_no_object_are_a_clear_value_error(clicks):
    """A click off the image, or "not this" clicks alone: the error says so, not "give a stroke"."""
    image, model = np.zeros((H, W)), Echo(get_spec("tiny16-32", extras=("pos", "neg")))
    with pytest.raises(ValueError, match=rf"no positive click inside the image \({H}×{W} px\)"):
        refine(image, clicks=clicks, model=model)
    assert refine(image, bar(), clicks=clicks, model=model).any()  # with a stroke they are fine


@pytest.mark.parametrize("clicks", ["abc", [(1, 2, 1), (3, 4)], [("a", 2, 1)]])
def test_clicks_that_are_not_numbers_say_what_clicks_are(clicks):
    model = Echo(get_spec("tiny16-32", extras=("pos", "neg")))
    with pytest.raises(ValueError, match=r"clicks must be \(row, col, positive\) numbers"):
        refine(np.zeros((H, W)), clicks=clicks, model=model)


def test_bad_arguments_are_value_errors():
    image = np.zeros((H, W))
    with pytest.raises(ValueError, match="threshold"):
        refine(image, bar(), model=Echo(), threshold=1.5)
    for not_a_number in ("a", None, float("nan")):
        with pytest.raises(ValueError, match="threshold must be"):
            refine(image, bar(), model=Echo(), threshold=not_a_number)
    with pytest.raises(ValueError, match="integer or boolean"):
        refine_labels(image, bar().astype(np.float32), model=Echo())
    with pytest.raises(ValueError, match="set_image"):
        Refiner(Echo()).predict(bar())
    with pytest.raises(ValueError, match=r"\.spec"):
        refine(image, bar(), model=nn.Identity())
    with pytest.raises(ValueError, match="logits of shape"):
        refine(image, bar(), model=_WrongShape())


def test_unknown_model_lists_bundled_names_and_says_how_to_pass_a_path(weights_dir, checkpoint):
    shutil.copy(checkpoint, weights_dir / "mine.pt")
    with pytest.raises(KeyError) as info:
        refine(np.zeros((H, W)), bar(), model="nope")
    message = info.value.args[0]
    assert "nope" in message and "'mine'" in message and "checkpoint" in message


def test_missing_default_weights_say_how_to_get_them(weights_dir):
    with pytest.raises(ValueError, match=r"no bundled weights 'default'.*python -m training.run.*checkpoint path"):
        refine(np.zeros((H, W)), bar())


def test_unreadable_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt"):
        refine(np.zeros((H, W)), bar(), model=bad)


def test_bundled_models_are_listed_default_first_and_cached(weights_dir, checkpoint):
    for name in ("zeta", "default", "alpha"):
        shutil.copy(checkpoint, weights_dir / f"{name}.pt")
    assert list_models() == ["default", "alpha", "zeta"]
    model = load_model("alpha", device="cpu")
    assert not model.training
    assert load_model("alpha", "cpu") is model
    assert load_model("alpha") is load_model("alpha", str(resolve_device("auto")))
    assert load_model(weights_dir / "alpha.pt", "cpu") is model
    assert load_model("zeta", "cpu") is not model
    assert load_model(checkpoint, "cpu") is load_model(str(checkpoint), "cpu")


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_dask_image_gives_the_numpy_result(checkpoint):
    image = IMAGES["rgb-uint8"](np.random.default_rng(9))
    lazy = da.from_array(image, chunks=(32, 32, 3))
    expected = refine(image, bar(), model=checkpoint, device="cpu")
    np.testing.assert_array_equal(refine(lazy, bar(), model=checkpoint, device="cpu"), expected)
    gray = image[..., 0]
    np.testing.assert_array_equal(
        refine(da.from_array(gray, chunks=32), bar(), model=checkpoint, device="cpu"),
        refine(gray, bar(), model=checkpoint, device="cpu"),
    )


class _Lazy:
    """A 2D array-like that records which parts were read."""

    def __init__(self, shape):
        self.shape, self.ndim, self.dtype = shape, 2, np.dtype(np.uint16)
        self.reads: list[tuple[slice, slice]] = []

    def __getitem__(self, key):
        self.reads.append(key)
        rows, cols = (range(self.shape[i])[k] for i, k in enumerate(key))
        return np.ones((len(rows), len(cols)), self.dtype)


def test_a_lazy_image_is_read_only_around_the_stroke():
    image = _Lazy((6000, 7000))
    stroke = bar(slice(3000, 3010), slice(4000, 4100), shape=image.shape)
    refine(image, stroke, model=Echo())
    dense = [k for k in image.reads if all(s.step in (None, 1) for s in k)]
    strided = [k for k in image.reads if k not in dense]
    assert len(dense) == 1 and len(strided) == 1
    rows, cols = dense[0]
    assert (rows.stop - rows.start) * (cols.stop - cols.start) < 200**2


def test_memory_follows_the_object_not_the_image():
    """An 8000×8000 RGB image (a zero-memory broadcast view) never becomes a float copy."""
    image = np.broadcast_to(np.arange(8000, dtype=np.uint8)[:, None, None], (8000, 8000, 3))
    stroke = bar(slice(4000, 4010), slice(4000, 4200), shape=(8000, 8000))
    model = Echo()
    refine(image[:64, :64], stroke[:64, :64] | True, model=model)  # warm-up: lazy imports allocate once
    tracemalloc.start()
    try:
        mask = refine(image, stroke, model=model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mask[4005, 4100]
    # the bool result is 64 MB and the intensity sample ~50 MB; one float32 channel alone would be 256 MB
    assert peak < 150e6, f"peak traced memory {peak / 1e6:.0f} MB"
