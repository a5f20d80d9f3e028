"""The prompting panel: Refine the displayed plane from strokes, clicks, boxes and erase strokes, or as you paint.

Strokes painted with the controller's *erase label* (the "Erase" toggle switches the
brush to it) mean "not this". Clicks in the ``<image> clicks`` Points layer are small
disc strokes of the stroke layer's current label. Each rectangle in the ``<image> boxes``
Shapes layer is a new object (the next free id), refined when drawn; the brush then
takes its id, so strokes and erase strokes correct it. With the controller's *Rough masks*
on, what is painted for an id is a rough mask of the whole object, kept where the image agrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.boxes import BOX_LABEL, add_boxes_layer, free_id
from napari_segmentello._qt.controller import Controller
from napari_segmentello._qt.follow import PromptFollower
from napari_segmentello._qt.pickers import message
from napari_segmentello._qt.refine import Refined, read_drawn, refine_job

LIVE_DELAY_MS = 300


class PromptPanel(QWidget):
    """Refine, Click mode, Box mode, Erase and "Refine as I paint"; follows the stroke, clicks and boxes layers."""

    def __init__(self, controller: Controller, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.follower = PromptFollower(self)
        self._warned: set[tuple[str, str]] = set()
        self._pending: set[int] = set()
        self._object_label = 1

        self.erase_checkbox = QCheckBox("Erase (not this)")
        self.refine_button = QPushButton("Refine")
        self.click_button = QPushButton("Click mode")
        self.click_button.setToolTip("click on objects instead of painting (with 'Erase' on: clicks mean 'not this')")
        self.box_button = QPushButton("Box mode")
        self.box_button.setToolTip("draw a rectangle around each object: one new object per box, refined on release")
        self.live_checkbox = QCheckBox("Refine as I paint")
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)

        buttons = QHBoxLayout()
        buttons.addWidget(self.refine_button)
        buttons.addWidget(self.click_button)
        buttons.addWidget(self.box_button)
        toggles = QHBoxLayout()
        toggles.addWidget(self.erase_checkbox)
        toggles.addWidget(self.live_checkbox)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addLayout(toggles)

        self.refine_button.clicked.connect(lambda: self.refine())
        self.click_button.clicked.connect(self.click_mode)
        self.box_button.clicked.connect(self.box_mode)
        self.erase_checkbox.toggled.connect(self._on_erase_toggled)
        controller.erase_spin.valueChanged.connect(self._on_erase_id_changed)
        self._live_timer.timeout.connect(self._on_live_timeout)
        self.follower.brush_changed.connect(self._on_selected_label)
        self.follower.edited.connect(self._on_edited)
        self.follower.box_starting.connect(self._on_box_starting)
        controller.layers_changed.connect(self._watch)
        controller.state_changed.connect(lambda: self.refine_button.setEnabled(not controller.busy))
        controller.closing.connect(self.shutdown)
        self._watch()

    # ---- refining ------------------------------------------------------------------------------

    def refine(self, ids: set[int] | None = None) -> None:
        """Refine the displayed plane: every object drawn on it, or only ``ids``.

        Objects with no stroke, click, box or erase stroke on the plane keep their output (say, from
        a propagation); an object whose stroke or box was removed while refining as I paint is removed.
        """
        if self.controller.busy:
            return
        try:
            self._start(ids)
        except (ValueError, KeyError) as exc:
            show_error(message(exc))

    def _start(self, ids: set[int] | None) -> None:
        c = self.controller
        image, strokes = c.image_layer(), c.strokes_layer()
        ql.check_strokes(strokes, image)
        index = ql.displayed_plane(c.viewer, image)
        if ids is not None and c.erase_spin.value() in ids:
            ids = None  # an erase stroke may concern any object on the plane
        drawn = read_drawn(c, image, strokes, index, ids, rough=c.rough_checkbox.isChecked())
        if ids is not None and not np.isin(drawn.objects, list(ids)).any() and not ids & drawn.boxes.keys():
            # every touched object was erased: just clear it from the output
            self._write(image, strokes, index, Refined(np.zeros_like(drawn.objects), ids, ()))
            return
        n_objects = len(set(np.unique(drawn.objects[drawn.objects != 0]).tolist()) | drawn.boxes.keys())
        c.run(
            refine_job,
            *c.model_args(),
            ql.image_data(image)[index],  # H×W or H×W×C; dask/zarr stay lazy
            drawn,
            busy=f"Segmentello: refining {n_objects} objects" if n_objects > 1 else None,
            _connect={"returned": lambda out: self._write(image, strokes, index, out)},
        )

    def _write(self, image: Image, strokes: Labels, index: ql.Index, refined: Refined) -> None:
        """Replace the refined objects on plane ``index`` of the ``<image> refined`` layer, as one undo step."""
        c = self.controller
        if c.closed or image not in c.viewer.layers:
            return
        self._warn_ignored(refined.ignored)
        try:
            ql.write_objects(c.viewer, image, strokes, index, refined.labels, refined.ids)
        except ValueError as exc:
            show_error(message(exc))

    def _warn_ignored(self, ignored: tuple[str, ...]) -> None:
        """Say once per model which prompts it cannot use (they are left out, not an error)."""
        model = self.controller.model_combo.currentText()
        for what in ignored:
            if (model, what) not in self._warned:
                self._warned.add((model, what))
                show_info(f"model {model!r} takes no {what}: they are ignored; refined from the strokes alone")

    # ---- erase label, click and box modes -----------------------------------------------------

    def _layer_of_image(self, suffix: str, kind: type) -> Any:
        """The picked image's ``<image> <suffix>`` layer, if there is one."""
        try:
            return self.controller.layer_named(f"{self.controller.image_layer().name} {suffix}", kind)
        except ValueError:
            return None

    def _on_erase_toggled(self, checked: bool) -> None:
        """Switch the stroke layer's brush to the erase label and back to the object it painted before."""
        try:
            layer = self.controller.strokes_layer()
        except ValueError as exc:
            if checked:
                show_error(str(exc))
                self.erase_checkbox.setChecked(False)
            return
        erase = self.controller.erase_spin.value()
        if checked and layer.selected_label != erase:
            layer.selected_label = erase
        elif not checked and layer.selected_label == erase:
            layer.selected_label = self._object_label

    def _on_erase_id_changed(self, value: int) -> None:
        if self.erase_checkbox.isChecked() and self.follower.strokes is not None:
            self.follower.strokes.selected_label = value
        self._on_selected_label()

    def _on_selected_label(self) -> None:
        """Keep the Erase toggle and the label of new clicks in step with the stroke layer's brush."""
        if self.follower.strokes is None:
            return
        label = int(self.follower.strokes.selected_label)
        erase = label == self.controller.erase_spin.value()
        if not erase:
            self._object_label = label
        self.erase_checkbox.blockSignals(True)
        self.erase_checkbox.setChecked(erase)
        self.erase_checkbox.blockSignals(False)
        clicks = self.follower.clicks
        if clicks is not None:
            clicks.selected_data = set()  # the new defaults must not recolour or relabel the last click
            clicks.feature_defaults = {ql.CLICK_LABEL: label}
            color = self.follower.strokes.get_color(label)
            if color is not None:
                clicks.current_face_color = color

    def click_mode(self) -> Points | None:
        """Add (or pick) the ``<image> clicks`` Points layer in add mode: each click is a small disc stroke.

        Clicks take the stroke layer's current label (its object id, or the erase label when
        'Erase' is on); a stroke layer is made when there is none, to hold that choice.
        """
        return self._prompt_mode("clicks", Points, ql.add_clicks_layer, "add")

    def box_mode(self) -> Shapes | None:
        """Add (or pick) the ``<image> boxes`` Shapes layer in rectangle mode: each rectangle is a new object.

        A stroke layer is made when there is none: the refined objects take its dtype, and
        its brush then takes each new box's id.
        """
        return self._prompt_mode("boxes", Shapes, add_boxes_layer, "add_rectangle")

    def _prompt_mode(self, suffix: str, kind: type, make: Any, mode: str) -> Any:
        """The picked image's ``<image> <suffix>`` layer (made if missing), active in ``mode``."""
        c = self.controller
        try:
            image = c.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return None
        try:
            c.strokes_layer()
        except ValueError:
            c.new_stroke_layer()
        layer = self._layer_of_image(suffix, kind)
        if layer is None:
            layer = make(c.viewer, image)
        self._watch()
        layer.mode = mode
        c.viewer.layers.selection.active = layer
        return layer

    def _on_box_starting(self) -> None:
        """A rectangle is being drawn: its id is one above every stroke, click, box and result."""
        c, f = self.controller, self.follower
        layers = (f.strokes, self._layer_of_image("refined", Labels), f.clicks, f.boxes)
        f.boxes.feature_defaults = {BOX_LABEL: free_id(layers, c.erase_spin.value())}

    # ---- refine as I paint ---------------------------------------------------------------------

    def _watch(self) -> None:
        """Follow the picked stroke layer and the picked image's clicks and boxes layers."""
        try:
            strokes = self.controller.strokes_layer()
        except ValueError:
            strokes = None
        if strokes is not self.follower.strokes:
            self._pending = set()
        self.follower.follow(strokes, self._layer_of_image("clicks", Points), self._layer_of_image("boxes", Shapes))

    def _on_edited(self, kind: str, ids: set[int]) -> None:
        """Boxes refine when drawn, moved or removed; strokes and clicks when refining as I paint."""
        if kind == "box drawn" and ids and self.follower.strokes is not None:
            self.follower.strokes.selected_label = max(ids)  # strokes and clicks now correct the new object
        if kind in ("box drawn", "boxes") or self.live_checkbox.isChecked():
            self._schedule(ids)

    def _schedule(self, ids: set[int]) -> None:
        if ids:
            self._pending |= ids
            self._live_timer.start()  # restarts: refine once painting pauses

    def _on_live_timeout(self) -> None:
        if self.controller.busy:
            self._live_timer.start()
            return
        ids, self._pending = self._pending, set()
        self.refine(ids)

    def shutdown(self) -> None:
        """Stop refining as I paint and disconnect from the layers (idempotent)."""
        self._live_timer.stop()
        self.follower.follow(None, None, None)
