"""Widget round trip: from pressing 'Refine' to the new ``<image> refined`` layer holding the result.

    xvfb-run -a python -m benchmarks.widget_roundtrip [--model default|PATH] [--repeats 10] [--show]

A napari viewer (hidden unless ``--show``) with the bundled coins sample (three
strokes) and the docked :class:`SegmentelloWidget`. Each timed click runs
the Qt event loop until the result is in the output layer: once into a new
layer (deleted before the click; the widget creates it and writes into it in
one main-thread callback), once into the existing layer (zeroed before the
click; done when the worker reports finished, which Qt delivers after the
write). The first click loads the model (cold). The engine alone
(``Refiner.set_image`` + ``predict_labels`` on the same plane) is timed too,
so the widget's own overhead is the difference.
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
    set_threads,
    summary,
)

OUTPUT = "coins refined"
TIMEOUT_S = 120.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.widget_roundtrip",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--model",
        help="bundled name or checkpoint path (default: the first bundled model)",
    )
    p.add_argument("--stand-in", action="store_true", help=STAND_IN_HELP)
    p.add_argument("--repeats", type=int, default=10, help="warm round trips (default 10)")
    p.add_argument("--device", default="cpu", help="the widget's device choice (default cpu)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--show",
        action="store_true",
        help="show the viewer window (rendering included)",
    )
    p.add_argument("--quick", action="store_true", help="CI smoke run: 2 warm round trips")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for widget_roundtrip.json")
    return p


def _wait(app: Any, widget: Any, start: float, arrived: Callable[[], bool]) -> float:
    """Seconds from ``start`` until ``arrived()``; then the worker is let finish."""
    from qtpy.QtCore import QEventLoop, QTimer

    heartbeat = QTimer()  # wakes the blocking wait now and then, so a silent failure times out
    heartbeat.start(100)
    try:
        done = None
        while done is None or widget.busy:
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
            if done is None and arrived():
                done = time.perf_counter() - start
            if time.perf_counter() - start > TIMEOUT_S:
                raise RuntimeError(f"no result in the '{OUTPUT}' layer after {TIMEOUT_S:.0f} s")
        if done is None:
            raise RuntimeError(f"the widget finished without writing the '{OUTPUT}' layer (see its notifications)")
        return done
    finally:
        heartbeat.stop()


def _click(app: Any, viewer: Any, widget: Any, new_layer: bool) -> float:
    """One Refine round trip in milliseconds, into a new output layer or into the existing one (zeroed)."""
    if new_layer and OUTPUT in viewer.layers:
        viewer.layers.remove(OUTPUT)
    elif not new_layer:
        viewer.layers[OUTPUT].data = np.zeros_like(viewer.layers[OUTPUT].data)
    app.processEvents()
    start = time.perf_counter()
    widget.prompting.refine_button.click()

    def arrived() -> bool:
        # a new layer is created and written in one main-thread callback; into an existing
        # layer, the worker's "finished" is delivered after its "returned" (the write)
        return OUTPUT in viewer.layers if new_layer else not widget.busy

    return _wait(app, widget, start, arrived) * 1000


def round_trips(model: str, device: str, repeats: int, show: bool) -> dict[str, Any]:
    """Cold (first click) and warm round trips in milliseconds, and the engine-only times."""
    import napari

    from napari_segmentello._sample_data import load_sample
    from napari_segmentello._widget import SegmentelloWidget
    from napari_segmentello.engine import Refiner

    image, strokes, _ = load_sample()
    viewer = napari.Viewer(show=show)
    try:
        app = napari.qt.get_qapp()
        viewer.add_image(image, name="coins")
        viewer.add_labels(strokes, name="coins strokes")
        widget = SegmentelloWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.model_combo.add_model(model, name="benchmark")
        widget.device_combo.setCurrentText(device)
        cold = _click(app, viewer, widget, new_layer=True)
        fresh, again = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            fresh.append(_click(app, viewer, widget, new_layer=True))
            again.append(_click(app, viewer, widget, new_layer=False))
        widget.close()
    finally:
        viewer.close()
    engine = []
    refiner = Refiner(model, device)
    for _ in range(repeats):
        start = time.perf_counter()
        refiner.set_image(image)
        refiner.predict_labels(strokes)
        engine.append((time.perf_counter() - start) * 1000)
    return {
        "cold_ms": cold,
        "warm_new_layer_ms": summary(fresh),
        "warm_existing_layer_ms": summary(again),
        "engine_ms": summary(engine),
        "strokes": int(np.unique(strokes[strokes != 0]).size),
        "image_shape": list(image.shape),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.repeats = 2
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") not in (
        "offscreen",
        "minimal",
    ):
        raise ValueError("no display: run it under a virtual X server (`xvfb-run -a python -m benchmarks.NAME`)")
    set_threads(args.threads)
    machine = machine_info(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        models = resolve_models(args.model, args.stand_in, Path(tmp))
        label, source, stand_in = models[-1] if args.stand_in else models[0]
        trips = round_trips(source, args.device, args.repeats, args.show)
    return {
        "benchmark": "widget_roundtrip",
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "device": args.device,
            "shown": args.show,
            "display": os.environ.get("DISPLAY"),
            "sample": "coins (bundled), 3 strokes",
        },
        "model": {"label": label, "source": source, "stand_in": stand_in},
        **trips,
    }


def markdown(result: dict[str, Any]) -> str:
    s, m = result["settings"], result["model"]
    model = f"`{m['label']}`" + (f" ({STAND_IN_NOTE})" if m["stand_in"] else "")
    h, w = result["image_shape"]
    rows = [["first Refine (model load, new layer)", f"{result['cold_ms']:.0f}", "–"]]
    for key, what in (
        ("warm_new_layer_ms", "Refine into a new output layer"),
        ("warm_existing_layer_ms", "Refine again into the existing output layer"),
        ("engine_ms", "engine alone: `set_image` + `predict_labels`"),
    ):
        r = result[key]
        rows.append([f"{what} (n={r['n']})", f"{r['median']:.0f}", f"{r['p90']:.0f}"])
    lines = [
        "### Widget round trip",
        "",
        (
            f"napari viewer ({'shown' if s['shown'] else 'hidden'}) under Xvfb, the bundled coins sample ({h}×{w}, "
            f"{result['strokes']} strokes refined together), model {model} on `{s['device']}`: from clicking "
            "**Refine** to the `coins refined` layer holding the result."
        ),
        "",
        md_table(["", "median ms", "p90 ms"], rows),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli_main(args, run, markdown, "widget_roundtrip")


if __name__ == "__main__":
    sys.exit(main())
