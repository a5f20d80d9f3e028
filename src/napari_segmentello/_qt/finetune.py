"""The finetuning panel: "Finetune on my labels…" asks which finished masks to learn from, for how long
and where to save; :func:`finetune_job` runs :func:`napari_segmentello.finetune.finetune` in the controller's
worker and the saved model joins the model picker (as do those in :data:`FINETUNED_DIR` at start).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.controller import Controller
from napari_segmentello.finetune import finetune

DEFAULT_MINUTES = 2.0
FINETUNED_DIR = Path("~/.napari-segmentello/models").expanduser()


def default_path(folder: Path, model: str) -> Path:
    """``<folder>/<model>-finetuned-<timestamp>.pt``: a new file per run, named after its source."""
    stem = re.sub(r"[^\w.-]+", "-", Path(model).stem).strip("-") or "model"
    return folder / f"{stem}-finetuned-{time.strftime('%Y%m%d-%H%M%S')}.pt"


def finetune_job(
    image: Image,
    layers: list[Labels],
    model: Any,
    device: str,
    minutes: float,
    out: Path,
    *,
    report: Callable,
    stop: Any,
) -> Path:
    """Worker body: the picked masks' planes as (image, labels) pairs, finetuned on; returns the saved checkpoint."""
    pairs = ql.training_pairs(image, layers)

    def step(done: int, total: int, loss: float) -> None:
        report(done, total, f"loss {loss:.3f}")

    return finetune(pairs, model=model, out=out, minutes=minutes, device=device, progress=step, should_stop=stop.is_set)


class FinetuneDialog(QDialog):
    """Pick Labels layers drawn on ``image`` (its refined output pre-checked), a time budget and an output file."""

    def __init__(self, viewer: Any, image: Image, out: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Finetune on masks of {image.name!r}")
        shape = ql.spatial_shape(image)
        self._layers: list[Labels] = []
        self.layers_list = QListWidget()
        for layer in viewer.layers:
            if isinstance(layer, Labels) and not layer.multiscale and tuple(layer.data.shape) == shape:
                item = QListWidgetItem(layer.name)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                mine = ql.is_output(layer) and layer.name == f"{image.name} refined"
                item.setCheckState(Qt.CheckState.Checked if mine else Qt.CheckState.Unchecked)
                self.layers_list.addItem(item)
                self._layers.append(layer)
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(0.1, 240.0)
        self.minutes_spin.setDecimals(1)
        self.minutes_spin.setSuffix(" min")
        self.minutes_spin.setValue(DEFAULT_MINUTES)
        self.out_edit = QLineEdit(str(out))
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Finetune")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.layers_list.itemChanged.connect(self._update_ok)
        self.out_edit.textChanged.connect(self._update_ok)

        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        form = QFormLayout(self)
        form.addRow("finished masks", self.layers_list)
        form.addRow("train for", self.minutes_spin)
        form.addRow("save as", out_row)
        form.addRow(self.buttons)
        self._update_ok()

    def picked_layers(self) -> list[Labels]:
        return [
            layer
            for i, layer in enumerate(self._layers)
            if self.layers_list.item(i).checkState() == Qt.CheckState.Checked
        ]

    def minutes(self) -> float:
        return self.minutes_spin.value()

    def output_path(self) -> Path:
        return Path(self.out_edit.text()).expanduser()

    def _update_ok(self, *_: Any) -> None:
        """Finetuning needs at least one layer of masks and a file name."""
        ok = bool(self.picked_layers()) and bool(self.out_edit.text().strip())
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save finetuned model", self.out_edit.text(), "Checkpoints (*.pt)")
        if path:
            self.out_edit.setText(path)


class FinetunePanel(QWidget):
    """ "Finetune on my labels…": the dialog, then a stoppable finetuning job whose model is picked when saved."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.finetune_dir = FINETUNED_DIR
        for path in sorted(self.finetune_dir.glob("*.pt"), key=lambda p: p.stat().st_mtime):
            controller.model_combo.add_model(path, select=False)  # models finetuned earlier
        self.finetune_button = QPushButton("Finetune on my labels…")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.finetune_button)
        self.finetune_button.clicked.connect(self.open_finetune)
        controller.state_changed.connect(lambda: self.finetune_button.setEnabled(not controller.busy))

    def open_finetune(self) -> None:
        """Ask which finished Labels layers to learn from, for how long and where to save, then finetune."""
        if self.controller.busy:
            return
        try:
            image = self.controller.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return
        out = default_path(self.finetune_dir, self.controller.model_combo.currentText())
        dialog = FinetuneDialog(self.controller.viewer, image, out, parent=self)
        if dialog.exec_() == QDialog.Accepted:
            self.finetune(dialog.picked_layers(), dialog.minutes(), dialog.output_path())

    def finetune(self, layers: list[Labels], minutes: float, out: str | os.PathLike) -> None:
        """Finetune the picked model on ``layers`` (masks of the picked image) in a worker; the result is picked."""
        c = self.controller
        if c.busy:
            return
        try:
            image = c.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return
        model, device, _ = c.model_args()
        c.progress_bar("Segmentello: finetuning")
        c.run(
            finetune_job,
            image,
            list(layers),
            model,
            device,
            float(minutes),
            Path(out).expanduser(),
            _connect={"returned": self._on_finetuned},
            stoppable=True,
        )

    def _on_finetuned(self, path: Path) -> None:
        if self.controller.closed:
            return
        self.controller.model_combo.add_model(path)
        show_info(f"finetuned model saved to {path}; it is now picked in the model list")
