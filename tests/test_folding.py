"""Batch norms folded into convolutions for inference: same outputs, no batch norm left, the original untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_segmentello._sample_data import load_sample
from napari_segmentello.engine import Refiner
from napari_segmentello.loader import load_model
from napari_segmentello.models import build_model
from napari_segmentello.models.folding import folded_for_inference


def _with_learned_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and affines, so folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", ["lite0-128", "res16-32", "tiny16-32", "attn32-256"])
def test_folded_copy_gives_the_same_logits_without_batch_norms(name):
    model = _with_learned_statistics(build_model(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, model.spec.in_channels, 64, 64)
    folded = folded_for_inference(model)
    with torch.inference_mode():
        expected, got = model(x), folded(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.spec == model.spec
    # the source module keeps its batch norms and weights
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_training_module_is_folded_with_its_running_statistics_and_keeps_its_mode():
    model = _with_learned_statistics(build_model("tiny16-32")).train()
    folded = folded_for_inference(model)
    assert model.training and not folded.training
    x = torch.randn(1, model.spec.in_channels, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(folded(x), model.eval()(x), atol=1e-4)


def test_the_bundled_default_predicts_the_same_masks_through_its_folded_copy():
    image, strokes, _ = load_sample()
    fast, plain = Refiner("default", device="cpu"), Refiner(load_model("default", "cpu"), device="cpu")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast._net.modules())  # a name runs folded
    assert plain._net is plain.model  # a module passed in runs as it is
    fast.set_image(image)
    plain.set_image(image)
    for value in np.unique(strokes)[1:]:
        a = fast.predict_proba(strokes == value)
        b = plain.predict_proba(strokes == value)
        assert np.abs(a - b).max() < 1e-3
        assert (a > 0.5).sum() > 0
