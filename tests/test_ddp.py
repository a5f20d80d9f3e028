"""Multi-process training: two CPU ranks under torchrun (gloo) end with the same, trained weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_segmentello.checkpoint import load_checkpoint
from napari_segmentello.models import build_model

REPO = Path(__file__).resolve().parents[1]
from training.run import LAST, LOG, state_hash  # noqa: E402


def _torchrun(out: Path, config: str, *extra: str) -> list[str]:
    """Two CPU ranks of a tiny run of ``config``; returns each rank's weights hash."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "training.run", "--config", str(REPO / "training/configs" / config)]
    command += ["--max-images", "3", "--max-steps", "2", "--epochs", "1", "--batch-size", "2", "--workers", "0"]
    command += ["--set", "spec.working_size=64", "--write-rank-hash", "--device", "cpu", "--threads", "1", *extra]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    hashes = [(out / f"rank{rank}.sha256").read_text().strip() for rank in (0, 1)]
    assert hashes[0] == hashes[1]
    assert state_hash(load_checkpoint(out / LAST).state_dict) == hashes[0]  # rank 0 saved what it trained
    return hashes


@pytest.mark.data
@pytest.mark.slow
def test_two_ranks_train_the_object_family_with_its_pretrained_encoder(tmp_path, data_root):
    out = tmp_path / "ddp-lite0"
    _torchrun(
        out, "lite0-2026.toml", "--set", 'datasets=[{dataset = "coco-mini", split = "train"}]'
    )  # no teacher: the ImageNet read
    assert load_checkpoint(out / LAST).provenance["pretrained_encoder"]["sha256"]


@pytest.mark.data
@pytest.mark.slow
def test_two_ranks_train_the_shipped_recipe_distilled_from_its_teacher(tmp_path, data_root):
    out = tmp_path / "ddp-student"
    _torchrun(out, "default.toml", "--set", 'datasets=[{dataset = "coco-mini", split = "train"}]')
    provenance = load_checkpoint(out / LAST).provenance
    assert provenance["pretrained_encoder"]["teacher"] == "lite0-2026"
    assert (provenance["world_size"], provenance["config"]["model"]) == (2, "lite0-64")


@pytest.mark.data
@pytest.mark.slow
def test_two_ranks_agree_and_train(tmp_path, data_root):
    out = tmp_path / "ddp"
    hashes = _torchrun(out, "tiny16-32_bce-dice.toml")
    torch.manual_seed(0)  # the config's seed: every rank starts from these weights
    initial = build_model("tiny16-32", image_channels=1, extras=("pos", "grad"), working_size=64)
    assert state_hash(initial.state_dict()) != hashes[0]
    assert load_checkpoint(out / LAST).provenance["world_size"] == 2
    (entry,) = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    assert entry["samples"] == 2 * 2 * 2  # ranks x --max-steps x --batch-size, summed over ranks
