"""The model and device pickers: bundled models, then checkpoints and modules added later, "Load checkpoint…" last."""

from __future__ import annotations

import os
from pathlib import Path

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget
import torch
from torch import nn

from napari_segmentello.loader import list_models, load_model

LOAD_CHECKPOINT = "Load checkpoint…"


def available_devices() -> list[str]:
    """Devices this machine can run on, fastest first."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def message(exc: BaseException) -> str:
    """The engine's own words (``str(KeyError)`` would add quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


class ModelPicker(QComboBox):
    """Each item's data is what :class:`~napari_segmentello.engine.Refiner` takes: a name, a path or a module."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        for name in list_models() or ["default"]:  # "default" alone: the engine explains how to get weights
            self.addItem(name, name)
        self.addItem(LOAD_CHECKPOINT, None)
        self.setCurrentIndex(0)
        self._last = 0
        self.activated.connect(self._on_activated)

    def add_model(self, model: str | os.PathLike | nn.Module, name: str | None = None, select: bool = True) -> None:
        """Offer (and pick) a checkpoint path or an ``nn.Module`` with ``.spec``."""
        label = name or (Path(model).name if isinstance(model, str | os.PathLike) else type(model).__name__)
        at = self.count() - 1  # keep "Load checkpoint…" last
        self.insertItem(at, label, model)
        if select:
            self.setCurrentIndex(at)
            self._last = at

    def _on_activated(self, index: int) -> None:
        if self.itemText(index) != LOAD_CHECKPOINT:
            self._last = index
            return
        self.setCurrentIndex(self._last)
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)")
        if not path:
            return
        try:
            load_model(path, device="cpu")  # fail now, with the file's name, rather than at Refine
        except (ValueError, KeyError, OSError) as exc:
            show_error(message(exc))
            return
        self.add_model(path)
