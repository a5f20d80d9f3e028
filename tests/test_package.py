"""Packaging: the core stays Qt-free, the manifest is valid and travels inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import import_module
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = [
    "napari_segmentello",
    "napari_segmentello.engine",
    "napari_segmentello.models",
    "napari_segmentello.checkpoint",
    "napari_segmentello.strokes",
    "napari_segmentello.losses",
    "napari_segmentello.metrics",
    "napari_segmentello.data",
    "napari_segmentello.roi",
    "napari_segmentello.inputs",
    "napari_segmentello.cli",
]
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def test_core_imports_without_qt_or_napari():
    code = (
        "import sys\n"
        f"for m in {CORE_MODULES!r}: __import__(m)\n"
        "import napari_segmentello as ns; ns.refine\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core pulled in GUI modules: {out.stdout.strip()}"


def _manifest() -> dict:
    return yaml.safe_load((ROOT / "napari.yaml").read_text())


def test_every_python_name_in_manifest_imports():
    names = [c["python_name"] for c in _manifest()["contributions"]["commands"]]
    assert names
    for name in names:
        module, _, attr = name.partition(":")
        assert callable(getattr(import_module(module), attr)), name


def test_manifest_in_package_is_the_top_level_one():
    packaged = ROOT / "src" / "napari_segmentello" / "napari.yaml"
    assert packaged.read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_npe2_validates_and_discovers_plugin():
    npe2 = Path(sys.executable).with_name("npe2")
    out = subprocess.run([str(npe2), "validate", "napari_segmentello"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    listed = subprocess.run([str(npe2), "list"], capture_output=True, text=True, check=True)
    assert "napari-segmentello" in listed.stdout


@pytest.mark.slow
def test_wheel_contains_manifest_and_only_the_core_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("napari_segmentello-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("napari_segmentello/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari_segmentello:napari.yaml" in entry_points
    assert "napari-segmentello = napari_segmentello.cli:main" in entry_points
    top_level = {n.split("/")[0] for n in names}
    assert not any(t in {"training", "tests", "benchmarks", "scripts"} for t in top_level), top_level
    for weights in (ROOT / "src" / "napari_segmentello" / "weights").glob("*.pt"):
        assert f"napari_segmentello/weights/{weights.name}" in names


def test_console_script_version_and_help():
    exe = Path(sys.executable).with_name("napari-segmentello")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    from napari_segmentello import __version__

    assert __version__ in version.stdout
    helped = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "usage: napari-segmentello" in helped.stdout
