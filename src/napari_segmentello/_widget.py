"""The napari dock widget: the controller's pickers, then one panel per action.

Thin on purpose: panels read the displayed plane out of the layers, hand it to the engine
(:class:`napari_segmentello.engine.Refiner`, :func:`~napari_segmentello.propagate.propagate`,
:func:`~napari_segmentello.finetune.finetune`) in the controller's worker thread and write the
result into a ``<image> refined`` Labels layer as one undo step. The user's layers are only ever read.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QWidget

from napari_segmentello._qt.controller import Controller
from napari_segmentello._qt.finetune import FinetunePanel
from napari_segmentello._qt.prompting import PromptPanel
from napari_segmentello._qt.stack import StackPanel


class SegmentelloWidget(Controller):
    """Dock widget: paint a stroke per object into a Labels layer (or click), press Refine; propagate; finetune."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.prompting = PromptPanel(self)
        self.stack = StackPanel(self)
        self.finetuning = FinetunePanel(self)
        for panel in (self.prompting, self.stack, self.finetuning):
            self.add_panel(panel)
