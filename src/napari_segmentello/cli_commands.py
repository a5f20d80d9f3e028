"""The CLI's subcommands: ``refine`` and ``models`` (the engine's), and ``demo``.

Heavy imports (torch, scikit-image) happen inside the ``run`` functions so that
``napari-segmentello --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_segmentello import demo

_MASK_SUFFIXES = (".png", ".tif", ".tiff")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path (default: default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda or mps")


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="2D image (grayscale or channels last), any format scikit-image reads")
    parser.add_argument(
        "stroke",
        type=Path,
        nargs="?",
        help="stroke mask or label image (each nonzero id is one object; a colour file is one object, any colour "
        "on black or transparent); optional with --clicks",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output mask/labels (.png, .tif or .tiff)")
    parser.add_argument(
        "--rough",
        action="store_true",
        help="the stroke file holds rough masks of the whole objects (painted edge to edge, a filled lasso), not "
        "strokes inside them: their edges are moved to the objects'",
    )
    parser.add_argument(
        "--negative",
        type=Path,
        help='"not this" strokes: a mask (nonzero pixels) of what belongs to none of the objects, lined up with '
        "the image; needs a model with a 'neg' input (default). With several ids each id's strokes are also the "
        'other objects\' "not this"',
    )
    parser.add_argument(
        "--clicks",
        type=Path,
        help="clicks on one object: a CSV file of 'row,col' or 'row,col,positive' lines (positive 1, or 0 for "
        "'not this'; a header line and '#' comments are skipped), alone or with a one-object stroke",
    )
    _add_model_arguments(parser)
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold in [0, 1) (default 0.5)")


def _read(path: Path) -> np.ndarray:
    from skimage.io import imread

    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return imread(path)
    except (OSError, SyntaxError) as exc:  # imageio/Pillow report unreadable files as these
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # imageio appends plugin advice
        raise ValueError(f"cannot read {path} as an image: {reason}") from exc


def _painted(array: np.ndarray) -> np.ndarray:
    """A painted multi-channel file as one bool mask: a pixel any colour channel marks and, in a file with an
    alpha channel (gray + alpha, RGBA), that is not transparent.

    Image editors save strokes in colour or with alpha; a grayscale or label image is returned as it is.
    """
    if array.ndim != 3:
        return array
    if array.shape[2] not in (2, 4):
        return array.any(axis=2)
    return array[..., :-1].any(axis=2) & (array[..., -1] > 0)


def _numbers(text: str) -> list[float] | None:
    """The comma-separated numbers of a CSV line, or None if one is not a number."""
    try:
        return [float(c) for c in text.split(",")]
    except ValueError:
        return None


def read_clicks(path: Path) -> np.ndarray:
    """``(N, 3)`` ``(row, col, positive)`` clicks from a CSV file; a bad line is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    clicks = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        values = _numbers(text)
        if values is None and number == 1:  # a header line
            continue
        if values is None or len(values) not in (2, 3) or not np.isfinite(values).all():
            raise ValueError(f"{path}:{number}: expected 'row,col' or 'row,col,positive' numbers, got {line!r}")
        clicks.append(values if len(values) == 3 else [*values, 1.0])
    if not clicks:
        raise ValueError(f"{path} holds no clicks: write one 'row,col[,positive]' line per click")
    return np.array(clicks)


def run_refine(args: argparse.Namespace) -> int:
    """One id: a 0/255 mask; several ids: a label image (uint16, or uint32 TIFF for larger ids)."""
    from skimage.io import imsave

    from napari_segmentello.engine import refine, refine_labels

    if args.output.suffix.lower() not in _MASK_SUFFIXES:
        raise ValueError(f"output must end in one of {_MASK_SUFFIXES} (lossless), got {args.output.name!r}")
    if args.stroke is None and args.clicks is None:
        raise ValueError("give a stroke file, --clicks FILE, or both")
    image = _read(args.image)
    stroke = None if args.stroke is None else _read(args.stroke)
    clicks = None if args.clicks is None else read_clicks(args.clicks)
    negative = None if args.negative is None else _painted(_read(args.negative))
    if stroke is not None and stroke.ndim == 3:
        stroke = _painted(stroke)  # one object: several need a label image, one id each
    ids = np.unique(stroke[stroke != 0]) if stroke is not None else np.zeros(0)
    if clicks is not None and ids.size > 1:
        raise ValueError(f"--clicks refines one object, but the stroke file holds {ids.size} label ids")
    options = {
        "rough": args.rough,
        "negative": negative,
        "model": args.model,
        "device": args.device,
        "threshold": args.threshold,
    }
    start = time.perf_counter()
    if ids.size <= 1:
        result = refine(image, stroke, clicks=clicks, **options).astype(np.uint8) * 255
    else:
        if ids.min() < 0:
            raise ValueError(f"label ids must be positive to be written as a label image, got {ids.min()}")
        result = refine_labels(image, stroke, **options)
        fits16 = ids.max() <= np.iinfo(np.uint16).max
        if not fits16 and args.output.suffix.lower() == ".png":
            raise ValueError(f"label id {ids.max()} does not fit a 16-bit PNG; write a .tif instead")
        result = result.astype(np.uint16 if fits16 else np.uint32)
    elapsed = time.perf_counter() - start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.output, result, check_contrast=False)
    pixels = int(np.count_nonzero(result))
    print(f"{args.output}: {max(ids.size, 1)} object(s), {pixels} pixels, {elapsed * 1000:.0f} ms")
    return 0


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="*", type=Path, help="checkpoint files to describe (default: bundled)")


def _flatten(metrics: Any, prefix: str = "") -> list[str]:
    """``{"val": {"iou": 0.8}}`` -> ``["val/iou=0.800"]``: nested metric dicts on one line."""
    if isinstance(metrics, dict):
        return [item for k, v in metrics.items() for item in _flatten(v, f"{prefix}{k}/")]
    if isinstance(metrics, bool) or not isinstance(metrics, int | float):
        return []
    return [f"{prefix.rstrip('/')}={metrics if isinstance(metrics, int) else format(metrics, '.3f')}"]


def _dataset_label(entry: Any) -> str:
    """A training-data entry of the provenance: ``coco-mini/train (812 obj)`` from training's dicts."""
    if not isinstance(entry, dict):
        return str(entry)
    ann = entry.get("ann_file")
    label = f"{Path(ann).parent.parent.name}/{Path(ann).stem.removeprefix('instances_')}" if ann else "?"
    return f"{label} ({entry['instances']} obj)" if "instances" in entry else label


def _training_data(provenance: dict) -> str:
    for key in ("datasets", "dataset", "data"):
        value = provenance.get(key)
        if value:
            return ", ".join(map(_dataset_label, value if isinstance(value, list | tuple) else [value]))
    return "-"


def _describe(name: str, path: Path) -> list[str]:
    """One table row, read from the checkpoint's spec, provenance and metrics."""
    from napari_segmentello.checkpoint import load_checkpoint
    from napari_segmentello.models import build_model

    ckpt = load_checkpoint(path)
    spec = ckpt.spec
    params = sum(p.numel() for p in build_model(spec).parameters())
    arch = spec.name or f"{spec.family}{spec.base}-{spec.top}{'+cspn' if spec.cspn else ''}"
    recipe = f"{'gray' if spec.image_channels == 1 else 'rgb'}+{'+'.join(spec.extras)}@{spec.working_size}"
    return [
        name,
        f"{path.stat().st_size / 1e6:.2f} MB",
        f"{params:,}",
        arch,
        recipe,
        _training_data(ckpt.provenance or {}),
        ", ".join(_flatten(ckpt.metrics or {})) or "-",
    ]


def run_models(args: argparse.Namespace) -> int:
    from napari_segmentello.loader import WEIGHTS_DIR, list_models

    entries = [(p.stem, p) for p in args.checkpoints] or [(n, WEIGHTS_DIR / f"{n}.pt") for n in list_models()]
    if not entries:
        print(
            f"no bundled weights in {WEIGHTS_DIR}; train them with `python -m training.run ...` "
            "or describe a checkpoint: napari-segmentello models PATH"
        )
        return 0
    for _, path in entries:
        if not path.is_file():
            raise FileNotFoundError(f"no such checkpoint file: {path}")
    header = ["name", "size", "params", "architecture", "input", "training data", "val metrics"]
    rows = [header, *(_describe(name, path) for name, path in entries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


SUBCOMMANDS: list = [
    ("refine", "refine a stroke (or every label id) on an image into a mask", add_refine_arguments, run_refine),
    ("models", "list bundled models (or describe checkpoint files)", add_models_arguments, run_models),
    (
        "demo",
        "refine the bundled sample headless (IoU + overlay PNG), or open napari with --gui",
        demo.add_arguments,
        demo.run,
    ),
]
