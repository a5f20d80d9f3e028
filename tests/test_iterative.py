"""RITM-style iterative rounds (training.iterative): a click on the model's real error, its answer as prev."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_segmentello.checkpoint import load_checkpoint
from napari_segmentello.models import get_spec

from training.config import load_config
from training.iterative import IterativeRounds, PromptChannels, add_corrective_clicks
from tests.test_object_training import train

SPEC = get_spec("lite0-128")
AT = PromptChannels.of(SPEC)
S = 64


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(2, 3 + len(SPEC.extras), S, S)
    y = torch.zeros(2, 1, S, S)
    y[:, :, 10:50, 10:50] = 1.0
    return x, y


def test_the_click_goes_on_the_largest_error_with_its_sign():
    x, y = _batch()
    pred = torch.zeros_like(y)
    pred[0, :, 10:50, 10:30] = 1.0  # sample 0 misses the right half: a positive click there
    pred[1] = y[1]
    pred[1, :, 0:8, 0:64] = 1.0  # sample 1 spills over the top band: a "not this" click there
    out = add_corrective_clicks(x, y, pred, torch.tensor([1.0, 1.0]), AT)
    assert torch.equal(out[:, AT.prev], pred[:, 0])
    pos0 = torch.nonzero(out[0, AT.pos])
    assert len(pos0) > 0 and (pos0[:, 1] >= 30).all() and out[0, AT.neg].sum() == 0
    neg1 = torch.nonzero(out[1, AT.neg])
    assert len(neg1) > 0 and (neg1[:, 0] < 10).all() and out[1, AT.pos].sum() == 0
    assert x[:, AT.pos :].sum() == 0  # the loader's batch is left alone


def test_click_size_follows_the_window_scale_and_no_error_means_no_click():
    x, y = _batch()
    miss = torch.zeros_like(y)
    big = add_corrective_clicks(x, y, miss, torch.tensor([1.0, 0.25]), AT)
    assert big[0, AT.pos].sum() > 4 * big[1, AT.pos].sum() > 0  # 4.5 px disc vs its one-pixel minimum
    same = add_corrective_clicks(x, y, y, torch.tensor([1.0, 1.0]), AT)
    assert same[:, AT.pos].sum() == 0 and same[:, AT.neg].sum() == 0


class Spill(nn.Module):
    """Always answers 'everything': every round must add a "not this" click, in eval mode, without gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(1)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        assert not torch.is_grad_enabled()
        return torch.ones_like(x[:, :1])


def test_rounds_run_in_eval_mode_and_restore_each_module_mode():
    net = Spill()
    net.train()
    net.norm.eval()  # a frozen part stays frozen after the rounds
    x, y = _batch()
    rounds = IterativeRounds(prob=1.0, max_rounds=3, channels=AT, rng=np.random.default_rng(0))
    out = rounds(net, x, y, torch.tensor([1.0, 1.0]))
    assert 1 <= len(net.modes) <= 3 and not any(net.modes)
    assert net.training and not net.norm.training
    assert out[:, AT.neg].sum() > 0 and torch.equal(out[:, AT.prev], torch.ones(2, S, S))
    never = IterativeRounds(prob=0.0, max_rounds=3, channels=AT, rng=np.random.default_rng(0))
    assert never(net, x, y, torch.tensor([1.0, 1.0])) is x


def test_models_without_the_prompt_channels_are_refused_at_load_time(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        PromptChannels.of(get_spec("tiny16-32"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "tiny16-32"\niterative_prob = 0.5\n')
    with pytest.raises(ValueError, match="iterative rounds need spec extras"):
        load_config(cfg)


@pytest.mark.data
@pytest.mark.slow
def test_a_run_with_iterative_rounds_trains(tmp_path):
    out = tmp_path / "ritm"
    assert train(out, "--epochs", "1", "--set", "iterative_prob=1.0", "--set", "composite_prob=0.5") == 0
    config = load_checkpoint(out / "last.pt").provenance["config"]
    assert config["iterative_prob"] == 1.0 and config["composite_prob"] == 0.5
