"""Training the object-aware family: ImageNet start, frozen vs finetuned encoder, resume, the shipped config.

Tiny real runs (3 coco-mini train images, 2 batches of 2, 64-px windows) through
``training.run.main`` as the command line calls it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from napari_segmentello.checkpoint import load_checkpoint
from napari_segmentello.inputs import channel_of
from napari_segmentello.loader import load_model
from napari_segmentello.losses import distill_loss, prompt_loss
from napari_segmentello.models.efficientnet import pretrained_file

from training import run  # noqa: E402
from training.config import load_config  # noqa: E402

CONFIG = Path(run.__file__).parent / "configs" / "default.toml"
FAST = ["--config", str(CONFIG), "--max-images", "3", "--max-steps", "2", "--batch-size", "2", "--workers", "0"]
FAST += ["--device", "cpu", "--threads", "1", "--set", "spec.working_size=64"]
FAST += ["--set", 'datasets=[{dataset = "coco-mini", split = "train"}]']


def train(out: Path, *argv: str) -> int:
    threads = torch.get_num_threads()
    try:
        return run.main([*FAST, "--out", str(out), *argv])
    finally:
        torch.set_num_threads(threads)


def _encoder(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path).state_dict
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def _moved(encoder: dict[str, torch.Tensor]) -> list[str]:
    imagenet = torch.load(pretrained_file(), map_location="cpu", weights_only=True)
    return [k for k, v in encoder.items() if k.endswith("weight") and not torch.equal(v, imagenet[k].float())]


def test_the_shipped_config_trains_the_object_family_on_every_instance_set():
    cfg = load_config(CONFIG)
    assert cfg.model.startswith("lite0") and cfg.pretrained and cfg.teacher == "lite0-2026"
    assert {d["dataset"] for d in cfg.datasets} == {
        "coco-mini",
        "coco-mval",
        "dsb2018-nuclei",
        "nuclei-histology",
        "em-isbi2012",
    }
    assert all(d.get("split", "train") == "train" for d in cfg.datasets)


@pytest.mark.data
@pytest.mark.slow
def test_frozen_encoder_stays_imagenet_and_finetuned_one_moves(tmp_path):
    imagenet = ["--set", "teacher=none"]  # a teacher would hand the student its own encoder
    assert train(tmp_path / "frozen", "--epochs", "1", "--set", "encoder_lr_scale=0", *imagenet) == 0
    assert not _moved(_encoder(tmp_path / "frozen" / run.LAST))
    assert train(tmp_path / "tuned", "--epochs", "1", *imagenet) == 0
    assert _moved(_encoder(tmp_path / "tuned" / run.LAST))
    provenance = load_checkpoint(tmp_path / "tuned" / run.LAST).provenance
    assert provenance["pretrained_encoder"]["file"] == pretrained_file().name


@pytest.mark.data
@pytest.mark.slow
def test_resume_continues_an_object_model_run(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "1") == 0
    shutil.copytree(out, tmp_path / "first")
    assert train(out, "--resume", "--epochs", "2", "--set", "schedule=cosine") == 0
    assert load_checkpoint(out / run.LAST).extra["epoch"] == 2
    assert run.state_hash(load_checkpoint(out / run.LAST).state_dict) != run.state_hash(
        load_checkpoint(tmp_path / "first" / run.LAST).state_dict
    )


SMALL = ["max_images=3", "batch_size=4", "spec.working_size=64", 'datasets=[{dataset = "coco-mini", split = "train"}]']
SMALL += ["teacher=none"]


def _with_and_without(tmp_path: Path, sets: list[str], extra: list[str]):
    """Two trainers on the same data and weights, the second with ``extra`` settings: (plain, other, batch, losses)."""
    plain = run.Trainer(load_config(CONFIG, sets=[*SMALL, *sets]), tmp_path / "a", run.setup_distributed("cpu"))
    other = run.Trainer(load_config(CONFIG, sets=[*SMALL, *sets, *extra]), tmp_path / "b", plain.dist)
    batch = next(iter(plain.val_loader))
    plain.net.load_state_dict(other.net.state_dict())
    plain.net.eval(), other.net.eval()
    with torch.no_grad():
        losses = plain._loss(batch)[0].item(), other._loss(batch)[0].item()
    return plain, other, batch, losses


@pytest.mark.data
def test_prompt_weight_adds_the_prompt_loss_to_the_training_loss(tmp_path):
    plain, _, batch, (base, total) = _with_and_without(tmp_path, [], ["prompt_weight=0.5"])
    x = batch["x"]
    with torch.no_grad():
        pos, neg = x[:, channel_of(plain.spec, "pos")], x[:, channel_of(plain.spec, "neg")]
        extra = prompt_loss(plain.net(x), batch["y"], pos, neg).item()
    assert extra > 0
    assert total == pytest.approx(base + 0.5 * extra, rel=1e-4)


@pytest.mark.data
def test_a_student_starts_from_its_teachers_encoder_and_learns_its_answers(tmp_path):
    extra_sets = ["teacher=lite0-2026", "teacher_weight=0.5"]
    plain, student, batch, (base, total) = _with_and_without(tmp_path, ["model=lite0-64"], extra_sets)
    teacher = load_model("lite0-2026", "cpu")
    mine, theirs = student.net.state_dict(), teacher.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k.startswith(("encoder.", "fusion.")))
    shared = len(mine) - sum("decoder" in k for k in mine)
    assert student.pretrained == {"teacher": "lite0-2026", "tensors": shared, "of": len(mine)}
    x = batch["x"].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        extra = distill_loss(plain.net(x), teacher(x)).item()
    assert extra > 0
    assert total == pytest.approx(base + 0.5 * extra, rel=1e-4)
