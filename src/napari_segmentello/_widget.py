"""The napari dock widget: pick image, strokes, model and device, then refine in a worker thread.

Thin on purpose: it reads the displayed plane out of the layers, hands it to the
engine (:class:`napari_segmentello.engine.Refiner`) in a ``thread_worker`` and
writes the result into a ``<image> refined`` Labels layer as one undo step.
The user's stroke layer is only ever read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_segmentello import _qt_layers as ql
from napari_segmentello.engine import Refiner, list_models, load_model

LIVE_DELAY_MS = 300
LOAD_CHECKPOINT = "Load checkpoint…"


def available_devices() -> list[str]:
    """Devices this machine can run on, fastest first."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def _refine_job(model: Any, device: str, threshold: float, image: Any, strokes: np.ndarray) -> Iterator[None]:
    """Worker body; it yields between steps so that ``quit()`` takes effect before the next one."""
    refiner = Refiner(model, device, threshold)
    yield
    refiner.set_image(image)
    yield
    return refiner.predict_labels(strokes)


def _message(exc: BaseException) -> str:
    """The engine's own words (``str(KeyError)`` would add quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


class SegmentelloWidget(QWidget):
    """Dock widget: paint a stroke per object into a Labels layer, press Refine (or refine as you paint)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self._watched: Labels | None = None
        self._pending: set[int] = set()
        self._docked = False

        self.image_combo = QComboBox()
        self.strokes_combo = QComboBox()
        self.new_strokes_button = QPushButton("New stroke layer")
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.05, 0.95)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.refine_button = QPushButton("Refine")
        self.live_checkbox = QCheckBox("Refine as I paint")
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)

        for name in list_models() or ["default"]:  # "default" alone: the engine explains how to get weights
            self.model_combo.addItem(name, name)
        self.model_combo.addItem(LOAD_CHECKPOINT, None)
        self._last_model = 0

        strokes_row = QHBoxLayout()
        strokes_row.addWidget(self.strokes_combo, 1)
        strokes_row.addWidget(self.new_strokes_button)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("strokes", strokes_row)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("threshold", self.threshold_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.refine_button)
        layout.addWidget(self.live_checkbox)
        layout.addStretch(1)

        self.new_strokes_button.clicked.connect(self.new_stroke_layer)
        self.refine_button.clicked.connect(lambda: self.refine())
        self.strokes_combo.currentIndexChanged.connect(self._watch_strokes)
        self.model_combo.activated.connect(self._on_model_activated)
        self._live_timer.timeout.connect(self._on_live_timeout)
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            emitter.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- layer pickers -------------------------------------------------------------------------

    def _refresh_layers(self, event: Any = None) -> None:
        """Re-list the layers, keeping the current picks when they still exist."""
        layers = self.viewer.layers
        _set_choices(self.image_combo, [layer.name for layer in layers if isinstance(layer, Image)])
        strokes = [layer.name for layer in layers if isinstance(layer, Labels) and not ql.is_output(layer)]
        _set_choices(self.strokes_combo, strokes)
        self._watch_strokes()

    def _picked(self, combo: QComboBox, kind: type, what: str) -> Any:
        name = combo.currentText()
        if not name or name not in self.viewer.layers or not isinstance(self.viewer.layers[name], kind):
            raise ValueError(f"no {what} picked: {_HINTS[what]}")
        return self.viewer.layers[name]

    def image_layer(self) -> Image:
        return self._picked(self.image_combo, Image, "image layer")

    def strokes_layer(self) -> Labels:
        return self._picked(self.strokes_combo, Labels, "stroke layer")

    def new_stroke_layer(self) -> Labels | None:
        """Add an empty Labels layer matching the image, in paint mode with label 1, ready for a stroke."""
        try:
            image = self.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return None
        data = np.zeros(ql.spatial_shape(image), np.uint16)
        layer = self.viewer.add_labels(data, name=f"{image.name} strokes", scale=image.scale, translate=image.translate)
        layer.selected_label = 1
        layer.brush_size = max(3, min(ql.spatial_shape(image)[-2:]) // 60)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        self.strokes_combo.setCurrentText(layer.name)
        return layer

    # ---- model picker --------------------------------------------------------------------------

    def add_model(self, model: str | os.PathLike | torch.nn.Module, name: str | None = None) -> None:
        """Offer (and pick) a checkpoint path or an ``nn.Module`` with ``.spec`` in the model picker."""
        label = name or (Path(model).name if isinstance(model, str | os.PathLike) else type(model).__name__)
        at = self.model_combo.count() - 1  # keep "Load checkpoint…" last
        self.model_combo.insertItem(at, label, model)
        self.model_combo.setCurrentIndex(at)
        self._last_model = at

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != LOAD_CHECKPOINT:
            self._last_model = index
            return
        self.model_combo.setCurrentIndex(self._last_model)
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)")
        if not path:
            return
        try:
            load_model(path, device="cpu")  # fail now, with the file's name, rather than at Refine
        except (ValueError, KeyError, OSError) as exc:
            show_error(_message(exc))
            return
        self.add_model(path)

    # ---- refining ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def refine(self, ids: set[int] | None = None) -> None:
        """Refine the displayed plane: every stroke id, or only ``ids`` (the rest of the output is kept)."""
        if self.busy:
            return
        try:
            self._start(ids)
        except (ValueError, KeyError) as exc:
            show_error(_message(exc))

    def _start(self, ids: set[int] | None) -> None:
        image, strokes = self.image_layer(), self.strokes_layer()
        ql.check_strokes(strokes, image)
        index = ql.displayed_plane(self.viewer, image)
        plane = np.array(strokes.data[index])  # a copy: painting may go on while the worker runs
        if ids is not None:
            plane = np.where(np.isin(plane, list(ids)), plane, 0).astype(plane.dtype)
            if not plane.any():  # every touched object was erased: just clear it from the output
                self._write(image, strokes, index, ids, np.zeros_like(plane))
                return
        n_objects = np.unique(plane[plane != 0]).size
        self.worker = create_worker(
            _refine_job,
            self.model_combo.currentData(),
            self.device_combo.currentText(),
            self.threshold_spin.value(),
            ql.image_data(image)[index],  # H×W or H×W×C; dask/zarr stay lazy
            plane,
            _progress={"total": 0, "desc": f"Segmentello: refining {n_objects} objects"} if n_objects > 1 else None,
            _connect={
                "returned": lambda out: self._write(image, strokes, index, ids, out),
                "errored": lambda exc: show_error(_message(exc)),
                "finished": self._on_finished,
            },
            _start_thread=False,
        )
        self.refine_button.setEnabled(False)
        self.worker.start()

    def _write(self, image: Image, strokes: Labels, index: ql.Index, ids: set[int] | None, out: np.ndarray) -> None:
        if image not in self.viewer.layers:
            return
        try:
            target = ql.output_layer(self.viewer, image, strokes)
            current = np.asarray(target.data[index])
            ql.write_plane(target, index, out if ids is None else ql.replace_ids(current, out, ids))
        except ValueError as exc:
            show_error(_message(exc))

    def _on_finished(self) -> None:
        self.worker = None
        self.refine_button.setEnabled(True)

    # ---- refine as I paint ---------------------------------------------------------------------

    def _watch_strokes(self, *_: Any) -> None:
        """Follow paint events of the picked stroke layer only."""
        try:
            layer = self.strokes_layer()
        except ValueError:
            layer = None
        if layer is self._watched:
            return
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
        self._watched, self._pending = layer, set()
        if layer is not None:
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, event: Any) -> None:
        if not self.live_checkbox.isChecked():
            return
        self._pending |= ql.painted_ids(getattr(event, "value", None))
        if self._pending:
            self._live_timer.start()  # restarts: refine once painting pauses

    def _on_live_timeout(self) -> None:
        if self.busy:
            self._live_timer.start()
            return
        ids, self._pending = self._pending, set()
        self.refine(ids)

    # ---- closing -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the worker and every connection; called when the widget is closed or undocked (idempotent)."""
        self._live_timer.stop()
        if self.worker is not None:
            self.worker.quit()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            emitter.disconnect(self._refresh_layers)
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
            self._watched = None

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        # napari's close button on a dock widget un-parents it (no closeEvent): treat that as closing.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)


_HINTS = {
    "image layer": "open an image (or File → Open Sample → Segmentello) and pick it",
    "stroke layer": "pick a Labels layer with your strokes, or press 'New stroke layer' and paint",
}


def _set_choices(combo: QComboBox, names: list[str]) -> None:
    """Replace a combo's items without losing its current pick (and with one change signal at most)."""
    current = combo.currentText()
    if [combo.itemText(i) for i in range(combo.count())] == names:
        return
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
    combo.currentIndexChanged.emit(combo.currentIndex())
