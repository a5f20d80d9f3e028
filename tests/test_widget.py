"""GUI tests of the dock widget on the bundled coins sample (run under Xvfb).

The stand-in model and fixtures (``setup``, ``sample``, ``notes``) live in ``gui_support``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import yaml
from napari.utils import progress

from gui_support import MIN_IOU, WAIT_MS, BrightStandIn, iou, run_refine

from napari_segmentello._sample_data import make_sample_data
from napari_segmentello._qt import controller
from napari_segmentello._qt.pickers import LOAD_CHECKPOINT, available_devices
from napari_segmentello._widget import SegmentelloWidget
from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.models import build_model

pytestmark = pytest.mark.gui


class WrongShape(BrightStandIn):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, ::2, ::2]


def test_refine_sample_keeps_ids_and_strokes_and_undo(setup, qtbot, sample):
    image, strokes, reference = sample
    viewer, widget = setup(image, strokes.copy())
    before = viewer.layers["strokes"].data.copy()
    run_refine(qtbot, widget)

    out = viewer.layers["coins refined"]
    assert out.data.dtype == strokes.dtype and out.data.shape == strokes.shape
    assert set(np.unique(out.data)) == {0, 1, 2, 3}
    for i in (1, 2, 3):
        assert iou(reference == i, out.data == i) > MIN_IOU, f"object {i}"
    np.testing.assert_array_equal(viewer.layers["strokes"].data, before)
    first = out.data.copy()

    # A re-run updates the same layer in place as one undoable step.
    widget.threshold_spin.setValue(0.95)
    n_layers = len(viewer.layers)
    run_refine(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["coins refined"] is out
    assert not np.array_equal(out.data, first)
    out.undo()
    np.testing.assert_array_equal(out.data, first)
    out.undo()
    assert not out.data.any()


def test_two_label_ids_give_two_objects(setup, qtbot, sample):
    image, strokes, reference = sample
    two = np.where(strokes == 3, 0, strokes).astype(strokes.dtype)
    viewer, widget = setup(image, two)
    run_refine(qtbot, widget)
    out = viewer.layers["coins refined"].data
    assert set(np.unique(out)) == {0, 1, 2}
    assert iou(reference == 1, out == 1) > MIN_IOU and iou(reference == 2, out == 2) > MIN_IOU


def test_no_stroke_is_a_notification(setup, qtbot, sample, notes):
    image, _, _ = sample
    viewer, widget = setup(image)
    layer = widget.new_stroke_layer()
    assert layer.mode == "paint" and layer.selected_label == 1 and layer.data.shape == image.shape
    assert widget.strokes_combo.currentText() == layer.name
    run_refine(qtbot, widget)
    assert any("paint at least one pixel" in m for m in notes()), notes()  # the engine's words
    assert "coins refined" not in viewer.layers


def test_errors_are_notifications(setup, qtbot, sample, notes):
    image, strokes, _ = sample
    viewer, widget = setup(image, strokes[:100])  # strokes that do not line up with the image
    run_refine(qtbot, widget)
    assert any("'strokes' has shape (100, 384)" in m for m in notes())

    viewer.layers["strokes"].data = strokes
    widget.model_combo.add_model("no-such-model")  # the engine's KeyError, shown without quotes
    run_refine(qtbot, widget)
    assert any(m.startswith("unknown model 'no-such-model'") for m in notes())

    widget.model_combo.add_model(WrongShape(), name="broken")
    run_refine(qtbot, widget)
    assert any("the model returned logits of shape" in m for m in notes())
    assert "coins refined" not in viewer.layers


def test_stack_refines_the_displayed_plane(setup, qtbot, sample):
    image, strokes, reference = sample
    stack = np.stack([image[::-1], image, image[:, ::-1]])
    labels = np.zeros(stack.shape, strokes.dtype)
    labels[1] = strokes
    viewer, widget = setup(stack, labels)
    viewer.dims.set_current_step(0, 1)
    run_refine(qtbot, widget)
    out = viewer.layers["coins refined"].data
    assert out.shape == stack.shape
    assert not out[0].any() and not out[2].any()
    for i in (1, 2, 3):
        assert iou(reference == i, out[1] == i) > MIN_IOU


def test_scale_translate_propagate_and_rgb(setup, qtbot, sample):
    image, strokes, reference = sample
    rgb = np.stack([image] * 3, axis=-1)
    viewer, widget = setup(rgb, rgb=True, scale=(2.0, 0.5), translate=(10.0, -5.0))
    layer = widget.new_stroke_layer()
    assert layer.data.shape == image.shape
    layer.data = strokes.astype(layer.data.dtype)
    run_refine(qtbot, widget)
    out = viewer.layers["coins refined"]
    for made in (layer, out):
        np.testing.assert_allclose(made.scale, (2.0, 0.5))
        np.testing.assert_allclose(made.translate, (10.0, -5.0))
    assert iou(reference == 2, out.data == 2) > MIN_IOU


def test_multiscale_uses_level_zero(setup, qtbot, sample):
    image, strokes, reference = sample
    viewer, widget = setup([image, image[::2, ::2]], strokes, multiscale=True)
    run_refine(qtbot, widget)
    out = viewer.layers["coins refined"].data
    assert out.shape == image.shape
    assert iou(reference == 1, out == 1) > MIN_IOU


def test_live_refine_follows_painting(setup, qtbot, sample):
    image, strokes, reference = sample
    model = BrightStandIn()
    viewer, widget = setup(image, model=model)
    layer = widget.new_stroke_layer()
    layer.brush_size = 20
    widget.prompting.live_checkbox.setChecked(True)

    centre = np.argwhere(strokes == 1).mean(axis=0)
    for dy in (-10, 0, 10):  # three quick dabs: debounced into one refinement
        layer.paint(centre + (dy, 0), 1)
    qtbot.waitUntil(lambda: "coins refined" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    assert model.calls == 1
    out = viewer.layers["coins refined"]
    assert set(np.unique(out.data)) == {0, 1}
    first = out.data == 1
    assert iou(reference == 1, first) > MIN_IOU

    second = np.argwhere(strokes == 2).mean(axis=0)
    layer.paint(second, 2)  # a second object leaves the first alone
    qtbot.waitUntil(lambda: model.calls == 2 and not widget.busy, timeout=WAIT_MS)
    assert set(np.unique(out.data)) == {0, 1, 2}
    np.testing.assert_array_equal(out.data == 1, first)

    layer.paint(second, 0)  # erasing a whole stroke removes its object, without running the model
    qtbot.waitUntil(lambda: 2 not in out.data, timeout=WAIT_MS)
    assert model.calls == 2
    np.testing.assert_array_equal(out.data == 1, first)

    widget.prompting.live_checkbox.setChecked(False)
    layer.paint(np.argwhere(strokes == 3).mean(axis=0), 3)
    qtbot.wait(600)
    assert model.calls == 2


def test_a_quick_refine_shows_no_busy_bar(setup, qtbot, sample, monkeypatch):
    image, strokes, _ = sample
    viewer, widget = setup(image, strokes, model=BrightStandIn())
    bars, init = [], progress.__init__

    def spy(self, *args, **kwargs):
        bars.append(kwargs.get("desc"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(progress, "__init__", spy)
    monkeypatch.setattr(controller, "BUSY_BAR_MS", 1000)  # margin for a busy CI machine; the stand-in takes ms
    run_refine(qtbot, widget)
    qtbot.wait(1200)  # past the bar's delay: a job that ended before it never shows one
    assert "coins refined" in viewer.layers and bars == []


def test_closing_stops_the_worker_and_writes_nothing(setup, qtbot, sample):
    image, strokes, _ = sample
    gate = threading.Event()
    model = BrightStandIn(gate)
    viewer, widget = setup(image, strokes, model=model)
    widget.prompting.refine_button.click()
    assert widget.busy and not widget.prompting.refine_button.isEnabled()
    worker = widget.worker
    assert model.entered.wait(10)  # past the worker's last yield: only quit() can stop the write
    shown = lambda: any(bar.desc == "Segmentello: refining 3 objects" for bar in progress._all_instances)  # noqa: E731
    qtbot.waitUntil(shown, timeout=WAIT_MS)  # a job still running after BUSY_BAR_MS gets its busy bar
    viewer.window.remove_dock_widget(widget)  # napari's close button does this
    assert worker.abort_requested
    gate.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT_MS)
    qtbot.wait(100)
    assert "coins refined" not in viewer.layers


def test_pickers_follow_layers_and_devices(setup, sample):
    image, strokes, _ = sample
    viewer, widget = setup(image, strokes)
    assert widget.image_combo.currentText() == "coins"
    viewer.add_image(image, name="second")
    viewer.layers["strokes"].name = "renamed"
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["coins", "second"]
    assert widget.strokes_combo.currentText() == "renamed"
    devices = [widget.device_combo.itemText(i) for i in range(widget.device_combo.count())]
    assert devices == available_devices() and devices[-1] == "cpu"
    assert widget.model_combo.itemText(widget.model_combo.count() - 1) == LOAD_CHECKPOINT


def test_load_checkpoint_menu_entry(setup, sample, notes, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    image, strokes, _ = sample
    viewer, widget = setup(image, strokes)
    chosen: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (chosen[-1], ""))
    load_entry = widget.model_combo.count() - 1

    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_bytes(b"hello")
    chosen.append(str(bad))
    picked = widget.model_combo.currentText()
    widget.model_combo.activated.emit(load_entry)
    assert any("not_a_checkpoint.pt" in m for m in notes())
    assert widget.model_combo.currentText() == picked

    good = save_checkpoint(tmp_path / "mine.pt", build_model("tiny16-32"))
    chosen.append(str(good))
    widget.model_combo.activated.emit(load_entry)
    assert widget.model_combo.currentText() == "mine.pt" and widget.model_combo.currentData() == str(good)
    assert widget.model_combo.itemText(widget.model_combo.count() - 1) == LOAD_CHECKPOINT


def test_manifest_widget_and_sample_open_in_napari(make_napari_viewer):
    from pathlib import Path

    manifest = yaml.safe_load((Path(__file__).resolve().parents[1] / "napari.yaml").read_text())
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segmentello", manifest["contributions"]["sample_data"][0]["key"])
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Labels"]
    display = manifest["contributions"]["widgets"][0]["display_name"]
    _, widget = viewer.window.add_plugin_dock_widget("napari-segmentello", display)
    assert isinstance(widget, SegmentelloWidget)
    assert widget.image_combo.currentText() == make_sample_data()[0][1]["name"]
