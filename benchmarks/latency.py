"""Per-object latency of ``refine()`` against GrabCut and the random walker on the same real val objects.

    python -m benchmarks.latency [--models default,PATH] [--n 40] [--threads 2] [--quick]

Objects are a seeded sample of the coco-mini and dsb2018-nuclei *val* splits,
each with one simulated scribble (``strokes.simulate_stroke(mask, "scribble",
default_rng([seed, ann_id]))``), so every method sees identical inputs.
Measured, interleaved per object on the same machine in the same run:

- ``refine()``: what a user calls, end to end (model lookup, intensity range of
  the whole image, window, forward, paste);
- ``Refiner.predict``: the image set once (``set_image`` untimed), per stroke;
- GrabCut (OpenCV, stroke as sure foreground, 5 iterations) and scikit-image's
  random walker, both from :mod:`training.baselines`, on the same stroke ROI.

*warm* times follow one untimed call of every method; *cold* is a fresh Python
process: imports plus the first call (checkpoint load and first forward
included), each in its own child process. Images are decoded before timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
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
    set_threads,
    summary,
)

DATASETS = ("coco-mini", "dsb2018-nuclei")
PROTOCOL = "scribble"
MARGIN = 0.4  # the baselines' ROI margin: the bundled models' roi_margin

# A fresh interpreter: imports, then the first call; the parent adds the process's own wall time.
_COLD = """
import json, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
import numpy as np
d = np.load({npz!r}); image, stroke = d["image"], d["stroke"]
t2 = time.perf_counter()
{call}
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_call_s": t3 - t2}}))
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        help="comma list of bundled names or checkpoint paths (default: every bundled model)",
    )
    p.add_argument("--stand-in", action="store_true", help=STAND_IN_HELP)
    p.add_argument("--n", type=int, default=40, help="objects per dataset (default 40)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls per object and method; their median counts",
    )
    p.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="fresh processes per method for the cold start",
    )
    p.add_argument("--threads", type=int, default=2, help="torch/OpenCV/BLAS threads (default 2)")
    p.add_argument("--device", default="auto", help="our model's device: auto, cpu, cuda, mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 2 objects per dataset, 1 repeat, 1 cold run",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for latency.json")
    return p


def load_objects(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded val objects per dataset with their scribble, decoded before any timing."""
    from napari_segmentello.data import CocoInstances, dataset_files
    from napari_segmentello.roi import roi_from_stroke
    from napari_segmentello.strokes import simulate_stroke

    objects = []
    for d, name in enumerate(DATASETS):
        instances = CocoInstances(*dataset_files(name, "val"))
        picks = np.random.default_rng([seed, d]).choice(len(instances), size=min(n, len(instances)), replace=False)
        for index in sorted(picks.tolist()):  # dataset order: objects of one image stay together
            inst = instances[index]
            stroke = simulate_stroke(inst.mask, PROTOCOL, np.random.default_rng([seed, inst.ann_id]))
            objects.append(
                {
                    "dataset": name,
                    "image_id": inst.image_id,
                    "ann_id": inst.ann_id,
                    "image": inst.image,
                    "stroke": stroke,
                    "image_shape": list(inst.image.shape),
                    "object_px": int(inst.mask.sum()),
                    "roi_px": roi_from_stroke(stroke, margin=MARGIN).size,
                }
            )
    return objects


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0


def _cuda_sync(device: str) -> Callable[[], None]:
    import torch

    from napari_segmentello.devices import resolve_device

    if resolve_device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def measure_warm(
    objects: list[dict[str, Any]],
    models: list[tuple[str, str, bool]],
    device: str,
    repeats: int,
) -> list[dict[str, float]]:
    """Per object, milliseconds per method (median of ``repeats``), all methods interleaved."""
    from napari_segmentello.engine import Refiner, refine
    from training.baselines import grabcut, random_walker

    refiners = {label: Refiner(source, device) for label, source, _ in models}
    sync = _cuda_sync(device)
    methods: dict[str, Callable[[dict[str, Any]], Any]] = {
        "grabcut": lambda o: grabcut(o["image"], o["stroke"], margin=MARGIN),
        "randomwalker": lambda o: random_walker(o["image"], o["stroke"], margin=MARGIN),
    }
    for label, source, _ in models:
        methods[f"refine:{label}"] = lambda o, s=source: refine(o["image"], o["stroke"], model=s, device=device)
        methods[f"predict:{label}"] = lambda o, r=refiners[label]: r.predict(o["stroke"])
    for refiner in refiners.values():  # warm-up: first forward, caches, lazy imports
        refiner.set_image(objects[0]["image"])
    for fn in methods.values():
        fn(objects[0])
    rows = []
    for obj in objects:
        for refiner in refiners.values():
            refiner.set_image(obj["image"])  # untimed: the SAM-style split
        rows.append({name: _median_time(lambda f=fn, o=obj: f(o), repeats, sync) for name, fn in methods.items()})
    return rows


def measure_cold(
    obj: dict[str, Any],
    models: list[tuple[str, str, bool]],
    device: str,
    runs: int,
    threads: int,
) -> dict[str, dict[str, Any]]:
    """Fresh-process first calls on one object: imports + first call, and the whole process's wall time."""
    cases = {
        "grabcut": (
            f"import cv2; cv2.setNumThreads({threads})\nfrom training.baselines import grabcut",
            f"grabcut(image, stroke, margin={MARGIN})",
        ),
        "randomwalker": (
            "from training.baselines import random_walker",
            f"random_walker(image, stroke, margin={MARGIN})",
        ),
    }
    for label, source, _ in models:
        cases[f"refine:{label}"] = (
            "from napari_segmentello import refine",
            f"refine(image, stroke, model={source!r}, device={device!r})",
        )
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        npz = str(Path(tmp) / "object.npz")
        np.savez(npz, image=obj["image"], stroke=obj["stroke"])
        for name, (imports, call) in cases.items():
            code = _COLD.format(imports=imports, npz=npz, call=call)
            runs_ms = []
            for _ in range(runs):
                start = time.perf_counter()
                child = run_child(["-c", code], threads)
                runs_ms.append(
                    {
                        "import_ms": child["import_s"] * 1000,
                        "first_call_ms": child["first_call_s"] * 1000,
                        "cold_ms": (child["import_s"] + child["first_call_s"]) * 1000,
                        "process_ms": (time.perf_counter() - start) * 1000,
                    }
                )
            out[name] = {k: summary([r[k] for r in runs_ms]) for k in runs_ms[0]} | {"runs": runs_ms}
    return out


def ratios(rows: list[dict[str, float]], models: list[tuple[str, str, bool]]) -> dict[str, dict[str, float]]:
    """Per-object speed-up of ours over each baseline (baseline ms / our ms), summarised."""
    out = {}
    for label, _, _ in models:
        for ours in (f"refine:{label}", f"predict:{label}"):
            for base in ("grabcut", "randomwalker"):
                r = np.array([row[base] / row[ours] for row in rows])
                out[f"{base}/{ours}"] = {
                    "median": float(np.median(r)),
                    "p10": float(np.percentile(r, 10)),
                    "p90": float(np.percentile(r, 90)),
                    "ours_faster_share": float(np.mean(r > 1.0)),
                    "n": int(r.size),
                }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.n, args.repeats, args.cold_runs = min(args.n, 2), 1, 1
    for flag in ("n", "repeats", "cold_runs"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    set_threads(args.threads)
    machine = machine_info(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models(args.models, args.stand_in, Path(tmp))
        objects = load_objects(args.n, args.seed)
        rows = measure_warm(objects, models, args.device, args.repeats)
        cold = measure_cold(objects[0], models, args.device, args.cold_runs, args.threads)
    from napari_segmentello.devices import resolve_device

    per_object = [
        {k: v for k, v in obj.items() if k not in ("image", "stroke")} | {"ms": row}
        for obj, row in zip(objects, rows, strict=True)
    ]
    methods = list(rows[0])
    warm = {"all": {m: summary([r[m] for r in rows]) for m in methods}}
    for name in DATASETS:
        subset = [r for r, o in zip(rows, objects, strict=True) if o["dataset"] == name]
        warm[name] = {m: summary([r[m] for r in subset]) for m in methods}
    return {
        "benchmark": "latency",
        "machine": machine | {"load_average_end": list(os.getloadavg())},
        "settings": {
            "quick": args.quick,
            "objects_per_dataset": args.n,
            "datasets": [f"{d} val" for d in DATASETS],
            "protocol": PROTOCOL,
            "repeats": args.repeats,
            "cold_runs": args.cold_runs,
            "device": str(resolve_device(args.device)),
            "seed": args.seed,
            "baseline_margin": MARGIN,
        },
        "models": [{"label": label, "source": source, "stand_in": stand_in} for label, source, stand_in in models],
        "warm_ms": warm,
        "cold_ms": cold,
        "ratios": ratios(rows, models),
        "objects": per_object,
    }


def _name(method: str) -> str:
    kind, _, label = method.partition(":")
    if not label:
        return {"grabcut": "GrabCut (5 it.)", "randomwalker": "random walker"}[kind]
    return ("`refine()`" if kind == "refine" else "`Refiner.predict`") + f" {label}"


def markdown(result: dict[str, Any]) -> str:
    """The latency section: warm per dataset, cold start, and the per-object ratios."""
    s, models = result["settings"], result["models"]
    warm, cold = result["warm_ms"], result["cold_ms"]
    n = {d: warm[d][next(iter(warm[d]))]["n"] for d in DATASETS}
    stand_ins = [f"`{m['label']}` = {STAND_IN_NOTE}. " for m in models if m["stand_in"]]
    lines = [
        "### Latency per object",
        "",
        (
            f"{n[DATASETS[0]]} coco-mini val and {n[DATASETS[1]]} dsb2018-nuclei val objects, one simulated "
            f"{s['protocol']} each (seed {s['seed']}), every method on the same objects, interleaved; our model on "
            f"`{s['device']}`. Warm: median of {s['repeats']} call(s) per object after one untimed call; "
            f"cold: a fresh Python process, imports + first call (median of {s['cold_runs']}). {''.join(stand_ins)}"
        ),
        "",
    ]
    rows = []
    for m in warm["all"]:
        cells = [_name(m)]
        for d in (*DATASETS, "all"):
            w = warm[d][m]
            cells.append(f"{w['median']:.1f} / {w['p90']:.1f}")
        c = cold.get(m)
        if c is None:
            cells.append("–")
        else:
            parts = (c[k]["median"] for k in ("cold_ms", "import_ms", "first_call_ms"))
            cells.append("{:.0f} ({:.0f} + {:.0f})".format(*parts))
        rows.append(cells)
    headers = [
        "method",
        *(f"{d} warm ms median / p90" for d in (*DATASETS, "all")),
        "cold ms (import + first call)",
    ]
    lines += [md_table(headers, rows), ""]
    ratio_rows = []
    for key, r in result["ratios"].items():
        base, _, ours = key.partition("/")
        ratio_rows.append(
            [
                f"{_name(base)} ÷ {_name(ours)}",
                f"{r['median']:.2f}×",
                f"{r['p10']:.2f}×",
                f"{r['p90']:.2f}×",
                f"{r['ours_faster_share'] * 100:.0f} % of {r['n']}",
            ]
        )
    lines += [
        "Speed-up per object (baseline time ÷ our time on the same object; > 1 means ours is faster):",
        "",
        md_table(["ratio", "median", "p10", "p90", "ours faster on"], ratio_rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli_main(args, run, markdown, "latency")


if __name__ == "__main__":
    sys.exit(main())
