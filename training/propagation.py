"""Propagation through time on real video: ``python -m training.propagation --model default``.

For each DAVIS-2016 sequence under ``<data root>/davis2016`` one simulated human
stroke is drawn on one frame (the first, and separately the middle), propagated
through the whole sequence (both directions from the middle) with
:func:`napari_segmentello.propagate.propagate`, and every frame's mask is compared
with the annotation. Two reference rows use the same start frames: propagation
started from that frame's ground-truth mask (a perfect first refinement), and the
ground-truth mask copied to every frame (the no-motion floor). J is the per-frame
IoU (``metrics.iou``), J-mean its mean over all frames of a sequence, start frame
included; "overall" is the mean over sequences, as DAVIS reports it. Writes
``results.json``, ``results.md`` and ``strip.png`` (every 10th frame; ``--strip-out`` elsewhere) to
``--out``; ``python -m training.report --propagation OUT/results.json`` splices the table into README.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from skimage.io import imread
from tqdm import tqdm

from napari_segmentello import strokes
from napari_segmentello.data import default_data_root, read_rgb
from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.propagate import propagate

DATASET = "davis2016"
RESOLUTION = "480p"
STARTS = ("first", "middle")
METHODS = ("stroke", "gt-start", "copy")  # propagation from a stroke, from the true mask; the no-motion floor
HUMAN_STROKE = strokes.human_scribble_stroke  # the human-scribble protocol (calibrated on real scribbles)
STRIP_EVERY = 10


def davis_root(root: str | Path | None = None) -> Path:
    """``<root>/davis2016`` (default root: ``default_data_root()``), or an error saying where it was looked for."""
    base = (Path(root) if root is not None else default_data_root()) / DATASET
    if not (base / "Annotations" / RESOLUTION).is_dir():
        raise FileNotFoundError(f"no DAVIS annotations under {base}/Annotations/{RESOLUTION} (set SEGMENTELLO_DATA)")
    return base


def sequence_names(root: str | Path | None = None) -> list[str]:
    """The sequences present, sorted."""
    return sorted(p.name for p in (davis_root(root) / "Annotations" / RESOLUTION).iterdir() if p.is_dir())


def load_sequence(
    name: str, root: str | Path | None = None, frames: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray]:
    """(T×H×W×3 uint8 frames, T×H×W bool masks) of one sequence, optionally a slice of its frames."""
    base = davis_root(root)
    masks_dir = base / "Annotations" / RESOLUTION / name
    if not masks_dir.is_dir():
        raise KeyError(f"unknown sequence {name!r}; present: {sequence_names(root)}")
    mask_files = sorted(masks_dir.glob("*.png"))[frames]
    if not mask_files:
        raise ValueError(f"no frames of {name!r} in {frames}")
    images = [read_rgb(base / "JPEGImages" / RESOLUTION / name / f"{p.stem}.jpg") for p in mask_files]
    masks = [np.asarray(imread(p)) > 127 for p in mask_files]
    return np.stack(images), np.stack(masks)


def start_frame(masks: np.ndarray, where: str) -> int:
    """The first or the middle frame, moved to the nearest one that shows the object."""
    present = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    if present.size == 0:
        raise ValueError("the sequence has no frame with the object")
    target = 0 if where == "first" else len(masks) // 2
    return int(present[np.argmin(np.abs(present - target))])


def first_below(ious: list[float], start: int, level: float = 0.5) -> dict[str, int | None]:
    """The first frame after (``forward``) and before (``backward``) ``start`` with J < ``level``; None if none."""
    after = [k for k in range(start + 1, len(ious)) if ious[k] < level]
    before = [k for k in range(start - 1, -1, -1) if ious[k] < level]
    return {"forward": after[0] if after else None, "backward": before[0] if before else None}


def run_start(
    refiner: Refiner,
    frames: np.ndarray,
    masks: np.ndarray,
    start: int,
    rng: np.random.Generator,
    carry: float = 0.0,
    adapt: float = 0.0,
) -> dict[str, Any]:
    """Every method from frame ``start``: per-frame J, J-mean, first drop under 0.5, and propagation time."""
    stroke = HUMAN_STROKE(masks[start], rng)
    out: dict[str, Any] = {"start": start, "stroke_px": int(stroke.sum())}
    for method in METHODS:
        began = time.perf_counter()
        if method == "copy":
            pred = np.broadcast_to(masks[start], masks.shape)
        else:
            prompt = stroke if method == "stroke" else masks[start]
            pred = propagate(
                frames, prompt, start, refiner=refiner, carry=carry, adapt=adapt, refine_start=method == "stroke"
            )
        seconds = time.perf_counter() - began
        ious = [iou(gt, p) for gt, p in zip(masks, pred, strict=True)]
        out[method] = {
            "j_mean": float(np.mean(ious)),
            "first_below_0.5": first_below(ious, start),
            "frames_reached": int(pred.reshape(len(pred), -1).any(axis=1).sum()),
            "ms_per_frame": seconds * 1000 / (len(frames) - 1),
            "j": ious,
        }
        if method == "stroke":
            out["masks"] = pred
    return out


def plot_strip(strips: dict[str, dict[str, np.ndarray]], path: Path, every: int = STRIP_EVERY) -> None:
    """Rows = sequences, columns = every ``every``-th frame: ground truth outlined, the propagated mask filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(range(0, len(s["frames"]), every)) for s in strips.values())
    fig, axes = plt.subplots(len(strips), columns, figsize=(1.9 * columns, 1.2 * len(strips)), squeeze=False)
    for row, (name, s) in zip(axes, strips.items(), strict=True):
        for ax in row:
            ax.axis("off")
        for ax, k in zip(row, range(0, len(s["frames"]), every), strict=False):
            ax.imshow(s["frames"][k])
            ax.imshow(np.ma.masked_where(~s["pred"][k], s["pred"][k]), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            ax.contour(s["gt"][k], levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(f"{name} {k}" if k == 0 else str(k), fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _drop(first: dict[str, int | None]) -> str:
    cells = [f"{arrow}{first[d]}" for d, arrow in (("backward", "←"), ("forward", "→")) if first[d] is not None]
    return " ".join(cells) or "never"


def _adaptation_note(results: dict[str, Any]) -> str:
    """The adaptation sentence of the table's note ('' when off)."""
    seconds = results.get("adapt", 0.0)
    if not seconds:
        return ""
    return (
        f"Both propagation rows adapt a copy of the model to the start frame's mask for {seconds:g} s first "
        "(`propagate(..., adapt=...)`, `finetune.adapt`). "
    )


def markdown(results: dict[str, Any]) -> str:
    """The README table: J-mean per sequence and start, the references, and where J first drops under 0.5."""
    headers = [
        "sequence",
        "frames",
        *(f"{m} @{s}" for s in STARTS for m in METHODS),
        *(f"J<0.5 stroke @{s}" for s in STARTS),
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, seq in results["sequences"].items():
        cells = [f"{seq[s][m]['j_mean']:.3f}" for s in STARTS for m in METHODS]
        drops = [_drop(seq[s]["stroke"]["first_below_0.5"]) for s in STARTS]
        lines.append(f"| {name} | {seq['frames']} | " + " | ".join(cells + drops) + " |")
    overall = [f"**{results['overall'][s][m]:.3f}**" for s in STARTS for m in METHODS]
    lines.append("| **overall** (mean of sequences) | " + f"{results['frames']} | " + " | ".join(overall) + " | | |")
    ms = results["ms_per_frame_median"]
    lines += [
        "",
        f"J = per-frame IoU, J-mean over all frames (start frame included). `stroke`: propagation from one simulated "
        f"human stroke (`{results['stroke']}`, seed {results['seed']}); `gt-start`: from the start frame's true mask; "
        f"`copy`: that mask on every frame (no motion). J<0.5: first frame (index) where the stroke run drops under "
        f"0.5, ← before / → after the start. Carried-mask weight {results['carry']:g}. {_adaptation_note(results)}"
        f"Propagation took {ms:.0f} ms per frame (median over runs, {results['device']}"
        f"{', the adaptation included' if results.get('adapt') else ''}).",
    ]
    return "\n".join(lines) + "\n"


def evaluate(
    refiner: Refiner,
    names: list[str],
    root: Path | None,
    seed: int,
    strip: Path,
    span: slice = slice(None),
    carry: float = 0.0,
    adapt: float = 0.0,
) -> dict[str, Any]:
    """Every sequence (the ``span`` of its frames) and start; the strip of each sequence's first-frame stroke run."""
    sequences, strips, times = {}, {}, []
    for i, name in enumerate(tqdm(names, desc="sequences")):
        frames, masks = load_sequence(name, root, span)
        seq: dict[str, Any] = {"frames": len(frames)}
        for where in STARTS:
            start = start_frame(masks, where)
            rng = np.random.default_rng([seed, i, start])
            seq[where] = run_start(refiner, frames, masks, start, rng, carry, adapt)
            times += [seq[where][m]["ms_per_frame"] for m in METHODS[:2]]
        strips[name] = {"frames": frames, "gt": masks, "pred": seq["first"].pop("masks")}
        seq["middle"].pop("masks")
        sequences[name] = seq
    plot_strip(strips, strip)
    overall = {s: {m: float(np.mean([q[s][m]["j_mean"] for q in sequences.values()])) for m in METHODS} for s in STARTS}
    return {
        "sequences": sequences,
        "overall": overall,
        "frames": sum(q["frames"] for q in sequences.values()),
        "ms_per_frame_median": float(np.median(times)),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.propagation", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="bundled model name or checkpoint path (default: default)")
    p.add_argument("--sequences", help="comma list (default: every sequence under davis2016)")
    p.add_argument("--data-root", type=Path, help="data root holding davis2016/ (default: the shared data)")
    p.add_argument("--frames", type=int, help="only the first N frames of each sequence (quick runs, tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--carry", type=float, default=0.0, help="propagate()'s carried-mask weight (default 0: off)")
    p.add_argument(
        "--adapt", type=float, default=0.0, help="seconds propagate() adapts the model to the start frame (default 0)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--out", type=Path, default=Path("runs/propagation"), help="output folder")
    p.add_argument("--strip-out", type=Path, help="where to write the strip PNG (default: OUT/strip.png)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = args.sequences.split(",") if args.sequences else sequence_names(args.data_root)
        refiner = Refiner(args.model, device=args.device)
        args.out.mkdir(parents=True, exist_ok=True)
        span = slice(args.frames)
        strip = args.strip_out or args.out / "strip.png"
        strip.parent.mkdir(parents=True, exist_ok=True)
        found = evaluate(refiner, names, args.data_root, args.seed, strip, span, args.carry, args.adapt)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = {
        "command": "python -m training.propagation " + " ".join(argv if argv is not None else sys.argv[1:]),
        "strip": str(strip),
        "model": str(args.model),
        "spec": refiner.spec.to_dict(),
        "device": str(refiner.device),
        "seed": args.seed,
        "carry": args.carry,
        "adapt": args.adapt,
        "stroke": f"strokes.{HUMAN_STROKE.__name__}",
        **found,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
