"""The stack panel: follow the displayed plane's objects up and down a stack with
:func:`~napari_segmentello.propagate.propagate`, written as one undo step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.controller import Controller, Stopped
from napari_segmentello._qt.pickers import message
from napari_segmentello._qt.refine import Refined, read_drawn
from napari_segmentello.engine import Refiner
from napari_segmentello.propagate import propagate


def propagate_job(
    model: Any,
    device: str,
    threshold: float,
    volume: Any,
    objects: np.ndarray,
    at: int,
    *,
    rough: bool,
    adapt: float = 0.0,
    report: Callable,
    stop: Any,
) -> Refined:
    """Every object on the displayed plane propagated through ``volume`` (Z, H, W[, C]); ties go to the lower id.

    With ``rough`` each object's paint is a rough mask of it; with ``adapt`` seconds the model is adapted
    to each object's start plane first (see :func:`propagate`).
    """
    refiner = Refiner(model, device, threshold)
    ids = sorted(set(np.unique(objects[objects != 0]).tolist()))
    out = np.zeros((volume.shape[0], *objects.shape), objects.dtype)
    for n, k in enumerate(ids):

        def step(done: int, total: int, n: int = n) -> None:
            if stop.is_set():
                raise Stopped
            # between the start plane (the first decided) and the next, propagate() is adapting the model
            note = f"object {n + 1}: adapting to this plane for {adapt:g} s" if adapt and done == 1 else ""
            report(n * total + done, len(ids) * total, note)

        mask = propagate(volume, objects == k, at, refiner=refiner, rough=rough, adapt=adapt, progress=step)
        out[mask & (out == 0)] = k
    return Refined(out, set(ids), ())


ADAPT_TIP = (
    "seconds spent, per object, finetuning a copy of the model on this plane's result before following it "
    "(off: the model as it is). It learns this object against this background and drifts less: on five "
    "DAVIS-2016 videos 30 s raised J from one stroke from 0.64 to 0.70 (README, Propagation)"
)


class StackPanel(QWidget):
    """ "Propagate through stack", enabled for images with a stack axis while no job runs."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.propagate_button = QPushButton("Propagate through stack")
        self.propagate_button.setToolTip("refine this plane's strokes, then follow each object up and down the stack")
        self.adapt_spin = QSpinBox()
        self.adapt_spin.setRange(0, 600)
        self.adapt_spin.setSuffix(" s")
        self.adapt_spin.setSpecialValueText("off")
        self.adapt_spin.setToolTip(ADAPT_TIP)
        adapt_row = QHBoxLayout()
        adapt_row.addWidget(QLabel("adapt to this plane"))
        adapt_row.addWidget(self.adapt_spin, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(adapt_row)
        layout.addWidget(self.propagate_button)
        self.propagate_button.clicked.connect(self.propagate)
        controller.state_changed.connect(self._update_button)
        self._update_button()

    def _update_button(self) -> None:
        try:
            stack = len(ql.spatial_shape(self.controller.image_layer())) >= 3
        except ValueError:
            stack = False
        self.propagate_button.setEnabled(stack and not self.controller.busy)
        self.adapt_spin.setEnabled(stack)

    def propagate(self) -> None:
        """Refine the displayed plane's objects and follow each up and down the stack; one undo step.

        The stack runs along the slider nearest the displayed axes (z of t-z-y-x). It starts
        from the plane's strokes and clicks; erase strokes and earlier results play no part.
        """
        if self.controller.busy:
            return
        try:
            self._start()
        except (ValueError, KeyError) as exc:
            show_error(message(exc))

    def _start(self) -> None:
        c = self.controller
        image, strokes = c.image_layer(), c.strokes_layer()
        ql.check_strokes(strokes, image)
        index = ql.displayed_plane(c.viewer, image)
        stack, axis, at = ql.stack_index(index)
        objects = read_drawn(c, image, strokes, index).objects
        if not objects.any():
            raise ValueError("paint a stroke (or click) on this plane first: propagation starts from it")
        volume = np.moveaxis(ql.image_data(image)[stack], axis, 0)  # planes first; dask/zarr stay lazy
        n_objects = np.unique(objects[objects != 0]).size
        c.progress_bar(f"Segmentello: propagating {n_objects} object(s)")
        c.run(
            propagate_job,
            *c.model_args(),
            volume,
            objects,
            at,
            rough=c.rough_checkbox.isChecked(),
            adapt=float(self.adapt_spin.value()),
            _connect={"returned": lambda out: self._write_stack(image, strokes, stack, axis, out)},
            stoppable=True,
        )

    def _write_stack(self, image: Image, strokes: Labels, stack: ql.Index, axis: int, refined: Refined) -> None:
        """The propagated objects replace their earlier results in the whole stack, as one undo step."""
        c = self.controller
        if c.closed or image not in c.viewer.layers:
            return
        try:
            ql.write_objects(c.viewer, image, strokes, stack, refined.labels, refined.ids, axis)
        except ValueError as exc:
            show_error(message(exc))
