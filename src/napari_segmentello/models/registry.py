"""Model specs and the name -> spec registry (like ``sam_model_registry``).

A :class:`ModelSpec` is everything needed to rebuild a network and to feed it:
the architecture (family, widths, CSPN head) *and* the input recipe (image
channels, extras, working size, ROI margin). Checkpoints store it as a plain
dict, so a weights file always carries the recipe it was trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from napari_segmentello.inputs import n_channels

FAMILIES = ("tiny", "res", "attn", "lite0")
CONTEXTS = ("stroke", "object")
CSPN_SUFFIX = "+cspn"


def _positive_int(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ModelSpec.{what} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture + input recipe of one network; validated on construction.

    Widths go ``base, 2*base, ..., top`` (one U-Net level each), so ``top / base``
    must be a power of two. For ``lite0`` they are the decoder's widths at strides
    1, 2, 4, ... and the encoder goes as deep as ``2 ** len(widths)``.

    ``context`` is how the engine cuts windows: ``"stroke"`` one pass around the
    stroke (the study families); ``"object"`` the coarse-to-fine path of
    :mod:`napari_segmentello.roi` that grows a window until it holds the object.
    """

    family: str
    base: int
    top: int
    image_channels: int = 3
    extras: tuple[str, ...] = ("pos",)
    cspn: bool = False
    cspn_iters: int = 6
    working_size: int = 128
    roi_margin: float = 0.4
    context: str = "stroke"
    name: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; valid families: {list(FAMILIES)}")
        for what in ("base", "top", "image_channels", "cspn_iters", "working_size"):
            _positive_int(getattr(self, what), what)
        ratio = self.top // self.base
        if self.top % self.base or ratio & (ratio - 1):
            raise ValueError(
                f"bad widths base={self.base}, top={self.top}: top must be base times a power of two "
                "(levels double from base to top)"
            )
        if isinstance(self.extras, str) or not all(isinstance(e, str) for e in self.extras):
            raise ValueError(f"ModelSpec.extras must be a sequence of names, got {self.extras!r}")
        object.__setattr__(self, "extras", tuple(self.extras))
        n_channels(self.image_channels, self.extras)  # raises ValueError naming unknown extras
        if not isinstance(self.cspn, bool):
            raise ValueError(f"ModelSpec.cspn must be a bool, got {self.cspn!r}")
        if isinstance(self.roi_margin, bool) or not isinstance(self.roi_margin, int | float) or self.roi_margin < 0:
            raise ValueError(f"ModelSpec.roi_margin must be a number >= 0, got {self.roi_margin!r}")
        object.__setattr__(self, "roi_margin", float(self.roi_margin))
        if self.context not in CONTEXTS:
            raise ValueError(f"ModelSpec.context must be one of {list(CONTEXTS)}, got {self.context!r}")
        if self.family == "lite0":
            if self.image_channels != 3 or "grad" in self.extras:
                raise ValueError("the lite0 family takes an RGB image (image_channels=3) and no 'grad' extra")
            if self.cspn:
                raise ValueError("the lite0 family has no CSPN head (its last stage already sees the image)")
            if len(self.widths) not in (4, 5):
                raise ValueError(f"lite0 needs 4 or 5 decoder widths (encoder stride 16 or 32), got {self.widths}")
        if not isinstance(self.name, str):
            raise ValueError(f"ModelSpec.name must be a str, got {self.name!r}")

    @property
    def in_channels(self) -> int:
        """Channels the network expects: the image plus one per extra."""
        return n_channels(self.image_channels, self.extras)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each U-Net level, shallow to deep."""
        widths = [self.base]
        while widths[-1] < self.top:
            widths.append(widths[-1] * 2)
        return tuple(widths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists); :meth:`from_dict` reverses it."""
        d = dataclasses.asdict(self)
        d["extras"] = list(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Rebuild and validate a spec; unknown or missing keys are a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a model spec must be a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown model spec keys {unknown}; valid keys: {names}")
        missing = [k for k in ("family", "base", "top") if k not in d]
        if missing:
            raise ValueError(f"model spec is missing required keys {missing}")
        return cls(**d)


def _entry(name: str, family: str, base: int, top: int) -> tuple[str, ModelSpec]:
    return name, ModelSpec(family=family, base=base, top=top, name=name)


# The object-aware family (issue 13): pretrained encoder, every prompt, windows that hold the object.
_OBJECT = {"extras": ("pos", "neg", "prev", "box"), "working_size": 160, "context": "object"}

REGISTRY: dict[str, ModelSpec] = dict(
    [
        _entry("tiny16-32", "tiny", 16, 32),
        _entry("res16-32", "res", 16, 32),
        _entry("tiny16-128", "tiny", 16, 128),
        _entry("res16-128", "res", 16, 128),
        _entry("res32-256", "res", 32, 256),
        _entry("attn32-256", "attn", 32, 256),
        ("lite0-128", ModelSpec(family="lite0", base=16, top=128, name="lite0-128", **_OBJECT)),
        ("lite0-256", ModelSpec(family="lite0", base=16, top=256, name="lite0-256", **_OBJECT)),
        # half the decoder widths of lite0-128: a forward 18.7 -> 13.3 ms at 160 px on 2 CPU cores
        ("lite0-64", ModelSpec(family="lite0", base=8, top=64, name="lite0-64", **_OBJECT)),
    ]
)


def available_models() -> list[str]:
    """Every buildable name: the registry entries, then each U-Net with ``+cspn``."""
    return [*REGISTRY, *(n + CSPN_SUFFIX for n, spec in REGISTRY.items() if spec.family != "lite0")]


def with_overrides(spec: ModelSpec, **overrides: Any) -> ModelSpec:
    """``spec`` with some fields replaced; unknown field names are a ValueError."""
    names = [f.name for f in dataclasses.fields(ModelSpec)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown ModelSpec fields {unknown}; valid fields: {names}")
    return dataclasses.replace(spec, **overrides)


def get_spec(name: str, **overrides: Any) -> ModelSpec:
    """The registry spec for ``name`` (optionally ending in ``+cspn``) with ``overrides`` applied."""
    if not isinstance(name, str):
        raise KeyError(f"model name must be a str, got {type(name).__name__}; valid names: {available_models()}")
    key, cspn = (name[: -len(CSPN_SUFFIX)], True) if name.endswith(CSPN_SUFFIX) else (name, False)
    if key not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid names: {available_models()}")
    return with_overrides(dataclasses.replace(REGISTRY[key], cspn=cspn, name=name), **overrides)
