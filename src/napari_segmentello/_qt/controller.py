"""The widget's controller: which image, strokes (and erase label), model, device and threshold; one worker at a time.

Panels read their inputs through it and start their job with :meth:`Controller.run`; its
signals tell them when to re-check their buttons, re-watch layers or disconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.pickers import ModelPicker, available_devices, message
from napari_segmentello.finetune import FinetuneCancelled

BUSY_BAR_MS = 300  # a job still running after this long gets a busy bar; a quicker one would only flicker it
ERASE_ID = 255  # stroke label reserved for "not this": the top uint8 value, clear of the ids 1, 2, 3… of objects
_HINTS = {
    "image layer": "open an image (or File → Open Sample → Segmentello) and pick it",
    "stroke layer": "pick a Labels layer with your strokes, or press 'New stroke layer' and paint",
}


class Stopped(Exception):
    """Raised from a progress callback to end a job the user stopped (or whose widget was closed)."""


class Controller(QWidget):
    """Layer, model and device pickers, and the worker; panels are added below with :meth:`add_panel`."""

    layers_changed = Signal()  # the layer list or the picks changed: re-watch the layers you follow
    state_changed = Signal()  # a job started or ended, or another image was picked: re-check your buttons
    closing = Signal()  # the widget was closed or undocked: disconnect from the viewer
    _report = Signal(int, int, str)  # a worker's progress, queued to the GUI thread

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self._stop = threading.Event()
        self._pbar: progress | None = None
        self._pbar_desc = ""
        self._busy_desc: str | None = None
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.timeout.connect(self._show_busy_bar)
        self._closed = False
        self._docked = False

        self.image_combo = QComboBox()
        self.strokes_combo = QComboBox()
        self.new_strokes_button = QPushButton("New stroke layer")
        self.erase_spin = QSpinBox()
        self.erase_spin.setRange(1, 65535)
        self.erase_spin.setValue(ERASE_ID)
        self.erase_spin.setToolTip("stroke label meaning 'not this object': paint it over a wrong part of a result")
        self.rough_checkbox = QCheckBox("Rough masks")
        self.rough_checkbox.setToolTip(
            "what you paint covers each whole object roughly, edge to edge (or a filled lasso): its edge is "
            "moved to the object's, instead of the object being found around a stroke (Refine and Propagate)"
        )
        self.model_combo = ModelPicker()
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.05, 0.95)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("end the running propagation or finetuning; it writes and saves nothing")
        self.stop_button.setEnabled(False)

        strokes_row = QHBoxLayout()
        strokes_row.addWidget(self.strokes_combo, 1)
        strokes_row.addWidget(self.new_strokes_button)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("strokes", strokes_row)
        form.addRow("erase label", self.erase_spin)
        form.addRow("", self.rough_checkbox)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("threshold", self.threshold_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.stop_button)
        layout.addStretch(1)

        self.new_strokes_button.clicked.connect(self.new_stroke_layer)
        self.stop_button.clicked.connect(self.stop)
        self.image_combo.currentIndexChanged.connect(self.state_changed)
        self.strokes_combo.currentIndexChanged.connect(self.layers_changed)
        self._report.connect(self._on_progress)
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            emitter.connect(self._refresh_layers)
        self._refresh_layers()

    def add_panel(self, panel: QWidget) -> None:
        """Lay ``panel`` out below the pickers and above Stop."""
        layout = self.layout()
        layout.insertWidget(layout.indexOf(self.stop_button), panel)

    # ---- layers --------------------------------------------------------------------------------

    def _refresh_layers(self, event: Any = None) -> None:
        """Re-list the layers, keeping the current picks when they still exist."""
        layers = self.viewer.layers
        _set_choices(self.image_combo, [layer.name for layer in layers if isinstance(layer, Image)])
        strokes = [layer.name for layer in layers if isinstance(layer, Labels) and not ql.is_output(layer)]
        _set_choices(self.strokes_combo, strokes)
        self.layers_changed.emit()
        self.state_changed.emit()

    def _picked(self, combo: QComboBox, kind: type, what: str) -> Any:
        name = combo.currentText()
        if not name or name not in self.viewer.layers or not isinstance(self.viewer.layers[name], kind):
            raise ValueError(f"no {what} picked: {_HINTS[what]}")
        return self.viewer.layers[name]

    def image_layer(self) -> Image:
        return self._picked(self.image_combo, Image, "image layer")

    def strokes_layer(self) -> Labels:
        return self._picked(self.strokes_combo, Labels, "stroke layer")

    def layer_named(self, name: str, kind: type) -> Any:
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, kind) else None

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

    # ---- the worker ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def model_args(self) -> tuple[Any, str, float]:
        """(model, device, threshold) as picked: the arguments of a :class:`~napari_segmentello.engine.Refiner`."""
        return self.model_combo.currentData(), self.device_combo.currentText(), self.threshold_spin.value()

    def run(
        self,
        job: Callable,
        *args: Any,
        _connect: dict,
        stoppable: bool = False,
        busy: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Start ``job`` in a worker thread, with the action buttons off until it ends.

        A ``stoppable`` job gets ``report(done, total, note)`` for the progress bar and
        ``stop``, an event of its own that Stop and closing the widget set. With ``busy`` (a
        description) a job still running after ``BUSY_BAR_MS`` shows a busy bar: a refine that
        ends sooner never animates one, which took about a third of a three-object refine of the
        coins sample on two cores (``benchmarks.widget_roundtrip``, into the existing layer:
        113-119 ms with the bar from the start, 72-90 ms without).
        """
        self._stop = threading.Event()
        if stoppable:
            kwargs.update(report=self._report.emit, stop=self._stop)
        self.worker = create_worker(
            job,
            *args,
            **kwargs,
            _connect={"errored": self._on_error, "finished": self._on_finished, **_connect},
            _start_thread=False,
        )
        self.state_changed.emit()
        self.stop_button.setEnabled(stoppable)
        self._busy_desc = busy
        if busy is not None:
            self._busy_timer.start(BUSY_BAR_MS)
        self.worker.start()

    def _show_busy_bar(self) -> None:
        if self.worker is not None and self._pbar is None and self._busy_desc is not None:
            self.progress_bar(self._busy_desc)

    def progress_bar(self, desc: str) -> None:
        """A napari progress bar (activity dock) that the job's reports move; closed when the job ends."""
        self._pbar, self._pbar_desc = progress(total=0, desc=desc), desc

    def _on_progress(self, done: int, total: int, note: str) -> None:
        bar = self._pbar
        if bar is None:
            return
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)  # may process Qt events, in which the job can end and close the bar
        wanted = f"{self._pbar_desc} ({note})" if note else self._pbar_desc  # a note lasts until the next report
        if self._pbar is bar and bar.desc.removesuffix(": ") != wanted:  # tqdm's set_description adds ": "
            bar.set_description(wanted)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Stopped | FinetuneCancelled):
            show_info("Segmentello: stopped; nothing was written")
        elif not self._closed:
            show_error(message(exc))

    def _on_finished(self) -> None:
        self.worker = None
        self._busy_timer.stop()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.stop_button.setEnabled(False)
        self.state_changed.emit()

    def stop(self) -> None:
        """Ask the running job to end; a stoppable one writes and saves nothing."""
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()

    # ---- closing -------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the worker and every connection; called when the widget is closed or undocked (idempotent)."""
        self._closed = True
        self.stop()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            emitter.disconnect(self._refresh_layers)
        self.closing.emit()

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
