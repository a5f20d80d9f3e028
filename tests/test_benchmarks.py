"""The benchmark scripts run (``--quick``) and write what the README's Performance section is built from.

Nothing here is about speed: only that every script runs as documented
(``python -m benchmarks.NAME`` from the checkout), that its JSON holds the
expected, positive figures, and that ``performance.md`` quotes exactly the
measured ratios. A random-init tiny16-32 checkpoint stands in for trained weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.models import build_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_module(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        check=False,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", build_model("tiny16-32"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, checkpoint, data_root) -> Path:
    """One ``run_all --quick`` of the headless benchmarks; the folder with its JSON and Markdown."""
    out = tmp_path_factory.mktemp("results")
    only = "latency,scaling,train_throughput"
    done = run_module(
        "run_all",
        "--quick",
        "--only",
        only,
        "--models",
        str(checkpoint),
        "--model",
        str(checkpoint),
        "--device",
        "cpu",
        "--out",
        str(out),
        env={"SEGMENTELLO_DATA": str(data_root)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def load(out: Path, name: str) -> dict:
    result = json.loads((out / f"{name}.json").read_text())
    machine = result["machine"]
    assert machine["cpu"] and machine["date"] and machine["torch"] == torch.__version__
    assert machine["git_commit"] is None or len(machine["git_commit"].split("+")[0]) == 40
    assert result["settings"]["quick"] is True
    return result


def positive(summary: dict) -> bool:
    return summary["n"] >= 1 and 0 < summary["min"] <= summary["median"] <= summary["max"]


@pytest.mark.data
def test_latency_compares_every_method_on_the_same_objects(quick_run):
    result = load(quick_run, "latency")
    methods = {"grabcut", "randomwalker", "refine:tiny", "predict:tiny"}
    objects = result["objects"]
    assert {o["dataset"] for o in objects} == {"coco-mini", "dsb2018-nuclei"} and len(objects) == 4
    assert all(set(o["ms"]) == methods and min(o["ms"].values()) > 0 for o in objects)
    for subset in ("all", "coco-mini", "dsb2018-nuclei"):
        assert set(result["warm_ms"][subset]) == methods
        assert all(positive(s) for s in result["warm_ms"][subset].values())
    assert set(result["cold_ms"]) == {"grabcut", "randomwalker", "refine:tiny"}
    for cold in result["cold_ms"].values():
        assert positive(cold["import_ms"]) and positive(cold["first_call_ms"])
        assert cold["process_ms"]["median"] > cold["cold_ms"]["median"]  # the process also starts and exits
    ratio = result["ratios"]["grabcut/refine:tiny"]
    expected = sorted(o["ms"]["grabcut"] / o["ms"]["refine:tiny"] for o in objects)
    assert ratio["n"] == 4 and ratio["median"] == pytest.approx((expected[1] + expected[2]) / 2)


@pytest.mark.data
def test_scaling_reports_time_and_memory_per_point(quick_run):
    result = load(quick_run, "scaling")
    assert [p["side"] for p in result["image_sweep"]] == [512, 2048]
    assert [p["extent"] for p in result["object_sweep"]] == [32, 128]
    for point in result["image_sweep"] + result["object_sweep"]:
        assert positive(point["time_ms"]) and point["baseline_mb"] > 0
        assert point["peak_reset"] is (sys.platform == "linux")
        assert point["peak_mb"] >= point["before_mb"] >= point["baseline_mb"]
    small, large = result["object_sweep"]
    assert small["roi_px"] < large["roi_px"]  # the window follows the stroke
    image_mb = 4096**2 / 2**20  # the object sweep's uint8 image, resident before refine
    assert large["peak_above_baseline_mb"] >= 0.9 * image_mb


@pytest.mark.data
def test_train_throughput_of_a_named_config(quick_run):
    (row,) = load(quick_run, "train_throughput")["configs"]
    assert row["config"] == "tiny16-32_bce-dice" and row["working_size"] == 128 and row["batch_size"] == 16
    assert min(row[f"{k}_samples_per_s"] for k in ("data", "step", "loop")) > 0


@pytest.mark.data
def test_performance_md_quotes_the_measured_ratios(quick_run):
    text = (quick_run / "performance.md").read_text()
    latency = load(quick_run, "latency")
    assert latency["machine"]["git_commit"] in text and latency["machine"]["date"] in text
    assert "not for quoting" in text  # a quick run says so
    for heading in ("Latency per object", "Scaling", "Training throughput"):
        assert f"### {heading}" in text
    for base in ("grabcut", "randomwalker"):
        ratio = latency["ratios"][f"{base}/refine:tiny"]
        assert f"takes {ratio['median']:.2f}× our time" in text.split("**In short**")[1]


@pytest.mark.data
def test_rebuilding_one_benchmark_keeps_the_other_tables(quick_run):
    done = run_module("run_all", "--markdown-only", "--only", "scaling", "--out", str(quick_run))
    assert done.returncode == 0, done.stderr[-3000:]
    text = (quick_run / "performance.md").read_text()
    for heading in ("Latency per object", "Scaling", "Training throughput"):
        assert f"### {heading}" in text


@pytest.mark.gui
def test_widget_roundtrip(tmp_path, checkpoint):
    done = run_module(
        "widget_roundtrip",
        "--quick",
        "--model",
        str(checkpoint),
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = load(tmp_path, "widget_roundtrip")
    assert result["cold_ms"] > 0 and result["strokes"] == 3
    for key in ("warm_new_layer_ms", "warm_existing_layer_ms", "engine_ms"):
        assert positive(result[key]) and result[key]["n"] == 2
    assert "### Widget round trip" in done.stdout


def test_bad_arguments_are_clear_errors(tmp_path):
    done = run_module("train_throughput", "--configs", "no-such-config", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown config(s) ['no-such-config']" in done.stderr
    assert "tiny16-32_bce-dice" in done.stderr  # the valid names are listed
    done = run_module("run_all", "--markdown-only", "--out", str(tmp_path))
    assert done.returncode == 2 and "no benchmark results in" in done.stderr
