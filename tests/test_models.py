"""Model registry, specs and the U-Net/CSPN networks: shapes, gradients, structure, validation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from napari_segmentello.models import ModelSpec, available_models, build_model, get_spec
from napari_segmentello.models.cspn import normalise_affinity, propagate
from napari_segmentello.models.unet import AttentionGate, ResBlock

NAMES = ["tiny16-32", "res16-32", "tiny16-128", "res16-128", "res32-256", "attn32-256"]
OBJECT_NAMES = ["lite0-128", "lite0-256", "lite0-64"]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_available_models_are_the_study_names_the_object_family_and_the_study_cspn_variants():
    assert available_models() == NAMES + OBJECT_NAMES + [n + "+cspn" for n in NAMES]


@pytest.mark.parametrize(
    ("name", "channels"),
    [pytest.param(n, (1, 2, 3, 4), id=n) for n in NAMES]
    + [pytest.param(n + "+cspn", (1, 3), id=n + "+cspn") for n in NAMES],
)
def test_forward_backward_any_size_and_image_channels(name, channels):
    """Every parameter gets a gradient; the +cspn heads share the trunk, so two channel counts suffice."""
    torch.manual_seed(0)
    for k in channels:
        model = build_model(name, image_channels=k)
        assert model.spec.image_channels == k and model.spec.cspn == name.endswith("+cspn")
        x = torch.randn(2, k + 1, 37, 53, requires_grad=True)
        logits = model(x)
        assert logits.shape == (2, 1, 37, 53)
        assert torch.isfinite(logits).all()
        logits.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        dead = [n for n, p in model.named_parameters() if p.grad is None]
        assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("name", ["tiny16-128", "attn32-256", "res16-128+cspn"])
def test_padding_is_zeros_at_bottom_right_and_cropped_back(name):
    """37×53 through the net equals the same input zero-padded by hand to 40×56 (a multiple of 8)."""
    torch.manual_seed(1)
    model = build_model(name).eval()
    x = torch.randn(1, 4, 37, 53)
    padded = torch.zeros(1, 4, 40, 56)
    padded[..., :37, :53] = x
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :37, :53], atol=1e-5)


def test_widths_and_levels_follow_the_name():
    assert get_spec("tiny16-32").widths == (16, 32)
    assert get_spec("tiny16-128").widths == (16, 32, 64, 128)
    assert get_spec("res32-256").widths == (32, 64, 128, 256)
    assert len(build_model("tiny16-128").encoder) == 4
    assert len(build_model("tiny16-128").decoder) == 3


def test_registry_defaults():
    for name in NAMES:
        spec = get_spec(name)
        assert (spec.image_channels, spec.extras, spec.working_size, spec.name) == (3, ("pos",), 128, name)
        assert not spec.cspn and get_spec(name + "+cspn").cspn


def test_unknown_name_is_a_keyerror_listing_valid_names():
    with pytest.raises(KeyError) as err:
        build_model("res99-1000")
    for name in NAMES:
        assert name in str(err.value)
    with pytest.raises(KeyError, match="tiny16-32"):
        get_spec("tiny16-32+crf")


def test_overrides_set_spec_fields_and_in_channels():
    model = build_model("tiny16-32", image_channels=1, extras=("pos", "grad"))
    assert model.spec.in_channels == 3 == model.encoder[0][0].in_channels
    assert build_model(get_spec("res16-32"), extras=["pos", "neg", "prev"]).spec.extras == ("pos", "neg", "prev")
    with pytest.raises(ValueError, match="unknown ModelSpec fields"):
        build_model("tiny16-32", colour=True)


def test_families_differ_structurally():
    tiny, res, attn = build_model("tiny16-128"), build_model("res16-128"), build_model("attn32-256")
    tiny_big = build_model(ModelSpec("tiny", 32, 256))
    assert _n_params(tiny) != _n_params(res) and _n_params(tiny_big) != _n_params(attn)
    assert not any(isinstance(m, ResBlock | AttentionGate) for m in tiny.modules())
    assert sum(isinstance(m, ResBlock) for m in res.modules()) == 4 + 3
    assert sum(isinstance(m, AttentionGate) for m in attn.modules()) == 3
    assert not any(isinstance(m, ResBlock) for m in attn.modules())


def test_attention_gate_scales_the_skip():
    """The gated skip is the skip times per-pixel coefficients in (0, 1)."""
    torch.manual_seed(0)
    gate = AttentionGate(8, 8, 4).eval()
    skip = torch.rand(1, 8, 10, 10) + 0.1
    out = gate(skip, torch.randn(1, 8, 10, 10))
    ratio = out / skip
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-6)  # one coefficient per pixel
    assert ((ratio > 0) & (ratio < 1)).all() and ratio.std() > 0


def test_wrong_input_is_a_clear_valueerror():
    model = build_model("tiny16-32")
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 4, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="name or a ModelSpec"):
        build_model(42)


def test_cspn_affinities_are_normalised_and_preserve_constants():
    torch.manual_seed(0)
    raw = torch.randn(2, 8, 9, 11) * 50
    kernels = normalise_affinity(raw)
    neighbours = torch.cat([kernels[:, :4], kernels[:, 5:]], dim=1)
    assert (neighbours.abs().sum(dim=1) < 1).all()
    assert torch.allclose(kernels.sum(dim=1), torch.ones(2, 9, 11), atol=1e-5)
    assert torch.allclose(kernels[:, 4], 1 - neighbours.sum(dim=1))
    flat = torch.full((2, 1, 9, 11), 0.3)
    assert torch.allclose(propagate(flat, kernels, 6), flat, atol=1e-5)


def test_cspn_propagation_moves_mass_along_affinities():
    """A single bright pixel with all weight on the left neighbour shifts right each iteration."""
    prob = torch.zeros(1, 1, 1, 7)
    prob[..., 2] = 1.0
    kernels = torch.zeros(1, 9, 1, 7)
    kernels[:, 3] = 1.0  # raster index 3 = the left neighbour
    out = propagate(prob, kernels, 3)
    assert out[0, 0, 0, 5] == 1.0 and out.sum() == 1.0


def test_cspn_gradients_reach_the_affinity_head():
    torch.manual_seed(0)
    model = build_model("tiny16-32+cspn")
    model(torch.randn(2, 4, 37, 53)).square().mean().backward()
    grad = model.cspn.affinity.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.cspn.iters == 6


def test_cspn_changes_the_output():
    """With the same trunk weights, the CSPN head really alters the logits."""
    torch.manual_seed(0)
    plain, refined = build_model("tiny16-32").eval(), build_model("tiny16-32+cspn").eval()
    refined.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        nn.init.normal_(refined.cspn.affinity.weight, std=1.0)
        x = torch.randn(1, 4, 32, 32)
        assert not torch.allclose(plain(x), refined(x), atol=1e-3)


def test_spec_dict_round_trip_is_json_serialisable():
    spec = get_spec("attn32-256+cspn", image_channels=1, extras=("pos", "grad"), roi_margin=0.5)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["extras"] == ["pos", "grad"]
    assert ModelSpec.from_dict(d) == spec
    assert ModelSpec.from_dict(d).extras == ("pos", "grad")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "vit"}, "unknown model family"),
        ({"base": 16, "top": 48}, "bad widths"),
        ({"base": 32, "top": 16}, "bad widths"),
        ({"base": 0}, "base must be a positive int"),
        ({"image_channels": 2.5}, "image_channels"),
        ({"extras": ["pos", "depth"]}, "unknown input extras"),
        ({"extras": "pos"}, "extras must be a sequence"),
        ({"cspn": "yes"}, "cspn must be a bool"),
        ({"roi_margin": -1}, "roi_margin"),
        ({"colour": True}, "unknown model spec keys"),
    ],
)
def test_from_dict_rejects_bad_specs(change, message):
    d = {**get_spec("res16-32").to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict(d)


def test_from_dict_needs_the_architecture():
    with pytest.raises(ValueError, match="missing required keys"):
        ModelSpec.from_dict({"family": "tiny", "base": 16})
    with pytest.raises(ValueError, match="must be a dict"):
        ModelSpec.from_dict(["tiny", 16, 32])
