"""Latency per propagated frame of ``propagate()`` on real DAVIS-2016 video, beside the engine's own share.

    python -m benchmarks.propagation [--model default] [--frames 20] [--threads 2] [--quick]

Each sequence's first ``--frames`` frames (854×480 RGB, decoded before timing) are
propagated from frame 0's true mask (``refine_start=False``, so every timed frame
is a propagated one). A frame's time is the gap between two ``progress`` calls
of the walk: reading the plane, ``set_image``, the refiner's forward pass(es),
the seed, motion and stop rule. Beside it, on the same frames: one
``Refiner.set_image`` + ``predict_proba`` from the true mask's eroded core, the
engine's cost of one plane, so the difference is what propagation adds. Warm:
after one untimed propagation of the first sequence.
"""

from __future__ import annotations

import argparse
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
    set_threads,
    summary,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.propagation", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="bundled name or checkpoint path (default: the first bundled model)")
    p.add_argument("--stand-in", action="store_true", help=STAND_IN_HELP)
    p.add_argument("--frames", type=int, default=20, help="frames per sequence (default 20)")
    p.add_argument("--sequences", help="comma list (default: every davis2016 sequence)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="CI smoke run: one sequence, 4 frames")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for propagation.json")
    return p


def frame_times(refiner: Any, frames: np.ndarray, start_mask: np.ndarray) -> list[float]:
    """Milliseconds per propagated frame: the gaps between the walk's progress reports after the start plane."""
    from napari_segmentello.propagate import propagate

    reached: dict[int, float] = {}  # planes decided -> when; a stop's trailing reports add no plane
    propagate(
        frames,
        start_mask,
        0,
        refiner=refiner,
        refine_start=False,
        progress=lambda done, total: reached.setdefault(done, time.perf_counter()),
    )
    stamps = [reached[d] for d in sorted(reached)]  # the first: the start plane, taken as given
    return (np.diff(stamps) * 1000).tolist()


def engine_times(refiner: Any, frames: np.ndarray, masks: np.ndarray) -> list[float]:
    """Milliseconds of one ``set_image`` + ``predict_proba`` per frame, from that frame's true eroded core."""
    from napari_segmentello.seeds import EROSION, seed_from_mask

    times = []
    for frame, mask in zip(frames[1:], masks[1:], strict=True):
        seed = seed_from_mask(mask, EROSION)  # untimed: the prompt is not the engine's work
        began = time.perf_counter()
        refiner.set_image(frame)
        refiner.predict_proba(seed)
        times.append((time.perf_counter() - began) * 1000)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    from napari_segmentello.devices import resolve_device
    from napari_segmentello.engine import Refiner
    from training.propagation import load_sequence, sequence_names

    if args.quick:
        args.frames, args.sequences = 4, args.sequences or "car-roundabout"
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2 (a start frame and one to propagate to), got {args.frames}")
    set_threads(args.threads)
    machine = machine_info(args.threads)
    names = args.sequences.split(",") if args.sequences else sequence_names()
    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models(args.model, args.stand_in, Path(tmp))
        label, source, stand_in = models[-1] if args.stand_in else models[0]
        refiner = Refiner(source, args.device)
        videos = {name: load_sequence(name, frames=slice(args.frames)) for name in names}
        frames, masks = videos[names[0]]
        frame_times(refiner, frames, masks[0])  # warm-up
        rows = {}
        for name, (frames, masks) in videos.items():
            rows[name] = {"propagate_ms": frame_times(refiner, frames, masks[0])}
            rows[name]["engine_ms"] = engine_times(refiner, frames, masks)
    every = {k: summary([t for r in rows.values() for t in r[k]]) for k in ("propagate_ms", "engine_ms")}
    return {
        "benchmark": "propagation",
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "frames": args.frames,
            "sequences": names,
            "frame_shape": list(frames.shape[1:]),
            "device": str(resolve_device(args.device)),
        },
        "model": {"label": label, "source": source, "stand_in": stand_in},
        "all": every,
        "sequences": {n: {k: summary(v) for k, v in r.items()} for n, r in rows.items()},
    }


def markdown(result: dict[str, Any]) -> str:
    """Per sequence and overall: ms per propagated frame, and the engine's one-plane share."""
    s, m = result["settings"], result["model"]
    model = f"`{m['label']}`" + (f" ({STAND_IN_NOTE})" if m["stand_in"] else "")
    h, w, _ = s["frame_shape"]

    def cells(row: dict[str, Any]) -> list[str]:
        p, e = row["propagate_ms"], row["engine_ms"]
        return [f"{p['median']:.0f}", f"{p['p90']:.0f}", f"{e['median']:.0f}", str(p["n"])]

    body = [[name, *cells(row)] for name, row in result["sequences"].items()]
    body.append(["**all**", *cells(result["all"])])
    headers = ["sequence", "ms / frame (median)", "p90", "engine: set_image + predict_proba ms", "frames"]
    return (
        "\n".join(
            [
                "### Propagation latency per frame",
                "",
                (
                    f"`propagate()` with {model} on `{s['device']}`, the first {s['frames']} frames of each DAVIS-2016 "
                    f"sequence ({w}×{h} RGB), started from frame 0's true mask; a frame's time is the gap between two "
                    "progress calls. The engine column is one `set_image` + `predict_proba` on the same frames."
                ),
                "",
                md_table(headers, body),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser().parse_args(argv), run, markdown, "propagation")


if __name__ == "__main__":
    sys.exit(main())
