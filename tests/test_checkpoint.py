"""Checkpoint files: exact round trips, half precision, resume state, and refusal of bad or unsafe files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_segmentello import __version__
from napari_segmentello.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    HALF_PROB_ATOL,
    load_checkpoint,
    load_model_from_checkpoint,
    save_checkpoint,
)
from napari_segmentello.models import build_model


def _trained(name: str, steps: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """A model after a few Adam steps (so BatchNorm statistics and optimizer state are not defaults)."""
    torch.manual_seed(0)
    model = build_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, model.spec.in_channels, 32, 32)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(model(x), (x[:, :1] > 0).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), optimizer, x


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    return _trained("res16-32+cspn")


@pytest.fixture()
def saved(tmp_path: Path, trained) -> Path:
    return save_checkpoint(tmp_path / "model.pt", trained[0])


@pytest.mark.parametrize("name", ["res16-32+cspn", "attn32-256"])
def test_float32_round_trip_is_bit_exact(tmp_path, name):
    model, optimizer, x = _trained(name)
    path = save_checkpoint(
        tmp_path / "deep" / "dir" / "model.pt",
        model,
        provenance={"training_data": "coco-mini train", "config": {"lr": 1e-2, "epochs": 3}},
        metrics={"val_iou": np.float64(0.75), "n_val": np.int64(120)},
        extra={"optimizer": optimizer.state_dict(), "epoch": 3},
    )
    assert path == tmp_path / "deep" / "dir" / "model.pt" and path.is_file()
    loaded = load_model_from_checkpoint(path)
    assert not loaded.training and loaded.spec == model.spec
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys()
    for key in reference:
        assert reference[key].dtype == restored[key].dtype and torch.equal(reference[key], restored[key]), key
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))

    ckpt = loaded.checkpoint
    assert ckpt.path == path and ckpt.format_version == FORMAT_VERSION
    assert ckpt.metrics == {"val_iou": 0.75, "n_val": 120} and type(ckpt.metrics["n_val"]) is int
    prov = ckpt.provenance
    assert prov["training_data"] == "coco-mini train" and prov["config"] == {"lr": 1e-2, "epochs": 3}
    assert prov["package_version"] == __version__ and prov["torch_version"] == torch.__version__
    assert prov["created_utc"].endswith("+00:00")
    assert ckpt.extra["epoch"] == 3


def test_optimizer_state_resumes(saved, trained, tmp_path):
    """Training keeps optimizer state in `extra`; a resumed optimizer continues exactly."""
    model, optimizer, x = trained
    path = save_checkpoint(tmp_path / "resume.pt", model, extra={"optimizer": optimizer.state_dict(), "epoch": 7})
    ckpt = load_checkpoint(path)
    resumed = build_model(ckpt.spec)
    resumed.load_state_dict(ckpt.state_dict)
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    resumed_opt.load_state_dict(ckpt.extra["optimizer"])
    original = optimizer.state_dict()["state"]
    for key, state in resumed_opt.state_dict()["state"].items():
        assert torch.equal(state["exp_avg_sq"], original[key]["exp_avg_sq"])
        assert torch.equal(state["step"], original[key]["step"])


def test_half_halves_the_file_within_the_documented_tolerance(tmp_path, trained, saved):
    model, _, x = trained
    half = save_checkpoint(tmp_path / "half.pt", model, half=True)
    assert half.stat().st_size < 0.6 * saved.stat().st_size
    loaded = load_model_from_checkpoint(half)
    ckpt = loaded.checkpoint
    assert all(v.dtype == torch.float32 for v in ckpt.state_dict.values() if v.is_floating_point())
    batches = "encoder.0.body.1.num_batches_tracked"
    assert torch.equal(ckpt.state_dict[batches], model.state_dict()[batches])
    with torch.no_grad():
        reference, approx = model(x), loaded(x)
    assert not torch.equal(reference, approx)  # the weights really were rounded
    assert torch.allclose(reference.sigmoid(), approx.sigmoid(), atol=HALF_PROB_ATOL, rtol=0)


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    payload = torch.load(src, weights_only=True)
    payload.update(changes)
    torch.save(payload, dst)
    return dst


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p, good: _write(p, good[: len(good) // 2]), id="truncated-half"),
        pytest.param(lambda p, good: _write(p, good[:100]), id="truncated-header"),
        pytest.param(lambda p, good: _write(p, b""), id="empty"),
        pytest.param(lambda p, good: _write(p, np.random.default_rng(0).bytes(4096)), id="random-bytes"),
        pytest.param(lambda p, good: _write(p, b"model weights\n"), id="text"),
    ],
)
def test_corrupt_files_are_a_valueerror_naming_the_file(tmp_path, saved, make):
    path = make(tmp_path / "broken.pt", saved.read_bytes())
    with pytest.raises(ValueError, match="not a readable napari-segmentello checkpoint") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("payload", [{"state_dict": {"w": torch.zeros(2)}}, torch.zeros(3), [1, 2]])
def test_foreign_torch_files_are_refused(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not a napari-segmentello checkpoint") as err:
        load_model_from_checkpoint(path)
    assert str(path) in str(err.value)


class _Payload:
    """Pickles as a call to ``open(marker, "w")``: unpickling it would run code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_is_refused_and_never_runs(tmp_path, saved):
    marker = tmp_path / "code-ran"
    path = _rewrite(saved, tmp_path / "unsafe.pt", extra={"hook": _Payload(marker)})
    with pytest.raises(ValueError, match="refused so that no code") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_newer_format_version_is_refused(tmp_path, saved):
    path = _rewrite(saved, tmp_path / "future.pt", format_version=FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="newer") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_state_dict_that_does_not_match_the_spec_is_refused(tmp_path, saved):
    other = build_model("res16-32")  # same family and widths, but no CSPN head
    path = _rewrite(saved, tmp_path / "mismatch.pt", state_dict=other.state_dict())
    with pytest.raises(ValueError, match="does not match its spec") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "missing cspn.affinity.weight" in str(err.value)
    wider = build_model("res16-32+cspn", image_channels=1).state_dict()
    path = _rewrite(saved, tmp_path / "shape.pt", state_dict=wider)
    with pytest.raises(ValueError, match=r"encoder.0.body.0.weight: shape \(16, 2, 3, 3\)"):
        load_checkpoint(path)


def test_invalid_spec_in_file_is_refused(tmp_path, saved):
    path = _rewrite(saved, tmp_path / "spec.pt", spec={"family": "vit", "base": 16, "top": 32})
    with pytest.raises(ValueError, match="invalid model spec.*unknown model family") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(path)


def test_save_is_atomic(tmp_path, trained, saved, monkeypatch):
    """A crash half-way through writing leaves the previous checkpoint intact and no temp file."""
    model, _, x = trained
    before = saved.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr("napari_segmentello.checkpoint.torch.save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, build_model("tiny16-32"))
    assert saved.read_bytes() == before
    assert sorted(os.listdir(saved.parent)) == [saved.name]
    with torch.no_grad():
        assert torch.equal(load_model_from_checkpoint(saved)(x), model(x))


def test_unstorable_values_are_refused_before_writing(tmp_path, trained):
    path = tmp_path / "never.pt"
    with pytest.raises(ValueError, match=r"metrics\['curve'\] holds a ndarray"):
        save_checkpoint(path, trained[0], metrics={"curve": np.zeros(3)})
    with pytest.raises(ValueError, match=r"provenance\['config'\]\['loss'\] holds a function"):
        save_checkpoint(path, trained[0], provenance={"config": {"loss": F.mse_loss}})
    assert not path.exists() and os.listdir(tmp_path) == []


def test_paths_and_numpy_values_are_stored_as_plain_data(tmp_path, trained):
    path = save_checkpoint(
        tmp_path / "plain.pt",
        trained[0],
        provenance={"data_root": Path("/data/coco"), "flags": (np.bool_(True), np.float32(0.5))},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT
    assert raw["provenance"]["data_root"] == "/data/coco"
    assert raw["provenance"]["flags"] == (True, 0.5) and type(raw["provenance"]["flags"][0]) is bool


def test_model_without_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="spec"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
