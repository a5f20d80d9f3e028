"""The napari dock widget: pick image, strokes, model and device, then refine in a worker thread.

Thin on purpose: it reads the displayed plane out of the layers, hands it to the
engine (:class:`napari_segmentello.engine.Refiner`, :func:`~napari_segmentello.propagate.propagate`,
:func:`~napari_segmentello.finetune.finetune`) in a worker thread and writes the result
into a ``<image> refined`` Labels layer as one undo step. The user's stroke layer is only ever read.

Corrections: strokes painted with the *erase label* (:data:`ERASE_ID` unless changed; the
"Erase" toggle switches the brush to it) mean "not this". Each connected erase stroke is the
negative of one object, the one whose previous result it overlaps most, else the nearest one;
and every Refine passes an object's current result as its previous mask, when the model
takes those inputs. Clicks in the ``<image> clicks`` Points layer are small disc strokes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from napari.layers import Image, Labels, Points
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segmentello import _qt_layers as ql
from napari_segmentello._qt_finetune import FinetuneDialog, default_path, finetune_job
from napari_segmentello.engine import Refiner, list_models, load_model
from napari_segmentello.finetune import FinetuneCancelled
from napari_segmentello.propagate import propagate, seed_from_mask
from napari_segmentello.strokes import CLICK_RADIUS, points_to_stroke

LIVE_DELAY_MS = 300
LOAD_CHECKPOINT = "Load checkpoint…"
ERASE_ID = 255  # stroke label reserved for "not this": the top uint8 value, clear of the ids 1, 2, 3… of objects
SEED_EROSION = 0.15  # an object corrected without a stroke on its plane is seeded like propagation seeds a plane
FINETUNED_DIR = Path("~/.napari-segmentello/models").expanduser()


def available_devices() -> list[str]:
    """Devices this machine can run on, fastest first."""
    devices = ["cuda"] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


class _Stopped(Exception):
    """Raised from a progress callback to end a job the user stopped (or whose widget was closed)."""


@dataclass(frozen=True)
class _Drawn:
    """What the user drew on the displayed plane, copied in the GUI thread (painting may go on)."""

    objects: np.ndarray  # label ids: painted strokes plus click discs, erase pixels removed
    erase: np.ndarray  # bool: the erase ("not this") strokes and clicks
    previous: np.ndarray | None  # the output layer's plane, None when it holds nothing there yet
    ids: set[int] | None  # refine only these objects (refine as I paint), None for all


@dataclass(frozen=True)
class _Refined:
    labels: np.ndarray  # the refined objects (0 elsewhere)
    ids: set[int]  # the objects whose output it replaces
    ignored: tuple[str, ...]  # prompts the model has no input channel for


def _prompts(refiner: Refiner, drawn: _Drawn) -> tuple[dict[int, dict[str, np.ndarray]], list[str]]:
    """Per object to refine: its stroke and, when the model takes them, its negative and previous masks."""
    extras = set(refiner.spec.extras)
    ignored = []
    negatives = ql.assign_negatives(drawn.objects, drawn.erase, drawn.previous)
    if drawn.erase.any() and "neg" not in extras:
        ignored.append("erase strokes")
        negatives = {}
    previous = drawn.previous if drawn.previous is not None and drawn.previous.any() else None
    if previous is not None and "prev" not in extras:
        ignored.append("previous results")
        previous = None
    wanted = set(np.unique(drawn.objects[drawn.objects != 0]).tolist())
    if previous is not None:  # corrected with an erase stroke only: seeded from its result (after propagation)
        wanted |= {k for k in negatives if np.any(previous == k)}
    if drawn.ids is not None:
        wanted &= drawn.ids
    prompts = {}
    for k in sorted(wanted):
        stroke = drawn.objects == k
        before = previous == k if previous is not None and np.any(previous == k) else None
        prompts[k] = {
            "stroke": stroke if stroke.any() else seed_from_mask(before, SEED_EROSION),
            "negative": negatives.get(k),
            "previous": before,
        }
    return prompts, ignored


def _predict_each(refiner: Refiner, prompts: dict[int, dict[str, np.ndarray]], dtype: np.dtype) -> np.ndarray:
    """One prediction per object with its own prompts; overlaps go to the highest probability, ties to the lower id.

    The same rule as :meth:`Refiner.predict_labels`, which cannot take per-object prompts.
    """
    shape = next(iter(prompts.values()))["stroke"].shape
    out = np.zeros(shape, dtype)
    best = np.zeros(shape, np.float32)
    for k, p in prompts.items():  # ascending ids
        prob = refiner.predict_proba(p["stroke"], negative=p["negative"], previous=p["previous"])
        claim = (prob > refiner.threshold) & (prob > best)
        out[claim], best[claim] = k, prob[claim]
    return out


def _refine_job(model: Any, device: str, threshold: float, image: Any, drawn: _Drawn) -> Iterator[None]:
    """Worker body; it yields between steps so that ``quit()`` takes effect before the next one."""
    refiner = Refiner(model, device, threshold)
    yield
    refiner.set_image(image)
    yield
    prompts, ignored = _prompts(refiner, drawn)
    if not prompts and drawn.ids is None:
        refiner.predict_labels(drawn.objects)  # raises the engine's own "paint at least one pixel"
    if any(p["negative"] is not None or p["previous"] is not None for p in prompts.values()):
        labels = _predict_each(refiner, prompts, drawn.objects.dtype)
    elif prompts:
        labels = refiner.predict_labels(np.where(np.isin(drawn.objects, list(prompts)), drawn.objects, 0))
    else:
        labels = np.zeros_like(drawn.objects)
    return _Refined(labels.astype(drawn.objects.dtype), set(prompts) | (drawn.ids or set()), tuple(ignored))


def _propagate_job(
    model: Any, device: str, threshold: float, volume: Any, objects: np.ndarray, at: int, *, report: Callable, stop: Any
) -> _Refined:
    """Every object on the displayed plane propagated through ``volume`` (Z, H, W[, C]); ties go to the lower id."""
    refiner = Refiner(model, device, threshold)
    ids = sorted(set(np.unique(objects[objects != 0]).tolist()))
    out = np.zeros((volume.shape[0], *objects.shape), objects.dtype)
    for n, k in enumerate(ids):

        def step(done: int, total: int, n: int = n) -> None:
            if stop.is_set():
                raise _Stopped
            report(n * total + done, len(ids) * total, "")

        mask = propagate(volume, objects == k, at, refiner=refiner, progress=step)
        out[mask & (out == 0)] = k
    return _Refined(out, set(ids), ())


def _message(exc: BaseException) -> str:
    """The engine's own words (``str(KeyError)`` would add quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


class _Relay(QObject):
    """Carries a worker thread's progress reports to the GUI thread (a queued signal)."""

    report = Signal(int, int, str)


class SegmentelloWidget(QWidget):
    """Dock widget: paint a stroke per object into a Labels layer, press Refine (or refine as you paint)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.finetune_dir = FINETUNED_DIR
        self._watched: Labels | None = None
        self._clicks: Points | None = None
        self._pending: set[int] = set()
        self._object_label = 1
        self._warned: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._pbar: progress | None = None
        self._pbar_desc = ""
        self._closed = False
        self._docked = False
        self._relay = _Relay(self)

        self.image_combo = QComboBox()
        self.strokes_combo = QComboBox()
        self.new_strokes_button = QPushButton("New stroke layer")
        self.erase_checkbox = QCheckBox("Erase (not this)")
        self.erase_spin = QSpinBox()
        self.erase_spin.setRange(1, 65535)
        self.erase_spin.setValue(ERASE_ID)
        self.erase_spin.setToolTip("stroke label meaning 'not this object': paint it over a wrong part of a result")
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.05, 0.95)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.refine_button = QPushButton("Refine")
        self.click_button = QPushButton("Click mode")
        self.click_button.setToolTip("click on objects instead of painting (with 'Erase' on: clicks mean 'not this')")
        self.propagate_button = QPushButton("Propagate through stack")
        self.propagate_button.setToolTip("refine this plane's strokes, then follow each object up and down the stack")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.live_checkbox = QCheckBox("Refine as I paint")
        self.finetune_button = QPushButton("Finetune on my labels…")
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DELAY_MS)

        for name in list_models() or ["default"]:  # "default" alone: the engine explains how to get weights
            self.model_combo.addItem(name, name)
        self.model_combo.addItem(LOAD_CHECKPOINT, None)
        for path in sorted(self.finetune_dir.glob("*.pt"), key=lambda p: p.stat().st_mtime):
            self.add_model(path, select=False)  # models finetuned earlier
        self.model_combo.setCurrentIndex(0)
        self._last_model = 0

        strokes_row = QHBoxLayout()
        strokes_row.addWidget(self.strokes_combo, 1)
        strokes_row.addWidget(self.new_strokes_button)
        erase_row = QHBoxLayout()
        erase_row.addWidget(self.erase_checkbox, 1)
        erase_row.addWidget(self.erase_spin)
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("strokes", strokes_row)
        form.addRow("erase label", erase_row)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("threshold", self.threshold_spin)
        refine_row = QHBoxLayout()
        refine_row.addWidget(self.refine_button)
        refine_row.addWidget(self.click_button)
        stack_row = QHBoxLayout()
        stack_row.addWidget(self.propagate_button, 1)
        stack_row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(refine_row)
        layout.addLayout(stack_row)
        layout.addWidget(self.live_checkbox)
        layout.addWidget(self.finetune_button)
        layout.addStretch(1)

        self.new_strokes_button.clicked.connect(self.new_stroke_layer)
        self.refine_button.clicked.connect(lambda: self.refine())
        self.click_button.clicked.connect(self.click_mode)
        self.propagate_button.clicked.connect(self.propagate)
        self.stop_button.clicked.connect(self.stop)
        self.finetune_button.clicked.connect(self.open_finetune)
        self.erase_checkbox.toggled.connect(self._on_erase_toggled)
        self.erase_spin.valueChanged.connect(self._on_erase_id_changed)
        self.image_combo.currentIndexChanged.connect(self._update_actions)
        self.strokes_combo.currentIndexChanged.connect(self._watch_strokes)
        self.model_combo.activated.connect(self._on_model_activated)
        self._live_timer.timeout.connect(self._on_live_timeout)
        self._relay.report.connect(self._on_progress)
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
        self._watch_clicks()
        self._update_actions()

    def _picked(self, combo: QComboBox, kind: type, what: str) -> Any:
        name = combo.currentText()
        if not name or name not in self.viewer.layers or not isinstance(self.viewer.layers[name], kind):
            raise ValueError(f"no {what} picked: {_HINTS[what]}")
        return self.viewer.layers[name]

    def image_layer(self) -> Image:
        return self._picked(self.image_combo, Image, "image layer")

    def strokes_layer(self) -> Labels:
        return self._picked(self.strokes_combo, Labels, "stroke layer")

    def _layer_named(self, name: str, kind: type) -> Any:
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, kind) else None

    def clicks_layer(self) -> Points | None:
        """The ``<image> clicks`` Points layer of the picked image, if there is one."""
        try:
            return self._layer_named(f"{self.image_layer().name} clicks", Points)
        except ValueError:
            return None

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

    def add_model(
        self, model: str | os.PathLike | torch.nn.Module, name: str | None = None, select: bool = True
    ) -> None:
        """Offer (and pick) a checkpoint path or an ``nn.Module`` with ``.spec`` in the model picker."""
        label = name or (Path(model).name if isinstance(model, str | os.PathLike) else type(model).__name__)
        at = self.model_combo.count() - 1  # keep "Load checkpoint…" last
        self.model_combo.insertItem(at, label, model)
        if select:
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

    # ---- erase label and click mode ------------------------------------------------------------

    def _on_erase_toggled(self, checked: bool) -> None:
        """Switch the stroke layer's brush to the erase label and back to the object it painted before."""
        try:
            layer = self.strokes_layer()
        except ValueError as exc:
            if checked:
                show_error(str(exc))
                self.erase_checkbox.setChecked(False)
            return
        erase = self.erase_spin.value()
        if checked and layer.selected_label != erase:
            layer.selected_label = erase
        elif not checked and layer.selected_label == erase:
            layer.selected_label = self._object_label

    def _on_erase_id_changed(self, value: int) -> None:
        if self.erase_checkbox.isChecked() and self._watched is not None:
            self._watched.selected_label = value
        self._on_selected_label()

    def _on_selected_label(self, event: Any = None) -> None:
        """Keep the Erase toggle and the label of new clicks in step with the stroke layer's brush."""
        if self._watched is None:
            return
        label = int(self._watched.selected_label)
        erase = label == self.erase_spin.value()
        if not erase:
            self._object_label = label
        self.erase_checkbox.blockSignals(True)
        self.erase_checkbox.setChecked(erase)
        self.erase_checkbox.blockSignals(False)
        clicks = self._clicks
        if clicks is not None:
            clicks.selected_data = set()  # the new defaults must not recolour or relabel the last click
            clicks.feature_defaults = {ql.CLICK_LABEL: label}
            color = self._watched.get_color(label)
            if color is not None:
                clicks.current_face_color = color

    def click_mode(self) -> Points | None:
        """Add (or pick) the ``<image> clicks`` Points layer in add mode: each click is a small disc stroke.

        Clicks take the stroke layer's current label (its object id, or the erase label when
        'Erase' is on); a stroke layer is made when there is none, to hold that choice.
        """
        try:
            image = self.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return None
        try:
            self.strokes_layer()
        except ValueError:
            self.new_stroke_layer()
        layer = self.clicks_layer()
        if layer is None:
            layer = self.viewer.add_points(
                ndim=len(ql.spatial_shape(image)),
                name=f"{image.name} clicks",
                scale=image.scale,
                translate=image.translate,
                size=2 * CLICK_RADIUS,
                border_color="white",
                features={ql.CLICK_LABEL: np.empty(0, int)},
            )
        self._watch_clicks()
        layer.mode = "add"
        self.viewer.layers.selection.active = layer
        return layer

    # ---- refining ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def refine(self, ids: set[int] | None = None) -> None:
        """Refine the displayed plane: every object drawn on it, or only ``ids``.

        Objects with no stroke, click or erase stroke on the plane keep their output (say,
        from a propagation); an object whose stroke was wiped while refining as I paint is removed.
        """
        if self.busy:
            return
        try:
            self._start(ids)
        except (ValueError, KeyError) as exc:
            show_error(_message(exc))

    def _drawn(self, image: Image, strokes: Labels, index: ql.Index, ids: set[int] | None) -> _Drawn:
        """The displayed plane's strokes and clicks, split into objects and erase strokes, and its previous result."""
        plane = np.array(strokes.data[index])  # a copy: painting may go on while the worker runs
        clicks = self.clicks_layer()
        if clicks is not None:
            for k, points in ql.plane_clicks(clicks, index).items():
                plane[points_to_stroke(points, plane.shape) & (plane == 0)] = k
        erase = plane == self.erase_spin.value()
        objects = np.where(erase, 0, plane).astype(plane.dtype)
        out = self._layer_named(f"{image.name} refined", Labels)
        previous = np.array(out.data[index]) if out is not None and out.data.shape == strokes.data.shape else None
        return _Drawn(objects, erase, previous, ids)

    def _start(self, ids: set[int] | None) -> None:
        image, strokes = self.image_layer(), self.strokes_layer()
        ql.check_strokes(strokes, image)
        index = ql.displayed_plane(self.viewer, image)
        if ids is not None and self.erase_spin.value() in ids:
            ids = None  # an erase stroke may concern any object on the plane
        drawn = self._drawn(image, strokes, index, ids)
        if ids is not None and not np.isin(drawn.objects, list(ids)).any():
            # every touched object was erased: just clear it from the output
            self._write(image, strokes, index, _Refined(np.zeros_like(drawn.objects), ids, ()))
            return
        n_objects = np.unique(drawn.objects[drawn.objects != 0]).size
        self._run(
            _refine_job,
            self.model_combo.currentData(),
            self.device_combo.currentText(),
            self.threshold_spin.value(),
            ql.image_data(image)[index],  # H×W or H×W×C; dask/zarr stay lazy
            drawn,
            _progress={"total": 0, "desc": f"Segmentello: refining {n_objects} objects"} if n_objects > 1 else None,
            _connect={"returned": lambda out: self._write(image, strokes, index, out)},
        )

    def _write(self, image: Image, strokes: Labels, index: ql.Index, refined: _Refined) -> None:
        if self._closed or image not in self.viewer.layers:
            return
        self._warn_ignored(refined.ignored)
        try:
            target = ql.output_layer(self.viewer, image, strokes)
            current = np.asarray(target.data[index])
            ql.write_plane(target, index, ql.replace_ids(current, refined.labels, refined.ids))
        except ValueError as exc:
            show_error(_message(exc))

    def _warn_ignored(self, ignored: tuple[str, ...]) -> None:
        """Say once per model which prompts it cannot use (they are left out, not an error)."""
        model = self.model_combo.currentText()
        for what in ignored:
            if (model, what) not in self._warned:
                self._warned.add((model, what))
                show_info(f"model {model!r} takes no {what}: they are ignored; refined from the strokes alone")

    # ---- propagation through a stack -----------------------------------------------------------

    def propagate(self) -> None:
        """Refine the displayed plane's objects and follow each up and down the stack; one undo step.

        The stack runs along the slider nearest the displayed axes (z of t-z-y-x). It starts
        from the plane's strokes and clicks; erase strokes and earlier results play no part.
        """
        if self.busy:
            return
        try:
            self._start_propagate()
        except (ValueError, KeyError) as exc:
            show_error(_message(exc))

    def _start_propagate(self) -> None:
        image, strokes = self.image_layer(), self.strokes_layer()
        ql.check_strokes(strokes, image)
        index = ql.displayed_plane(self.viewer, image)
        stack, axis, at = ql.stack_index(index)
        objects = self._drawn(image, strokes, index, None).objects
        if not objects.any():
            raise ValueError("paint a stroke (or click) on this plane first: propagation starts from it")
        volume = np.moveaxis(ql.image_data(image)[stack], axis, 0)  # planes first; dask/zarr stay lazy
        n_objects = np.unique(objects[objects != 0]).size
        self._progress_bar(f"Segmentello: propagating {n_objects} object(s)")
        self._run(
            _propagate_job,
            self.model_combo.currentData(),
            self.device_combo.currentText(),
            self.threshold_spin.value(),
            volume,
            objects,
            at,
            _connect={"returned": lambda out: self._write_stack(image, strokes, stack, axis, out)},
            stoppable=True,
        )

    def _write_stack(self, image: Image, strokes: Labels, stack: ql.Index, axis: int, refined: _Refined) -> None:
        """The propagated objects replace their earlier results in the whole stack, as one undo step."""
        if self._closed or image not in self.viewer.layers:
            return
        try:
            target = ql.output_layer(self.viewer, image, strokes)
            current = np.moveaxis(np.asarray(target.data[stack]), axis, 0)
            new = ql.replace_ids(current, refined.labels, refined.ids)
            ql.write_plane(target, stack, np.moveaxis(new, 0, axis))
        except ValueError as exc:
            show_error(_message(exc))

    # ---- finetuning ----------------------------------------------------------------------------

    def open_finetune(self) -> None:
        """Ask which finished Labels layers to learn from, for how long and where to save, then finetune."""
        if self.busy:
            return
        try:
            image = self.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return
        out = default_path(self.finetune_dir, self.model_combo.currentText())
        dialog = FinetuneDialog(self.viewer, image, out, parent=self)
        if dialog.exec_() == QDialog.Accepted:
            self.finetune(dialog.picked_layers(), dialog.minutes(), dialog.output_path())

    def finetune(self, layers: list[Labels], minutes: float, out: str | os.PathLike) -> None:
        """Finetune the picked model on ``layers`` (masks of the picked image) in a worker; the result is picked."""
        if self.busy:
            return
        try:
            image = self.image_layer()
        except ValueError as exc:
            show_error(str(exc))
            return
        self._progress_bar("Segmentello: finetuning")
        self._run(
            finetune_job,
            image,
            list(layers),
            self.model_combo.currentData(),
            self.device_combo.currentText(),
            float(minutes),
            Path(out).expanduser(),
            _connect={"returned": self._on_finetuned},
            stoppable=True,
        )

    def _on_finetuned(self, path: Path) -> None:
        if self._closed:
            return
        self.add_model(path)
        show_info(f"finetuned model saved to {path}; it is now picked in the model list")

    # ---- workers -------------------------------------------------------------------------------

    def _run(self, job: Callable, *args: Any, _connect: dict, stoppable: bool = False, **kwargs: Any) -> None:
        """Start ``job`` in a worker thread, with the action buttons off until it ends.

        A ``stoppable`` job gets ``report(done, total, note)`` for the progress bar and
        ``stop``, an event of its own that Stop and closing the widget set.
        """
        self._stop = threading.Event()
        if stoppable:
            kwargs.update(report=self._relay.report.emit, stop=self._stop)
        self.worker = create_worker(
            job,
            *args,
            **kwargs,
            _connect={"errored": self._on_error, "finished": self._on_finished, **_connect},
            _start_thread=False,
        )
        self._update_actions()
        self.stop_button.setEnabled(stoppable)
        self.worker.start()

    def _progress_bar(self, desc: str) -> None:
        """A napari progress bar (activity dock) that the job's reports move; closed when the job ends."""
        self._pbar, self._pbar_desc = progress(total=0, desc=desc), desc

    def _on_progress(self, done: int, total: int, note: str) -> None:
        bar = self._pbar
        if bar is None:
            return
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)  # may process Qt events, in which the job can end and close the bar
        if note and self._pbar is bar:
            bar.set_description(f"{self._pbar_desc} ({note})")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, _Stopped | FinetuneCancelled):
            show_info("Segmentello: stopped; nothing was written")
        elif not self._closed:
            show_error(_message(exc))

    def _on_finished(self) -> None:
        self.worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.stop_button.setEnabled(False)
        self._update_actions()

    def stop(self) -> None:
        """Ask the running propagation or finetuning to end; it writes and saves nothing."""
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()

    def _update_actions(self, *_: Any) -> None:
        """Action buttons are off while a job runs; propagation needs a stack."""
        idle = not self.busy
        for button in (self.refine_button, self.finetune_button):
            button.setEnabled(idle)
        try:
            stack = len(ql.spatial_shape(self.image_layer())) >= 3
        except ValueError:
            stack = False
        self.propagate_button.setEnabled(idle and stack)

    # ---- refine as I paint ---------------------------------------------------------------------

    def _watch_strokes(self, *_: Any) -> None:
        """Follow paint and label events of the picked stroke layer only."""
        try:
            layer = self.strokes_layer()
        except ValueError:
            layer = None
        if layer is self._watched:
            return
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
            self._watched.events.selected_label.disconnect(self._on_selected_label)
        self._watched, self._pending = layer, set()
        if layer is not None:
            layer.events.paint.connect(self._on_paint)
            layer.events.selected_label.connect(self._on_selected_label)
            self._on_selected_label()

    def _watch_clicks(self) -> None:
        """Follow the picked image's clicks layer: new or removed clicks refine as I paint."""
        layer = self.clicks_layer()
        if layer is self._clicks:
            return
        if self._clicks is not None:
            self._clicks.events.data.disconnect(self._on_clicks)
        self._clicks = layer
        if layer is not None:
            layer.events.data.connect(self._on_clicks)
            self._on_selected_label()

    def _on_paint(self, event: Any) -> None:
        if self.live_checkbox.isChecked():
            self._schedule(ql.painted_ids(getattr(event, "value", None)))

    def _on_clicks(self, event: Any) -> None:
        """Clicks added, moved or about to be removed: their objects' refinements are stale."""
        if self.live_checkbox.isChecked() and str(event.action) in ("added", "changed", "removing"):
            self._schedule(ql.clicked_ids(self._clicks, event.data_indices))

    def _schedule(self, ids: set[int]) -> None:
        if ids:
            self._pending |= ids
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
        self._closed = True
        self._live_timer.stop()
        self.stop()
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed, events.reordered, events.renamed):
            emitter.disconnect(self._refresh_layers)
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._on_paint)
            self._watched.events.selected_label.disconnect(self._on_selected_label)
            self._watched = None
        if self._clicks is not None:
            self._clicks.events.data.disconnect(self._on_clicks)
            self._clicks = None

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
