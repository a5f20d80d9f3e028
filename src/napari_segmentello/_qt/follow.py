"""The prompt layers' napari events, re-emitted as Qt signals for the prompting panel.

One object follows the picked stroke layer and the image's clicks and boxes layers, swapping its
connections when the picks change, so the panel holds no event plumbing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_segmentello._qt import layers as ql


class PromptFollower(QObject):
    """Connected to at most one stroke layer, one clicks layer and one boxes layer at a time."""

    brush_changed = Signal()  # the stroke layer's label changed, or another stroke or clicks layer is followed
    edited = Signal(str, object)  # ("paint" | "clicks" | "box drawn" | "boxes", ids whose refinement is now stale)
    box_starting = Signal()  # a rectangle is about to be added: time to give it its id

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.strokes: Any = None
        self.clicks: Any = None
        self.boxes: Any = None

    def follow(self, strokes: Any, clicks: Any, boxes: Any) -> None:
        """Follow these layers (``None``: none); connections to the previous ones are dropped."""
        if self._swap("strokes", strokes, [("paint", self._on_paint), ("selected_label", self._on_label)]):
            self._on_label()
        if self._swap("clicks", clicks, [("data", self._on_clicks)]):
            self._on_label()
        self._swap("boxes", boxes, [("data", self._on_boxes)])

    def _swap(self, attr: str, layer: Any, hooks: list[tuple[str, Callable]]) -> bool:
        """True when ``layer`` is newly followed."""
        old = getattr(self, attr)
        if layer is old:
            return False
        for name, hook in hooks:
            if old is not None:
                getattr(old.events, name).disconnect(hook)
            if layer is not None:
                getattr(layer.events, name).connect(hook)
        setattr(self, attr, layer)
        return layer is not None

    def _on_label(self, event: Any = None) -> None:
        if self.strokes is not None:
            self.brush_changed.emit()

    def _on_paint(self, event: Any) -> None:
        self.edited.emit("paint", ql.painted_ids(getattr(event, "value", None)))

    def _on_clicks(self, event: Any) -> None:
        """Clicks added, moved or about to be removed: their objects' refinements are stale."""
        if str(event.action) in ("added", "changed", "removing"):
            self.edited.emit("clicks", ql.clicked_ids(self.clicks, event.data_indices))

    def _on_boxes(self, event: Any) -> None:
        """A box about to be added, drawn (on release), moved or about to be removed."""
        action = str(event.action)
        if action == "adding":
            self.box_starting.emit()
        elif action in ("added", "changed", "removing"):
            kind = "box drawn" if action == "added" else "boxes"
            self.edited.emit(kind, ql.clicked_ids(self.boxes, event.data_indices))
