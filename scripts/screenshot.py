"""Take the README screenshot: napari with the coins sample, the widget docked, one refine run.

Needs a display; on a headless machine run it under a virtual one:

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshot.py

``--model`` takes a bundled name or a checkpoint path (default: the bundled "default").
``--boxes`` shows Box mode instead: a rectangle drawn around three coins, refined with the
bundled object-aware ``default`` (``-o docs/screenshot-boxes.png``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
import time
from pathlib import Path

# No warning pop-ups over the canvas (an environment override: the user's napari settings stay as they are).
os.environ.setdefault("NAPARI_APPLICATION_GUI_NOTIFICATION_LEVEL", "error")

import napari  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402
from skimage.io import imsave  # noqa: E402

import numpy as np  # noqa: E402

from napari_segmentello._sample_data import load_sample, make_sample_data  # noqa: E402
from napari_segmentello._widget import SegmentelloWidget  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="bundled model name or checkpoint path")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--boxes", action="store_true", help="Box mode: three coins from their boxes")
    args = parser.parse_args()

    viewer = napari.Viewer(title="napari-segmentello")
    viewer.window.resize(1300, 800)
    for data, kwargs, kind in make_sample_data():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SegmentelloWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Stroke refiner (Segmentello)", area="right")
    if args.model != "default":
        widget.model_combo.add_model(args.model)
    widget.device_combo.setCurrentText("cpu")

    notification_manager.notification_ready.connect(lambda note: print(f"napari: {note.message}"))

    if args.boxes:
        viewer.layers[widget.strokes_combo.currentText()].data = np.zeros_like(load_sample()[1])  # boxes only
        boxes = widget.prompting.box_mode()
        reference = load_sample()[2]
        for k in np.unique(reference)[1:4]:  # the first three coins
            rows, cols = np.nonzero(reference == k)
            boxes.add_rectangles(np.array([[rows.min() - 3, cols.min() - 3], [rows.max() + 3, cols.max() + 3]], float))
            done = len(boxes.data)
            _wait(lambda n=done: widget.busy or _ids(viewer, widget) < n)
    else:
        widget.prompting.refine_button.click()
    _wait(lambda: widget.busy)
    name = f"{widget.image_combo.currentText()} refined"
    if name not in viewer.layers:
        raise SystemExit(f"refining failed: no layer {name!r} (see the napari message above)")
    strokes = viewer.layers[widget.strokes_combo.currentText()]
    viewer.layers.move(viewer.layers.index(strokes), len(viewer.layers))  # strokes drawn on top
    viewer.layers.selection.active = strokes
    viewer.reset_view()
    QApplication.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.output, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    print(f"screenshot written to {args.output}")
    viewer.close()
    return 0


def _ids(viewer: napari.Viewer, widget: SegmentelloWidget) -> int:
    """Objects in the output layer so far (0 before it exists)."""
    name = f"{widget.image_combo.currentText()} refined"
    return len(np.unique(viewer.layers[name].data)) - 1 if name in viewer.layers else 0


def _wait(busy: Callable[[], bool]) -> None:
    """Let Qt run until the widget's worker is done (or ``TIMEOUT_S`` passes)."""
    QApplication.processEvents()
    deadline = time.monotonic() + TIMEOUT_S
    while busy() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    raise SystemExit(main())
