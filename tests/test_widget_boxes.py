"""Box mode (issue 16): rectangles in a Shapes layer as objects, corrected by strokes; and the panels' independence.

The stand-in of ``gui_support`` is given an object-aware recipe with a box channel
(bright rule, inside the box): it tests the wiring, not a trained model's quality.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from napari.layers import Labels, Shapes
from scipy import ndimage as ndi

from gui_support import MIN_IOU, WAIT_MS, BrightStandIn, iou, run_refine

from napari_segmentello._qt.boxes import BOX_LABEL, free_id, pixel_box, plane_boxes
from napari_segmentello._qt.controller import ERASE_ID
from napari_segmentello.loader import list_models
from napari_segmentello.models import get_spec


class BoxStandIn(BrightStandIn):
    """The bright rule, only inside the box channel; takes every prompt of the object-aware recipe."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = get_spec("tiny16-32", extras=("pos", "neg", "prev", "box"), context="object")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = x[:, self.spec.image_channels + self.spec.extras.index("box")][:, None] > 0.5
        return torch.where(box, super().forward(x), torch.full_like(box, -20, dtype=x.dtype))


def rectangle(mask: np.ndarray, pad: float = 3) -> np.ndarray:
    """napari rectangle corners (row, col; data coordinates) around ``mask``, ``pad`` px clear of it."""
    rows, cols = np.nonzero(mask)
    return np.array([[rows.min() - pad, cols.min() - pad], [rows.max() + pad, cols.max() + pad]], float)


def test_rectangles_become_end_exclusive_pixel_boxes_with_free_ids():
    assert pixel_box([[-0.5, -0.5], [9.5, 9.5]]) == (0, 0, 10, 10)  # the edges of pixels 0..9
    assert pixel_box([[7.8, 2.3], [2.3, 7.8]]) == (3, 3, 8, 8)  # centres 3..7 inside; corner order is free
    assert pixel_box([[2.9999999, 0], [4.0000001, 0]]) == (3, 0, 5, 1)  # transform noise keeps pixels 3..4
    assert pixel_box([[3.2, 3.2], [3.4, 3.4]]) == (4, 4, 4, 4)  # holds no pixel centre: the engine refuses it

    def on(z, r0, c0, r1, c1):
        return [[z, r0, c0], [z, r0, c1], [z, r1, c1], [z, r1, c0]]

    boxes = Shapes(
        [on(1, 0, 0, 4, 4), on(1, 10, 10, 12, 12), on(2, 0, 0, 5, 5), on(1, 20, 20, 22, 30)],
        shape_type="rectangle",
        features={BOX_LABEL: [1, 1, 2, 0]},
    )
    s = slice(None)
    assert plane_boxes(boxes, (1, s, s)) == {1: (0, 0, 13, 13)}  # one id's boxes: their union; id 0 is no object
    assert plane_boxes(boxes, (2, s, s)) == {2: (0, 0, 6, 6)}
    with pytest.raises(ValueError, match="has 3 dimensions but the image has 2"):
        plane_boxes(boxes, (s, s))

    strokes = Labels(np.array([[0, 3], [ERASE_ID, 0]], np.uint16))  # an erase stroke's label is no object id
    assert free_id([strokes, None, boxes], ERASE_ID) == 4
    assert free_id([Labels(np.full((2, 2), ERASE_ID - 1, np.uint16))], ERASE_ID) == ERASE_ID + 1
    assert free_id([None], ERASE_ID) == 1


@pytest.mark.gui
def test_box_mode_one_object_per_rectangle_then_corrected(setup, qtbot, sample):
    image, _, reference = sample
    viewer, widget = setup(image, model=BoxStandIn())
    boxes = widget.prompting.box_mode()
    assert isinstance(boxes, Shapes) and boxes.name == "coins boxes" and boxes.mode == "add_rectangle"
    assert viewer.layers.selection.active is boxes
    strokes = viewer.layers["coins strokes"]  # made for the output's dtype and the correcting brush

    first = rectangle(reference == 1)
    boxes.add_rectangles(first)  # refined on release, as one undo step
    qtbot.waitUntil(lambda: "coins refined" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    out = viewer.layers["coins refined"]
    assert set(np.unique(out.data)) == {0, 1} and iou(reference == 1, out.data == 1) > MIN_IOU
    assert strokes.selected_label == 1  # strokes and erase strokes now correct this object

    boxes.add_rectangles(rectangle(reference == 3))  # the next free id
    qtbot.waitUntil(lambda: 2 in out.data and not widget.busy, timeout=WAIT_MS)
    assert boxes.features[BOX_LABEL].tolist() == [1, 2] and strokes.selected_label == 2
    assert iou(reference == 3, out.data == 2) > MIN_IOU
    np.testing.assert_array_equal([boxes.data[0].min(0), boxes.data[0].max(0)], first)  # left as drawn
    assert not strokes.data.any()  # the user's layers are only read

    rim = (reference == 3) & ~ndi.binary_erosion(reference == 3, iterations=4)
    left = np.arange(image.shape[1]) < np.argwhere(rim)[:, 1].mean()
    strokes.data = np.where(rim & left, ERASE_ID, 0).astype(strokes.data.dtype)
    before = out.data.copy()
    run_refine(qtbot, widget)  # Refine: both boxes again, the erase stroke removing a rim from object 2
    assert not ((out.data == 2) & (strokes.data == ERASE_ID)).any()
    assert ((before == 2) & (strokes.data == ERASE_ID)).any()
    assert iou(before == 1, out.data == 1) > 0.95
    out.undo()
    np.testing.assert_array_equal(out.data, before)
    out.undo()
    assert set(np.unique(out.data)) == {0, 1}  # each box was its own undo step


@pytest.mark.gui
def test_a_box_for_a_model_without_a_box_input_is_a_notification(setup, qtbot, sample, notes):
    image, _, reference = sample
    viewer, widget = setup(image)  # BrightStandIn: image + "pos" only
    widget.prompting.box_mode().add_rectangles(rectangle(reference == 2))
    qtbot.waitUntil(lambda: any("takes no box" in m for m in notes()), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert "coins refined" not in viewer.layers


def test_panels_import_without_each_other():
    panels = {"prompting", "stack", "finetune"}
    for panel in panels:
        others = [f"napari_segmentello._qt.{p}" for p in panels - {panel}]
        code = f"import sys, napari_segmentello._qt.{panel}; print([m for m in {others!r} if m in sys.modules])"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "[]", (panel, done.stdout, done.stderr[-2000:])


@pytest.mark.gui
def test_boxes_with_the_bundled_object_model(setup, qtbot, sample):
    """The bundled ``default`` weights (object-aware, box channel) segment each sample coin from its box."""
    assert "default" in list_models(), "src/napari_segmentello/weights/default.pt is missing"
    image, _, reference = sample
    viewer, widget = setup(image)
    widget.model_combo.setCurrentIndex(widget.model_combo.findText("default"))
    boxes = widget.prompting.box_mode()
    boxes.add_rectangles(rectangle(reference == 1))
    qtbot.waitUntil(lambda: "coins refined" in viewer.layers and not widget.busy, timeout=WAIT_MS)
    assert iou(reference == 1, viewer.layers["coins refined"].data == 1) >= 0.85
