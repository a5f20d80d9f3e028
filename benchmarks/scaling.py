"""Time and peak memory of ``refine()`` as the image grows (fixed stroke) and as the object grows (fixed image).

    python -m benchmarks.scaling [--model default|PATH] [--sizes 512,2048,8192,16384] [--extents 32,128,512,2048]

Every point runs in a fresh process, so its peak RSS is its own: the child
imports everything, loads the model and refines a small warm-up image (its RSS
then is the point's *baseline*: a process ready to refine), allocates the image
(uint8, grayscale by default: a 16k² RGB image alone would be 768 MB) and a
full-frame stroke, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``, Linux) and times ``refine()``. Reported per point:
median time, the peak RSS above the baseline (inputs included) and the peak
above the RSS just before refining (what the call itself adds). The image is
noise: content does not change the work done.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    STAND_IN_HELP,
    STAND_IN_NOTE,
    cli_main,
    machine_info,
    md_table,
    resolve_models,
    run_child,
    summary,
)

SIZES = (512, 2048, 8192, 16384)
EXTENTS = (32, 128, 512, 2048)
OBJECT_IMAGE = 4096  # side of the image of the object sweep
IMAGE_SWEEP_EXTENT = 141  # a 200 px diagonal stroke
STROKE_WIDTH = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        help="bundled name or checkpoint path (default: the first bundled model)",
    )
    p.add_argument("--stand-in", action="store_true", help=STAND_IN_HELP)
    p.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="image sides of the image sweep",
    )
    p.add_argument(
        "--extents",
        default=",".join(map(str, EXTENTS)),
        help=f"stroke extents on a {OBJECT_IMAGE}² image",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=1,
        choices=(1, 3),
        help="image channels (default 1: grayscale)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed refine() calls per point")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: sizes 512,2048, extents 32,128, 1 repeat",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for scaling.json")
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON job of one measurement process
    return p


def diagonal_stroke(side: int, extent: int, width: int = STROKE_WIDTH) -> np.ndarray:
    """A full-frame bool stroke: a diagonal of ``extent``×``extent`` px, ``width`` px thick, centred."""
    from skimage.draw import line

    stroke = np.zeros((side, side), bool)
    c, half = side // 2, extent // 2
    rr, cc = line(c - half, c - half, c + half, c + half)
    for d in range(-(width // 2), width // 2 + 1):
        stroke[rr, np.clip(cc + d, 0, side - 1)] = True
    return stroke


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in MB, or the rusage peak off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)


def _reset_peak() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: baseline RSS first, then the timed calls."""
    import torch

    from napari_segmentello.engine import Refiner, refine
    from napari_segmentello.loader import load_model
    from napari_segmentello.roi import roi_from_stroke

    torch.set_num_threads(job["threads"])
    model, device = job["model"], job["device"]
    load_model(model, device)
    warm = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    refine(warm, diagonal_stroke(256, 64), model=model, device=device)
    del warm
    out: dict[str, Any] = {"baseline_mb": _status_mb("VmRSS")}
    side, extent = job["side"], job["extent"]
    shape = (side, side) if job["channels"] == 1 else (side, side, job["channels"])
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    stroke = diagonal_stroke(side, extent)
    out["inputs_mb"] = (image.nbytes + stroke.nbytes) / 2**20
    out["before_mb"] = _status_mb("VmRSS")
    out["peak_reset"] = _reset_peak()
    times = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        mask = refine(image, stroke, model=model, device=device)
        times.append((time.perf_counter() - start) * 1000)
        out["mask_px"] = int(np.count_nonzero(mask))
        del mask
    out["peak_mb"] = _status_mb("VmHWM")
    out["refine_ms"] = times
    refiner = Refiner(model, device)  # where the time goes: whole-image work vs the window's
    start = time.perf_counter()
    refiner.set_image(image)
    out["set_image_ms"] = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    refiner.predict(stroke)
    out["predict_ms"] = (time.perf_counter() - start) * 1000
    out["roi_px"] = roi_from_stroke(stroke, margin=refiner.spec.roi_margin).size
    return out


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run one child and derive the reported figures."""
    got = run_child(["-m", "benchmarks.scaling", "--child", json.dumps(job)], job["threads"])
    return got | {
        "time_ms": summary(got["refine_ms"]),
        "peak_above_baseline_mb": got["peak_mb"] - got["baseline_mb"],
        "refine_extra_mb": got["peak_mb"] - got["before_mb"] if got["peak_reset"] else None,
    }


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} must be a comma list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--{what} needs positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes, extents = _ints(args.sizes, "sizes"), _ints(args.extents, "extents")
    if args.quick:
        sizes, extents, args.repeats = [512, 2048], [32, 128], 1
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if max(extents) * 2 > OBJECT_IMAGE:
        raise ValueError(f"--extents must stay below {OBJECT_IMAGE // 2} px to fit the {OBJECT_IMAGE}² image")
    from napari_segmentello.devices import resolve_device

    machine = machine_info(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models(args.model, args.stand_in, Path(tmp))
        label, source, stand_in = models[-1] if args.stand_in else models[0]
        base = {"model": source, "device": args.device, "threads": args.threads}
        base |= {"channels": args.channels, "repeats": args.repeats}
        image_sweep = [measure(base | {"side": s, "extent": IMAGE_SWEEP_EXTENT}) | {"side": s} for s in sizes]
        object_sweep = [measure(base | {"side": OBJECT_IMAGE, "extent": e}) | {"extent": e} for e in extents]
    return {
        "benchmark": "scaling",
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "channels": args.channels,
            "dtype": "uint8",
            "repeats": args.repeats,
            "device": str(resolve_device(args.device)),
            "image_sweep_stroke": f"{IMAGE_SWEEP_EXTENT}×{IMAGE_SWEEP_EXTENT} px diagonal, {STROKE_WIDTH} px wide",
            "object_sweep_image": OBJECT_IMAGE,
        },
        "model": {"label": label, "source": source, "stand_in": stand_in},
        "baseline_mb": float(np.median([p["baseline_mb"] for p in image_sweep + object_sweep])),
        "image_sweep": image_sweep,
        "object_sweep": object_sweep,
    }


def _row(point: dict[str, Any], first: str) -> list[str]:
    extra = point["refine_extra_mb"]
    return [
        first,
        f"{point['inputs_mb']:.1f}",
        f"{point['mask_px'] / 1e6:.2f}",
        f"{point['time_ms']['median']:.0f}",
        f"{point['set_image_ms']:.0f} + {point['predict_ms']:.0f}",
        f"{point['peak_above_baseline_mb']:.0f}",
        "–" if extra is None else f"{extra:.0f}",
    ]


def markdown(result: dict[str, Any]) -> str:
    s, m, objects = result["settings"], result["model"], result["object_sweep"]
    kind = "grayscale" if s["channels"] == 1 else f"{s['channels']}-channel"
    model = f"`{m['label']}`" + (f" ({STAND_IN_NOTE})" if m["stand_in"] else "")
    headers = [
        "image + stroke MB",
        "answer Mpx",
        "`refine()` ms (median)",
        "set_image + predict ms",
        "peak RSS − baseline MB",
        "added by the call MB",
    ]
    lines = [
        "### Scaling: cost follows the object, not the image",
        "",
        (
            f"`refine()` with {model} on `{s['device']}`, {kind} {s['dtype']} noise images, one fresh process per row "
            f"(median of {s['repeats']} call(s)). Baseline: the same process after importing everything, loading the "
            f"model and refining a 256² warm-up image (median {result['baseline_mb']:.0f} MB RSS). "
            "*Added by the call*: peak RSS during "
            "`refine()` minus the RSS just before it (image and stroke already allocated). *Answer*: the mask's "
            "pixels. Noise has no object, so the model answers as it reads the noise: where the answer runs into "
            "the window's edge the window grows (up to 16×), and the cost follows the answer."
        ),
        "",
        f"Image grows, stroke fixed ({s['image_sweep_stroke']}):",
        "",
        md_table(
            ["image side", *headers],
            [_row(p, f"{p['side']}²") for p in result["image_sweep"]],
        ),
        "",
        (
            f"Object grows on a {s['object_sweep_image']}² image (diagonal stroke of the given extent; "
            "the model's window side in brackets):"
        ),
        "",
        md_table(
            ["stroke extent px", *headers],
            [_row(p, f"{p['extent']} ({p['roi_px']})") for p in objects],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    return cli_main(args, run, markdown, "scaling")


if __name__ == "__main__":
    sys.exit(main())
