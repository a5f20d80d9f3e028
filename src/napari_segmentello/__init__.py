"""napari-segmentello: paint one rough stroke, get a precise mask.

The public API (a contract other tools call) is re-exported here lazily, so
``import napari_segmentello`` stays cheap and never pulls in Qt or napari:

- :func:`refine` — one 2D stroke on one 2D image -> boolean mask
- :func:`refine_labels` — every label id refined as its own object
- :class:`Refiner` — set the image once, predict many strokes
- :func:`list_models`, :func:`load_model` — bundled weights and checkpoints
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("napari-segmentello")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

_LAZY = {
    "refine": "napari_segmentello.engine",
    "refine_labels": "napari_segmentello.engine",
    "Refiner": "napari_segmentello.engine",
    "list_models": "napari_segmentello.loader",
    "load_model": "napari_segmentello.loader",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_segmentello' has no attribute {name!r}")
