"""GUI tests of the widget's correction, click, propagation and finetuning actions (run under Xvfb).

The stand-in models of ``gui_support`` (fixed rule: brighter than the window's mean)
test the plumbing; spies on the engine check which prompts reach it. One test uses the
bundled ``default`` weights and one finetunes a real (tiny) model for a few seconds.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from napari.layers import Image, Labels, Points
from napari.utils import progress
from qtpy.QtWidgets import QDialog
from scipy import ndimage as ndi
from gui_support import MIN_IOU, WAIT_MS, BrightStandIn, iou, run_refine

from napari_segmentello._qt import finetune as qt_finetune
from napari_segmentello._qt import layers as ql
from napari_segmentello._qt.controller import ERASE_ID
from napari_segmentello._qt.finetune import FinetuneDialog
from napari_segmentello._qt.refine import Drawn, own_clicks, refine_job
from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.engine import Refiner
from napari_segmentello.inputs import points_to_stroke
from napari_segmentello.loader import list_models, load_model
from napari_segmentello.models import build_model, get_spec
from napari_segmentello.propagate import propagate

pytestmark = pytest.mark.gui

ERASE = ERASE_ID


class CorrectingStandIn(BrightStandIn):
    """The bright rule, with input channels for a negative stroke and a previous mask (which it ignores)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__(gate)
        self.spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"))


class PriorStandIn(BrightStandIn):
    """The bright rule near the prior (the "prev" channel): the object-aware recipe, so it takes rough masks."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"), context="object")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = x[:, self.spec.image_channels + self.spec.extras.index("prev")][:, None]
        near = F.max_pool2d(prior, 9, stride=1, padding=4) > 0.5
        return torch.where(near, super().forward(x), torch.full_like(prior, -20))


@pytest.fixture
def spy(monkeypatch):
    """Records each object's prompts in ``Refiner.predict_objects`` and every ``predict_labels`` call."""
    calls: dict[str, list] = {"objects": [], "labels": []}
    objects, labels = Refiner.predict_objects, Refiner.predict_labels

    def spy_objects(self, prompts):
        for k in sorted(prompts):
            p = {name: prompts[k].get(name) for name in ("stroke", "negative", "previous", "prior", "clicks")}
            calls["objects"].append(p | {"stroke": np.array(p["stroke"])})
        return objects(self, prompts)

    def spy_labels(self, plane, *, boxes=None, rough=False, negative=None):
        calls["labels"].append(np.array(plane))
        calls.setdefault("rough", []).append(rough)
        calls.setdefault("labels_negative", []).append(negative)
        return labels(self, plane, boxes=boxes, rough=rough, negative=negative)

    monkeypatch.setattr(Refiner, "predict_objects", spy_objects)
    monkeypatch.setattr(Refiner, "predict_labels", spy_labels)
    return calls


def three_clicks(mask: np.ndarray) -> np.ndarray:
    """(row, col) of three clicks across ``mask``: its deepest pixel and two halfway to the edge.

    A stroke's window is 1.8 times its extent (``roi_from_stroke``): clicks spread
    like this make a window that holds the whole coin, as the training protocol's 1-3 clicks do.
    """
    dt = ndi.distance_transform_edt(mask)
    centre = np.array(np.unravel_index(np.argmax(dt), mask.shape), float)
    return centre + np.array([(0, 0), (0, 0.5), (0, -0.5)]) * dt.max()


# ---- corrections ---------------------------------------------------------------------------------


def test_assign_negatives_by_overlap_then_nearest_object():
    objects = np.zeros((40, 40), np.uint8)
    objects[5, 5] = 1
    objects[30, 30] = 2
    previous = np.zeros_like(objects)
    previous[20:28, 20:28] = 2
    erase = np.zeros((40, 40), bool)
    erase[22:26, 2:23] = True  # overlaps object 2's result, though it reaches nearer to object 1's stroke
    erase[2, 12:14] = True  # over background, nearest to object 1
    negatives = ql.assign_negatives(objects, erase, previous)
    assert set(negatives) == {1, 2}
    np.testing.assert_array_equal(negatives[2], np.pad(np.ones((4, 21), bool), ((22, 14), (2, 17))))
    assert negatives[1].sum() == 2 and negatives[1][2, 12:14].all()
    assert ql.assign_negatives(np.zeros_like(objects), erase, None) == {}
    assert ql.assign_negatives(objects, np.zeros_like(erase), previous) == {}


def test_an_objects_erase_clicks_go_as_points_and_its_painted_erase_strokes_as_pixels():
    shape = (40, 40)
    painted = np.zeros(shape, bool)
    painted[5:8, 5:30] = True
    clicks = np.array([[20.0, 20.0], [35.0, 35.0]])  # the second belongs to another object
    discs = points_to_stroke(clicks, shape)
    drawn = Drawn(np.zeros(shape, np.uint8), painted | discs, None, None, {}, False, clicks, painted)
    mine = painted | points_to_stroke(clicks[:1], shape)
    negative, points = own_clicks(mine, drawn)
    np.testing.assert_array_equal(negative, painted)
    np.testing.assert_array_equal(points, [[20, 20, 0]])
    negative, points = own_clicks(points_to_stroke(clicks[:1], shape), drawn)
    assert negative is None and len(points) == 1
    assert own_clicks(painted, drawn) == (painted, None)


def test_layer_plumbing_for_clicks_stacks_and_finetuning():
    s = slice(None)
    assert ql.stack_index((2, 5, s, s)) == ((2, s, s, s), 0, 5)  # t, z, y, x: along z at this t
    assert ql.stack_index((s, 3, s)) == ((s, s, s), 1, 3)  # a transposed view: the slider axis sits between
    with pytest.raises(ValueError, match="needs a stack"):
        ql.stack_index((s, s))

    clicks = Points([[1, 10, 20], [2, 11, 21], [1.2, 30, 40]], features={ql.CLICK_LABEL: [1, 1, ERASE]})
    on_plane = ql.plane_clicks(clicks, (1, s, s))
    assert set(on_plane) == {1, ERASE}
    np.testing.assert_array_equal(on_plane[1], [[10, 20]])
    np.testing.assert_array_equal(on_plane[ERASE], [[30, 40]])
    assert ql.clicked_ids(clicks, (-1,)) == {ERASE} and ql.clicked_ids(clicks, (0, 1)) == {1}
    with pytest.raises(ValueError, match="has 3 dimensions but the image has 2"):
        ql.plane_clicks(clicks, (s, s))

    image = Image(np.arange(3 * 8 * 8).reshape(3, 8, 8))
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[2, 4:6, 4:6] = 2
    pairs = ql.training_pairs(image, [Labels(masks)])
    assert len(pairs) == 2  # the labelled planes only
    np.testing.assert_array_equal(pairs[1][0], image.data[2])
    np.testing.assert_array_equal(pairs[1][1], masks[2])
    with pytest.raises(ValueError, match="has shape \\(8, 8\\) but image layer"):
        ql.training_pairs(image, [Labels(masks[0])])


def test_erase_strokes_and_previous_results_reach_the_engine(setup, qtbot, sample, spy):
    image, strokes, reference = sample
    viewer, widget = setup(image, strokes.copy(), model=CorrectingStandIn())
    layer = viewer.layers["strokes"]
    layer.selected_label = 2
    run_refine(qtbot, widget)  # first round: no previous result, no erase stroke -> one batch
    assert len(spy["labels"]) == 1 and not spy["objects"]
    out = viewer.layers["coins refined"]
    first = out.data.copy()

    widget.prompting.erase_checkbox.setChecked(True)  # the brush switches to the erase label...
    assert layer.selected_label == ERASE
    layer.brush_size = 6
    edge = np.argwhere((reference == 2) & ~ndi.binary_erosion(reference == 2, iterations=3))[0]
    layer.paint(edge, layer.selected_label)  # ...over the edge of object 2's result
    widget.prompting.erase_checkbox.setChecked(False)  # ...and back to the object painted before
    assert layer.selected_label == 2
    erase = layer.data == ERASE
    assert erase.any()

    spy["labels"].clear()
    run_refine(qtbot, widget)
    assert not spy["labels"] and len(spy["objects"]) == 3  # one call per object, each with its own prompts
    for k, call in zip((1, 2, 3), spy["objects"], strict=True):
        np.testing.assert_array_equal(call["stroke"], strokes == k)
        np.testing.assert_array_equal(call["previous"], first == k)
        if k == 2:
            np.testing.assert_array_equal(call["negative"], erase)
        else:
            assert call["negative"] is None
    assert ERASE not in out.data  # erase pixels never become an object of their own
    assert set(np.unique(out.data)) == {0, 1, 2, 3}
    for k in (1, 2, 3):
        assert iou(reference == k, out.data == k) > MIN_IOU


def test_each_objects_strokes_are_the_others_not_this(setup, qtbot, sample, spy):
    """An object-aware model is told that the other ids' strokes are not this object, with or without erase strokes."""
    image, strokes, reference = sample
    model = CorrectingStandIn()
    model.spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"), context="object")
    viewer, widget = setup(image, strokes.copy(), model=model)
    layer = viewer.layers["strokes"]
    run_refine(qtbot, widget)  # no erase stroke: one batch, the engine gives each id the others' strokes
    assert len(spy["labels"]) == 1 and spy["labels_negative"] == [None] and not spy["objects"]

    edge = np.argwhere((reference == 2) & ~ndi.binary_erosion(reference == 2, iterations=3))[0]
    layer.brush_size = 6
    layer.paint(edge, ERASE)
    erase = layer.data == ERASE
    run_refine(qtbot, widget)  # with one: one call per object, each with its own "not this"
    assert len(spy["objects"]) == 3
    for k, call in zip((1, 2, 3), spy["objects"], strict=True):
        others = (strokes != 0) & (strokes != k) & ~erase
        np.testing.assert_array_equal(call["negative"], others | erase if k == 2 else others)
    out = viewer.layers["coins refined"].data
    for k in (1, 2, 3):
        assert (out[(strokes == k) & ~erase] == k).all()


def test_objects_not_refined_now_are_still_not_this(sample, spy):
    """Refine as I paint asks for the object being painted; the other painted objects stay its "not this"."""
    image, strokes, _ = sample
    model = CorrectingStandIn()
    model.spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"), context="object")
    drawn = Drawn(strokes.copy(), np.zeros(strokes.shape, bool), None, {2}, {})
    job = refine_job(model, "cpu", 0.5, image, drawn)
    with pytest.raises(StopIteration) as done:
        while True:
            next(job)
    assert set(np.unique(done.value.value.labels)) == {0, 2}
    np.testing.assert_array_equal(spy["labels"][0], np.where(strokes == 2, 2, 0))
    np.testing.assert_array_equal(spy["labels_negative"][0], (strokes != 0) & (strokes != 2))


def test_erase_only_correction_is_seeded_from_the_previous_result(setup, qtbot, sample, spy):
    """After propagation a plane may hold results but no strokes: an erase stroke alone corrects them."""
    image, _, reference = sample
    viewer, widget = setup(image, np.zeros_like(reference), model=CorrectingStandIn())
    previous = np.where(ndi.binary_dilation(reference == 1, iterations=4), 5, 0).astype(reference.dtype)
    viewer.add_labels(previous.copy(), name="coins refined", metadata={ql.OUTPUT_TAG: True})
    leak = previous.astype(bool) & ~(reference == 1)
    strokes = viewer.layers["strokes"]
    strokes.data = np.where(leak, ERASE, 0).astype(reference.dtype)
    run_refine(qtbot, widget)
    (call,) = spy["objects"]
    np.testing.assert_array_equal(call["negative"], leak)
    np.testing.assert_array_equal(call["previous"], previous == 5)
    seed = call["stroke"]
    assert seed.any() and not (seed & ~(previous == 5)).any() and seed.sum() < (previous == 5).sum()
    out = viewer.layers["coins refined"].data
    assert set(np.unique(out)) == {0, 5}
    refiner = Refiner(CorrectingStandIn(), "cpu")
    refiner.set_image(image)
    np.testing.assert_array_equal(out == 5, refiner.predict(seed, negative=leak, previous=previous == 5))
    assert iou(reference == 1, out == 5) > 0.7


def test_models_without_correction_inputs_ignore_them_once(setup, qtbot, sample, notes, spy):
    image, strokes, reference = sample
    with_erase = strokes.copy()
    with_erase[np.argwhere(reference == 2)[0][0], :20] = ERASE
    viewer, widget = setup(image, with_erase)  # BrightStandIn: image + "pos" only
    for _ in range(3):
        run_refine(qtbot, widget)
    assert not spy["objects"] and len(spy["labels"]) == 3
    for plane in spy["labels"]:
        np.testing.assert_array_equal(plane, strokes)  # the erase pixels are not an object
    said = [m for m in notes() if "takes no" in m]
    assert sorted(said) == sorted(
        f"model 'stand-in' takes no {what}: they are ignored; refined from the strokes alone"
        for what in ("erase strokes", "previous results")
    )
    assert ERASE not in viewer.layers["coins refined"].data


def test_rough_masks_reach_the_engine_as_priors(setup, qtbot, sample, notes, spy):
    """With "Rough masks" on, what is painted is each object's prior: first all at once, then one by one."""
    image, _, reference = sample
    rough = np.zeros_like(reference)
    for k in (1, 2, 3):  # each coin over-painted by 4 px
        rough[ndi.binary_dilation(reference == k, iterations=4) & (rough == 0)] = k
    viewer, widget = setup(image, rough.copy(), model=PriorStandIn())
    widget.rough_checkbox.setChecked(True)
    run_refine(qtbot, widget)
    assert spy["rough"] == [True] and not spy["objects"]
    np.testing.assert_array_equal(spy["labels"][0], rough)
    out = viewer.layers["coins refined"]
    refiner = Refiner(PriorStandIn(), "cpu")
    refiner.set_image(image)
    np.testing.assert_array_equal(out.data, refiner.predict_labels(rough, rough=True))
    for k in (1, 2, 3):
        assert iou(reference == k, out.data == k) > max(MIN_IOU, iou(reference == k, rough == k))

    strokes = viewer.layers["strokes"]
    leak = (rough == 2) & ~(reference == 2)
    strokes.data = np.where(leak, ERASE, rough).astype(rough.dtype)  # "not this" over object 2's rim
    run_refine(qtbot, widget)
    assert len(spy["objects"]) == 3  # one call per object, each its own prior (its previous result unused)
    for k, call in zip((1, 2, 3), spy["objects"], strict=True):
        np.testing.assert_array_equal(call["prior"], (rough == k) & ~leak)
        assert call["previous"] is None and call["stroke"].ndim == 0  # no stroke: the engine seeds the core
    assert not [m for m in notes() if "takes no" in m]

    widget.model_combo.add_model(BrightStandIn(), name="stroke stand-in")  # no prior input: said once
    for _ in range(2):
        run_refine(qtbot, widget)
    said = [m for m in notes() if "takes no rough masks" in m]
    assert said == ["model 'stroke stand-in' takes no rough masks: they are ignored; refined from the strokes alone"]


# ---- clicks --------------------------------------------------------------------------------------


def test_click_mode_clicks_are_disc_strokes(setup, qtbot, sample, spy):
    image, _, reference = sample
    viewer, widget = setup(image, model=CorrectingStandIn())
    clicks = widget.prompting.click_mode()
    assert isinstance(clicks, Points) and clicks.name == "coins clicks" and clicks.mode == "add"
    assert viewer.layers.selection.active is clicks
    strokes = viewer.layers["coins strokes"]  # made for the label choice
    assert widget.strokes_combo.currentText() == strokes.name and strokes.selected_label == 1

    points = three_clicks(reference == 1)
    clicks.add(points)
    run_refine(qtbot, widget)
    (plane,) = spy["labels"]
    np.testing.assert_array_equal(plane == 1, points_to_stroke(points, image.shape))
    assert set(np.unique(plane)) == {0, 1}
    out = viewer.layers["coins refined"]
    assert iou(reference == 1, out.data == 1) > MIN_IOU
    np.testing.assert_array_equal(strokes.data, 0)  # clicks stay clicks: the stroke layer is untouched

    strokes.selected_label = 3  # a second object, clicked
    clicks.add(three_clicks(reference == 3))
    widget.prompting.erase_checkbox.setChecked(True)  # erase clicks: "not this"
    wrong = np.argwhere(reference == 0)[0] + 3
    clicks.add(wrong)
    assert clicks.features[ql.CLICK_LABEL].tolist() == [1, 1, 1, 3, 3, 3, ERASE]
    run_refine(qtbot, widget)
    # the erase click reaches its object as a point (only its own pixel is held out), not as a painted disc
    assert all(c["negative"] is None for c in spy["objects"])
    (clicked,) = [c["clicks"] for c in spy["objects"] if c["clicks"] is not None]
    np.testing.assert_array_equal(clicked, [[*wrong, 0]])
    assert set(np.unique(out.data)) == {0, 1, 3}
    assert iou(reference == 3, out.data == 3) > MIN_IOU


def test_live_refine_follows_clicks(setup, qtbot, sample):
    image, _, reference = sample
    model = BrightStandIn()
    viewer, widget = setup(image, model=model)
    clicks = widget.prompting.click_mode()
    widget.prompting.live_checkbox.setChecked(True)
    clicks.add(three_clicks(reference == 2))  # one event: one refinement
    qtbot.waitUntil(lambda: "coins refined" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    assert model.calls == 1
    assert iou(reference == 2, viewer.layers["coins refined"].data == 1) > MIN_IOU
    clicks.selected_data = {0, 1, 2}
    clicks.remove_selected()
    qtbot.waitUntil(lambda: not viewer.layers["coins refined"].data.any(), timeout=WAIT_MS)


def test_clicks_with_the_bundled_default_model(setup, qtbot, sample):
    """The real default weights segment each coin from three clicks (the lead ships weights/default.pt)."""
    assert "default" in list_models(), "src/napari_segmentello/weights/default.pt is missing"
    image, _, reference = sample
    viewer, widget = setup(image)
    widget.model_combo.setCurrentIndex(widget.model_combo.findText("default"))
    clicks = widget.prompting.click_mode()
    strokes = viewer.layers["coins strokes"]
    for k in (1, 2, 3):
        strokes.selected_label = k
        clicks.add(three_clicks(reference == k))
    run_refine(qtbot, widget)
    out = viewer.layers["coins refined"].data
    scores = {k: iou(reference == k, out == k) for k in (1, 2, 3)}
    assert min(scores.values()) > 0.5, scores


# ---- propagation ---------------------------------------------------------------------------------


def moving_stack(image, reference, n=7, shift=-3, blank=(0,)):
    """``n`` planes of the image sliding by ``shift`` px per plane (left: no coin wraps round), ``blank`` empty."""
    planes = [np.roll(image, shift * z, axis=1) for z in range(n)]
    refs = [np.roll(reference, shift * z, axis=1) for z in range(n)]
    for z in blank:
        planes[z] = np.zeros_like(image)
        refs[z] = np.zeros_like(reference)
    return np.stack(planes), np.stack(refs)


def test_propagate_follows_objects_through_the_stack_in_one_undo_step(setup, qtbot, sample, monkeypatch):
    image, strokes, reference = sample
    stack, refs = moving_stack(image, reference)
    labels = np.zeros(stack.shape, strokes.dtype)
    labels[3] = np.roll(np.where(np.isin(strokes, (1, 2)), strokes, 0), -9, axis=1)
    viewer, widget = setup(stack, labels)
    viewer.dims.set_current_step(0, 3)
    assert widget.stack.propagate_button.isEnabled()
    run_refine(qtbot, widget)  # a plain Refine first: one undo step of its own
    out = viewer.layers["coins refined"]
    refined_plane = out.data.copy()
    assert out.data[3].any() and not np.delete(out.data, 3, axis=0).any()

    updates: list[tuple[int, int, bool]] = []
    update = progress.update

    def spy_update(self, n=1):
        update(self, n)
        updates.append((self.n, self.total, threading.current_thread() is threading.main_thread()))

    monkeypatch.setattr(progress, "update", spy_update)
    widget.stack.propagate_button.click()
    assert (
        widget.busy and not widget.stack.propagate_button.isEnabled() and not widget.prompting.refine_button.isEnabled()
    )
    assert widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.stack.propagate_button.isEnabled() and not widget.stop_button.isEnabled()
    assert updates and updates[-1][:2] == (2 * len(stack), 2 * len(stack)) and all(u[2] for u in updates)

    expected = np.zeros_like(out.data)  # the core's propagation of each object, lower ids first where they meet
    refiner = Refiner(BrightStandIn(), "cpu")
    for k in (1, 2):
        expected[propagate(stack, labels[3] == k, 3, refiner=refiner) & (expected == 0)] = k
    np.testing.assert_array_equal(out.data, expected)
    assert not out.data[0].any()  # the blank plane stops the walk
    for k in (1, 2):
        assert iou(refs[3] == k, out.data[3] == k) > MIN_IOU
    # each coin is followed onto every plane; the stand-in (brighter than its window) leaks into the
    # background as the walk goes on: plumbing, not quality, is tested, so no IoU bound off the start
    for z in range(1, len(stack)):
        for k in (1, 2):
            found = out.data[z] == k
            assert (found & (refs[z] == k)).sum() >= 0.9 * (refs[z] == k).sum(), (z, k)
            assert not (found & (refs[z] != 0) & (refs[z] != k)).any(), (z, k)
    assert 3 not in out.data  # no stroke for object 3 on this plane
    out.undo()  # one step reverts the whole propagation
    np.testing.assert_array_equal(out.data, refined_plane)


def test_propagate_needs_a_stack_and_a_stroke(setup, qtbot, sample, notes):
    image, strokes, _ = sample
    viewer, widget = setup(image, strokes)
    assert not widget.stack.propagate_button.isEnabled() and not widget.stack.adapt_spin.isEnabled()
    rgb_image = np.stack([image] * 3, axis=-1)
    viewer.add_image(rgb_image, name="rgb", rgb=True)
    widget.image_combo.setCurrentText("rgb")
    assert not widget.stack.propagate_button.isEnabled()  # H×W×3 is one plane, not a stack

    stack = np.stack([image] * 3)
    viewer.add_image(stack, name="stack")
    viewer.add_labels(np.zeros(stack.shape, np.uint8), name="empty")
    widget.image_combo.setCurrentText("stack")
    widget.strokes_combo.setCurrentText("empty")
    assert widget.stack.propagate_button.isEnabled() and widget.stack.adapt_spin.isEnabled()
    widget.stack.propagate()
    assert not widget.busy
    assert any("paint a stroke (or click) on this plane first" in m for m in notes())


def test_stop_and_close_end_a_propagation_without_writing(setup, qtbot, sample, notes):
    image, strokes, reference = sample
    stack, _ = moving_stack(image, reference, n=5, blank=())
    labels = np.zeros(stack.shape, strokes.dtype)
    labels[2] = strokes
    gate = threading.Event()
    model = BrightStandIn(gate)
    viewer, widget = setup(stack, labels, model=model)
    viewer.dims.set_current_step(0, 2)
    widget.stack.propagate()
    assert model.entered.wait(10)
    widget.stop_button.click()
    gate.set()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "Segmentello: stopped; nothing was written" in notes()
    assert "coins refined" not in viewer.layers

    gate.clear()
    model.entered.clear()
    widget.stack.propagate()
    worker = widget.worker
    assert model.entered.wait(10)
    viewer.window.remove_dock_widget(widget)
    gate.set()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT_MS)
    qtbot.wait(100)
    assert "coins refined" not in viewer.layers


# ---- finetuning ----------------------------------------------------------------------------------


def test_finetune_dialog_offers_the_images_masks(setup, qtbot, sample, tmp_path, monkeypatch):
    image, strokes, reference = sample
    viewer, widget = setup(image, strokes)
    viewer.add_labels(reference, name="coins refined", metadata={ql.OUTPUT_TAG: True})
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="elsewhere")
    widget.finetuning.finetune_dir = tmp_path
    asked = []

    def answer(dialog):
        assert [dialog.layers_list.item(i).text() for i in range(dialog.layers_list.count())] == [
            "strokes",
            "coins refined",
        ]
        assert [layer.name for layer in dialog.picked_layers()] == ["coins refined"]  # the output, pre-checked
        assert dialog.minutes() == 2.0
        out = dialog.output_path()
        assert out.parent == tmp_path and out.name.startswith("stand-in-finetuned-") and out.suffix == ".pt"
        asked.append(dialog)
        return QDialog.Accepted

    started = []
    monkeypatch.setattr(FinetuneDialog, "exec_", answer)
    monkeypatch.setattr(widget.finetuning, "finetune", lambda *args: started.append(args))
    widget.finetuning.finetune_button.click()
    assert len(asked) == 1
    ((layers, minutes, out),) = started
    assert [layer.name for layer in layers] == ["coins refined"] and minutes == 2.0 and out.parent == tmp_path


def test_finetune_on_labels_adds_a_working_model(setup, qtbot, sample, tmp_path, monkeypatch):
    """A real finetuning run of a few seconds: the saved checkpoint is offered, picked and refines."""
    image, strokes, reference = sample
    source = save_checkpoint(tmp_path / "tiny.pt", build_model("tiny16-32"))
    viewer, widget = setup(image, strokes)
    widget.model_combo.add_model(str(source))
    masks = viewer.add_labels(reference, name="coins refined", metadata={ql.OUTPUT_TAG: True})
    updates: list[int] = []
    update = progress.update
    monkeypatch.setattr(progress, "update", lambda self, n=1: (update(self, n), updates.append(self.n)))

    out = tmp_path / "models" / "mine.pt"
    widget.finetuning.finetune([masks], minutes=0.05, out=out)
    assert widget.busy and not widget.finetuning.finetune_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert out.is_file() and updates
    assert widget.model_combo.currentText() == "mine.pt" and widget.model_combo.currentData() == out
    assert load_model(out, "cpu").checkpoint.provenance["objects"] == 3
    run_refine(qtbot, widget)  # the new model refines (random start, a few seconds: no quality asked)
    assert viewer.layers["coins refined"].data.shape == image.shape

    monkeypatch.setattr(qt_finetune, "FINETUNED_DIR", out.parent)  # a later session lists it
    _, later = setup(image, strokes)
    names = [later.model_combo.itemText(i) for i in range(later.model_combo.count())]
    assert later.model_combo.itemData(names.index("mine.pt")) == out


def test_stop_or_close_cancels_finetuning(setup, qtbot, sample, tmp_path, notes):
    image, strokes, reference = sample
    source = save_checkpoint(tmp_path / "tiny.pt", build_model("tiny16-32"))
    viewer, widget = setup(image, strokes)
    widget.model_combo.add_model(str(source))
    masks = viewer.add_labels(reference, name="coins refined", metadata={ql.OUTPUT_TAG: True})
    n_models = widget.model_combo.count()

    widget.finetuning.finetune([masks], minutes=5, out=tmp_path / "stopped.pt")
    widget.stop_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert not (tmp_path / "stopped.pt").exists() and widget.model_combo.count() == n_models
    assert "Segmentello: stopped; nothing was written" in notes()

    widget.finetuning.finetune([masks], minutes=5, out=tmp_path / "closed.pt")
    worker = widget.worker
    viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert not Path(tmp_path / "closed.pt").exists()


def test_a_progress_report_racing_the_end_of_a_job_is_dropped(setup):
    """Moving the bar processes Qt events; if the job ends in them, the bar is gone: no crash."""
    _, widget = setup()
    widget.progress_bar("Segmentello: finetuning")
    bar, finish = widget._pbar, widget._on_finished
    bar.update = lambda n: finish()  # the job's end arrives while the bar moves
    widget._on_progress(1, 10, "loss 0.3")
    assert widget._pbar is None and bar.desc == "Segmentello: finetuning"


def test_a_note_shows_until_a_report_without_one(setup):
    _, widget = setup()
    widget.progress_bar("Segmentello: propagating 1 object(s)")
    widget._on_progress(1, 10, "object 1: adapting to this plane for 30 s")
    desc = lambda: widget._pbar.desc.removesuffix(": ")  # noqa: E731 (tqdm's set_description adds ": ")
    assert desc() == "Segmentello: propagating 1 object(s) (object 1: adapting to this plane for 30 s)"
    widget._on_progress(2, 10, "")
    assert desc() == "Segmentello: propagating 1 object(s)"
    widget._on_finished()


def test_finetune_errors_are_notifications(setup, qtbot, sample, tmp_path, notes):
    image, strokes, _ = sample
    viewer, widget = setup(image, strokes)
    empty = viewer.add_labels(np.zeros_like(strokes), name="nothing yet")
    widget.finetuning.finetune([empty], minutes=0.05, out=tmp_path / "x.pt")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert any("the picked labels layers are empty" in m for m in notes())
    assert not (tmp_path / "x.pt").exists()


def test_propagate_adapts_each_object_for_the_seconds_set(setup, qtbot, sample, monkeypatch):
    """The "adapt to this plane" box reaches propagate() for every object (0, "off", by default)."""
    from napari_segmentello._qt import stack as qt_stack

    image, strokes, _ = sample
    stack, _ = moving_stack(image, image, n=3, blank=())
    labels = np.zeros(stack.shape, strokes.dtype)
    labels[1] = np.where(np.isin(strokes, (1, 2)), strokes, 0)
    viewer, widget = setup(stack, labels)
    viewer.dims.set_current_step(0, 1)
    asked = []
    monkeypatch.setattr(
        qt_stack, "propagate", lambda *a, **k: (asked.append(k["adapt"]), np.zeros(stack.shape[:3], bool))[1]
    )
    assert widget.stack.adapt_spin.value() == 0 and widget.stack.adapt_spin.text() == "off"
    for seconds, expected in ((0, [0.0, 0.0]), (12, [12.0, 12.0])):
        asked.clear()
        widget.stack.adapt_spin.setValue(seconds)
        widget.stack.propagate_button.click()
        qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
        assert asked == expected


def test_the_progress_note_says_when_an_object_is_adapting(monkeypatch):
    """While propagate() adapts (after the start plane, before the next), the bar's note says so."""
    import threading as th

    from napari_segmentello._qt import stack as qt_stack

    def fake(volume, mask, at, *, progress, **kwargs):
        for done in (1, 1, 2, 3):  # the start plane, an adaptation step, then two more planes
            progress(done, 3)
        return np.zeros(volume.shape, bool)

    monkeypatch.setattr(qt_stack, "propagate", fake)
    objects = np.zeros((8, 8), np.uint8)
    objects[1, 1], objects[5, 5] = 1, 2
    for adapt, expected in ((0.0, [""] * 4), (30.0, ["adapting to this plane for 30 s"] * 2 + ["", ""])):
        notes = []
        qt_stack.propagate_job(
            BrightStandIn(),
            "cpu",
            0.5,
            np.zeros((3, 8, 8)),
            objects,
            1,
            rough=False,
            adapt=adapt,
            report=lambda done, total, note, notes=notes: notes.append(note),
            stop=th.Event(),
        )
        assert [n.removeprefix("object 2: ").removeprefix("object 1: ") for n in notes] == expected * 2
        assert not adapt or notes[0].startswith("object 1:") and notes[4].startswith("object 2:")
