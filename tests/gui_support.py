"""Shared GUI test support, loaded as a pytest plugin by ``conftest.py``.

A stand-in model with a fixed rule (brighter than its window's mean = object;
coins are bright on a dark background) replaces trained weights, so the widget
tests check its plumbing (plane, ROI, paste, ids, layers) independently of model quality.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager
from torch import nn

from napari_segmentello._sample_data import load_sample
from napari_segmentello._widget import SegmentelloWidget
from napari_segmentello.models import get_spec

MIN_IOU = 0.85  # the stand-in scores 0.93-0.98 on the three sample coins when the plumbing is right
WAIT_MS = 20_000


class BrightStandIn(nn.Module):
    """Logits +/- from 'brighter than the window's mean'; counts forward passes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.spec = get_spec("tiny16-32")
        self.calls = 0
        self.gate = gate  # when given, forward waits for it (a run still going when the widget closes)
        self.entered = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.calls += 1
        gray = x[:, : self.spec.image_channels].mean(1, keepdim=True)
        return 20 * (gray - gray.mean((2, 3), keepdim=True))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def notes():
    """Messages of the notifications shown during the test."""
    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


@pytest.fixture
def sample():
    return load_sample()


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    """viewer + docked widget with the stand-in model; ``setup(image, strokes, **image_kwargs)``."""

    def make(image=None, strokes=None, model=None, **image_kwargs):
        viewer = make_napari_viewer()
        if image is not None:
            viewer.add_image(image, name="coins", **image_kwargs)
        if strokes is not None:
            viewer.add_labels(strokes, name="strokes", scale=image_kwargs.get("scale"))
        widget = SegmentelloWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.model_combo.add_model(model or BrightStandIn(), name="stand-in")
        widget.device_combo.setCurrentText("cpu")
        return viewer, widget

    return make


def run_refine(qtbot, widget) -> None:
    widget.prompting.refine_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT_MS)
    assert widget.prompting.refine_button.isEnabled()
