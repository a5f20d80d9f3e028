"""Shared fixtures. The real data under ../shared/data is required: tests fail, never skip, without it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from napari_segmentello.data import default_data_root

torch.set_num_threads(2)

pytest_plugins = ["gui_support"]  # GUI fixtures (setup, sample, notes) shared by the widget tests


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data (``SEGMENTELLO_DATA`` or ``<checkout>/../shared/data``)."""
    root = default_data_root()
    if not (root / "coco-mini" / "annotations" / "instances_val.json").is_file():
        pytest.fail(f"real data not found under {root}; set SEGMENTELLO_DATA or put shared/ beside the checkout")
    return root


@pytest.fixture(scope="session")
def script() -> Callable[[str], ModuleType]:
    """``script(name)``: ``scripts/<name>.py`` loaded as a module (scripts/ is not a package)."""

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
