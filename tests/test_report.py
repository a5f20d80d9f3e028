"""README blocks from run JSON: real strokes, clicks with published context, boxes; spliced between markers only."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from training import evaluate, noc, report

METRICS = dict.fromkeys(evaluate.KEYS, 0.0)


def _eval_run(tmp_path: Path, name: str, ious: dict[str, list[float]], **extra) -> Path:
    """A results.json as evaluate writes it, with the given per-object IoUs per method (no "model": it did not run)."""
    n = len(next(iter(ious.values())))
    categories = extra.pop("categories", ["object"] * n)
    objects = [
        {
            "category": categories[i],
            "metrics": {m: {**METRICS, "iou": v[i]} for m, v in ious.items()},
            "latency_ms": dict.fromkeys(ious, 2.0),
        }
        for i in range(n)
    ]
    results = {
        "model": "default",
        "command": f"python -m training.evaluate --dataset {name}",
        "dataset": {"name": name, "split": "val"},
        "device": "cpu",
        "n_objects": n,
        "methods": evaluate.summarize(objects, list(ious)),
        "objects": objects,
        "protocol": "real",
        **extra,
    }
    path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(results))
    return path


def _noc_run(tmp_path: Path, name: str, curves: dict[str, list[list[float]]]) -> Path:
    records = [{"iou": {m: c[i] for m, c in curves.items()}} for i in range(len(next(iter(curves.values()))))]
    rounds = len(records[0]["iou"]["model"])
    results = {
        "model": "default",
        "command": f"python -m training.noc --dataset {name} --protocol clicks",
        "dataset": {"name": name, "split": "val"},
        "rounds": rounds,
        "targets": [0.85, 0.9],
        "n_objects": len(records),
        "methods": noc.summarize(records, list(curves), [0.85, 0.9], rounds),
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(results))
    return path


def _row(lines: list[str], start: str) -> list[str]:
    (row,) = [line for line in lines if line.startswith(start)]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_real_block_shows_the_measured_means_and_the_command(tmp_path):
    path = _eval_run(
        tmp_path,
        "acdc-scribbles",
        {"model": [0.5, 0.7], "grabcut": [0.4, 0.5], "identity": [0.1, 0.2]},
        model_prompt="stroke + negative strokes",
    )
    lines = report.real_block([path])
    assert lines[0] == "Command: `python -m training.evaluate --dataset acdc-scribbles`."
    assert _row(lines, "| **default**")[1] == "0.600" and _row(lines, "| GrabCut")[1] == "0.450"
    assert _row(lines, "| stroke alone")[1] == "0.150"
    assert "stroke + negative strokes" in "\n".join(lines) and "2 objects of acdc-scribbles val" in "\n".join(lines)


def test_real_block_breaks_iou_down_by_structure(tmp_path):
    ious = {"model": [0.9, 0.3, 0.5], "grabcut": [0.6, 0.4, 0.2]}
    path = _eval_run(tmp_path, "acdc-scribbles", ious, categories=["ring", "blob", "ring"], model_prompt="stroke")
    lines = report.real_block([path])
    assert _row(lines, "| IoU by structure") == ["IoU by structure (objects)", "**default**", "GrabCut"]
    assert _row(lines, "| blob (1)")[1:] == ["0.300", "0.400"]
    assert _row(lines, "| ring (2)")[1:] == ["0.700", "0.400"]


def test_real_block_says_which_strokes_were_given_and_takes_one_protocol(tmp_path):
    alone = _eval_run(tmp_path, "acdc-scribbles", {"model": [0.5]}, model_prompt="stroke")
    every = _eval_run(tmp_path, "acdc-scribbles", {"model": [0.6]}, model_prompt="stroke", protocol="real-all")
    text = "\n".join(report.real_block([every]))
    assert evaluate.REAL_PROTOCOLS["real-all"] in text and evaluate.REAL_PROTOCOLS["real"] not in text
    assert evaluate.REAL_PROTOCOLS["real"] in "\n".join(report.real_block([alone]))
    with pytest.raises(ValueError, match="one recorded-stroke protocol"):
        report.real_block([alone, every])


def test_box_block_says_when_the_model_takes_no_box(tmp_path):
    runs = [
        _eval_run(tmp_path, "coco-mini", {"grabcut": [0.6], "identity": [0.5]}, model_prompt="model takes no box"),
        _eval_run(
            tmp_path, "dsb2018-nuclei", {"model": [0.9], "grabcut": [0.7], "identity": [0.6]}, model_prompt="box"
        ),
    ]
    lines = report.box_block(runs)
    assert _row(lines, "| coco-mini val | 1 | **default**")[2] == "**default**: model takes no box"
    assert _row(lines, "| dsb2018-nuclei val | 1 | **default**")[3] == "0.900"
    assert _row(lines, "| coco-mini val | 1 | GrabCut")[3] == "0.600"
    assert all(f"- `python -m training.evaluate --dataset {d}`" in lines for d in ("coco-mini", "dsb2018-nuclei"))


def test_clicks_block_has_noc_failures_ious_and_labelled_anchors(tmp_path):
    curves = {"model": [[0.5, 0.86, 0.91], [0.2, 0.3, 0.4]], "grabcut": [[0.9, 0.95, 0.95], [0.1, 0.1, 0.1]]}
    lines = report.clicks_block([_noc_run(tmp_path, "em-isbi2012", curves)])
    header = _row(lines, "| dataset")
    assert header[3:] == ["NoC@85", "NoC@90", "failures@85", "failures@90", "IoU@1", "IoU@3"]
    assert _row(lines, "| em-isbi2012 val | 2 | **default**")[3:] == ["2.50", "3.00", "1", "1", "0.350", "0.655"]
    assert _row(lines, "| em-isbi2012 val | 2 | GrabCut")[3:5] == ["2.00", "2.00"]
    text = "\n".join(lines)
    assert "not the same test" in text and "COCO MVal 2.98" in text and "DAVIS 5.74" in text
    assert "- `python -m training.noc --dataset em-isbi2012 --protocol clicks`" in lines


def test_splice_sections_writes_only_the_blocks_given(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- real:begin -->\nold\n<!-- real:end -->\nb\n<!-- box:begin -->\nkeep\n<!-- box:end -->\n")
    path = _eval_run(tmp_path, "acdc-scribbles", {"model": [0.5], "identity": [0.1]}, model_prompt="stroke")
    blocks = {"performance": None, "noc": None, "real_all": None, "clicks": None, "box": None, "propagation": None}
    args = argparse.Namespace(real=[path], **blocks)
    assert report.splice_sections(args, readme)
    text = readme.read_text()
    assert "old" not in text and "| **default** | 0.500 |" in text and "keep" in text
    assert not report.splice_sections(
        argparse.Namespace(
            performance=None, noc=None, real=None, real_all=None, clicks=None, box=None, propagation=None
        ),
        readme,
    )


def test_every_block_has_its_markers_in_the_readme():
    text = (Path(report.REPO) / "README.md").read_text()
    for name in (*report.BLOCKS, "results", "noc", "performance", "propagation", "propagation-adapt"):
        assert f"<!-- {name}:begin -->" in text and f"<!-- {name}:end -->" in text


def test_readme_tables_script_runs_every_command_the_readme_names():
    """``scripts/readme_tables.sh`` (dry run: PYTHON=echo) runs each command a README block says made it."""
    text = (Path(report.REPO) / "README.md").read_text()
    named = set(re.findall(r"Command: `(python -m [^`]+)`", text))
    named |= set(re.findall(r"^- `(python -m training\.[^`]+)`$", text, re.M))
    env = {**os.environ, "PYTHON": "echo python"}
    run = subprocess.run(["bash", "scripts/readme_tables.sh"], cwd=report.REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ran = {line.replace(" --force", "") for line in run.stdout.splitlines()}
    assert len(named) > 25 and named <= ran, sorted(named - ran)


def test_real_block_puts_several_models_side_by_side_with_the_first_runs_baselines(tmp_path):
    new = _eval_run(tmp_path, "acdc-scribbles", {"model": [0.8], "grabcut": [0.4]}, model_prompt="stroke")
    old = _eval_run(tmp_path, "acdc-scribbles", {"model": [0.6], "grabcut": [0.3]}, model_prompt="stroke")
    old.write_text(old.read_text().replace('"model": "default"', '"model": "tiny-2025"'))
    lines = report.real_block([new, old])
    assert _row(lines, "| **default**")[1] == "0.800" and _row(lines, "| **tiny-2025**")[1] == "0.600"
    assert _row(lines, "| GrabCut")[1] == "0.400"  # the baselines of the first run, once
    assert sum(line.startswith("Command:") for line in lines) == 2
