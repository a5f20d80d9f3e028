"""CLI: ``refine`` and ``models`` end to end through ``cli.main``, and the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imread, imsave

from napari_segmentello import __version__, engine, loader
from napari_segmentello.checkpoint import save_checkpoint
from napari_segmentello.cli import main
from napari_segmentello.models import build_model

H, W = 80, 100
EXE = Path(sys.executable).with_name("napari-segmentello")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_model("tiny16-32"))


@pytest.fixture
def files(tmp_path):
    """An RGB image, a 0/255 stroke mask and a two-id label image, as files."""
    rng = np.random.default_rng(0)
    paths = {k: tmp_path / f"{k}.png" for k in ("image", "stroke", "labels")}
    imsave(paths["image"], rng.integers(0, 256, (H, W, 3), dtype=np.uint8), check_contrast=False)
    stroke = np.zeros((H, W), np.uint8)
    stroke[30:36, 20:60] = 255
    imsave(paths["stroke"], stroke, check_contrast=False)
    labels = np.zeros((H, W), np.uint8)
    labels[10:15, 10:40] = 1
    labels[60:66, 50:90] = 2
    imsave(paths["labels"], labels, check_contrast=False)
    return paths


def test_refine_one_stroke_writes_a_0_255_mask(files, checkpoint, tmp_path, capsys):
    out = tmp_path / "out" / "mask.png"
    argv = ["refine", str(files["image"]), str(files["stroke"]), "-o", str(out), "--model", str(checkpoint)]
    assert main([*argv, "--device", "cpu", "--threshold", "0.3"]) == 0
    mask = imread(out)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert "1 object(s)" in capsys.readouterr().out


def test_a_colour_stroke_file_is_one_object_where_it_is_painted(files, checkpoint, tmp_path):
    """A stroke saved in colour by an image editor (RGBA, transparent or black elsewhere) is the same stroke."""
    gray = imread(files["stroke"])
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[gray != 0] = (250, 40, 10, 255)  # a red stroke
    rgba[0:5, 0:5] = (255, 255, 255, 0)  # white but transparent: not painted
    imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    imsave(tmp_path / "la.png", rgba[..., [0, 3]], check_contrast=False)  # gray + alpha
    outs = {}
    for name, path in (("gray", files["stroke"]), ("rgba", tmp_path / "rgba.png"), ("la", tmp_path / "la.png")):
        outs[name] = tmp_path / f"{name}-out.png"
        argv = ["refine", str(files["image"]), str(path), "-o", str(outs[name]), "--model", str(checkpoint)]
        assert main([*argv, "--device", "cpu", "--threshold", "0.3"]) == 0
    np.testing.assert_array_equal(imread(outs["rgba"]), imread(outs["gray"]))
    np.testing.assert_array_equal(imread(outs["la"]), imread(outs["gray"]))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_refine_label_image_writes_uint16_labels(files, checkpoint, tmp_path, suffix):
    out = tmp_path / f"labels{suffix}"
    assert main(["refine", str(files["image"]), str(files["labels"]), "-o", str(out), "--model", str(checkpoint)]) == 0
    labels = imread(out)
    assert labels.shape == (H, W) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_refine_rough_gives_the_label_image_as_rough_masks(files, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("tiny16-32", extras=("pos", "neg", "prev"), context="object")
    ckpt = save_checkpoint(tmp_path / "object.pt", model)
    calls = []
    refine_labels = engine.refine_labels
    monkeypatch.setattr(engine, "refine_labels", lambda *a, **k: calls.append(k["rough"]) or refine_labels(*a, **k))
    out = tmp_path / "refined.png"
    argv = ["refine", str(files["image"]), str(files["labels"]), "-o", str(out), "--model", str(ckpt), "--rough"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert calls == [True]
    image, labels = imread(files["image"]), imread(files["labels"])
    expected = engine.refine_labels(image, labels, rough=True, model=ckpt, device="cpu")
    np.testing.assert_array_equal(imread(out), expected)


def test_refine_negative_strokes_reach_the_engine_and_a_model_without_them_says_so(files, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "object.pt", build_model("tiny16-32", extras=("pos", "neg"), context="object"))
    not_this = np.zeros((H, W), np.uint8)
    not_this[20:50, 30:50] = 255  # over the stroke's neighbourhood: the answer may not reach it
    imsave(tmp_path / "not_this.png", not_this, check_contrast=False)
    image, stroke = imread(files["image"]), imread(files["stroke"])
    for name, expected in (
        ("stroke", engine.refine(image, stroke, negative=not_this, model=ckpt, device="cpu", threshold=0.01)),
        ("labels", engine.refine_labels(image, imread(files["labels"]), negative=not_this, model=ckpt, device="cpu")),
    ):
        out = tmp_path / f"{name}-out.png"
        argv = ["refine", str(files["image"]), str(files[name]), "-o", str(out), "--model", str(ckpt)]
        threshold = ["--threshold", "0.01"] if name == "stroke" else []
        assert main([*argv, "--device", "cpu", "--negative", str(tmp_path / "not_this.png"), *threshold]) == 0
        written = imread(out)
        np.testing.assert_array_equal(written != 0, expected != 0)
        assert not written[not_this != 0].any()
    assert engine.refine(image, stroke, model=ckpt, device="cpu", threshold=0.01)[not_this != 0].any()

    plain = save_checkpoint(tmp_path / "plain.pt", build_model("tiny16-32"))  # extras ("pos",)
    argv = ["refine", str(files["image"]), str(files["stroke"]), "-o", str(tmp_path / "x.png"), "--model", str(plain)]
    assert main([*argv, "--negative", str(tmp_path / "not_this.png")]) == 2
    assert "takes no negative" in capsys.readouterr().err


def test_refine_clicks_from_a_csv_file(files, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "object.pt", build_model("tiny16-32", extras=("pos", "neg"), context="object"))
    (tmp_path / "clicks.csv").write_text("row,col,positive\n33, 40\n# the next one says 'not this'\n33,70,0\n")
    image = imread(files["image"])
    expected = engine.refine(image, clicks=[(33, 40, 1), (33, 70, 0)], model=ckpt, device="cpu", threshold=0.01)
    out = tmp_path / "clicked.png"
    argv = ["refine", str(files["image"]), "--clicks", str(tmp_path / "clicks.csv"), "-o", str(out)]
    assert main([*argv, "--model", str(ckpt), "--device", "cpu", "--threshold", "0.01"]) == 0
    np.testing.assert_array_equal(imread(out) != 0, expected)

    (tmp_path / "bad.csv").write_text("33,40\n33;70\n")
    assert main([*argv[:3], str(tmp_path / "bad.csv"), *argv[4:], "--model", str(ckpt)]) == 2
    assert "bad.csv:2: expected 'row,col' or 'row,col,positive' numbers" in capsys.readouterr().err
    assert main(["refine", str(files["image"]), "-o", str(out), "--model", str(ckpt)]) == 2
    assert "give a stroke file, --clicks FILE, or both" in capsys.readouterr().err
    with_labels = [*argv[:2], str(files["labels"]), *argv[2:], "--model", str(ckpt)]
    assert main(with_labels) == 2
    assert "--clicks refines one object, but the stroke file holds 2 label ids" in capsys.readouterr().err


def test_refine_rough_with_a_stroke_model_says_it_takes_no_rough_mask(files, checkpoint, tmp_path, capsys):
    argv = ["refine", str(files["image"]), str(files["stroke"]), "-o", str(tmp_path / "m.png"), "--rough"]
    assert main([*argv, "--model", str(checkpoint), "--device", "cpu"]) == 2
    assert "takes no rough mask" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "missing.png"}, "no such file"),
        ({"output": "mask.jpg"}, "lossless"),
        ({"model": "no-such-model"}, "unknown model"),
        ({"threshold": "2"}, "threshold"),
        ({"stroke": "blank.png"}, "empty"),
        ({"image": "garbage.png"}, "cannot read"),
    ],
)
def test_refine_errors_are_one_line_and_exit_2(files, checkpoint, tmp_path, capsys, change, message):
    imsave(tmp_path / "blank.png", np.zeros((H, W), np.uint8), check_contrast=False)
    (tmp_path / "garbage.png").write_text("not an image")
    args = {"image": files["image"], "stroke": files["stroke"], "output": "mask.png", "model": checkpoint}
    args |= {"threshold": "0.5"} | change
    image, stroke, output = (str(tmp_path / args[k]) for k in ("image", "stroke", "output"))
    argv = ["refine", image, stroke, "-o", output]
    assert main([*argv, "--model", str(args["model"]), "--threshold", args["threshold"]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_models_table_reads_spec_provenance_and_metrics(monkeypatch, tmp_path, capsys):
    model = build_model("tiny16-32")
    save_checkpoint(tmp_path / "default.pt", model, provenance={"dataset": "coco-mini"}, metrics={"val": {"iou": 0.5}})
    monkeypatch.setattr(loader, "WEIGHTS_DIR", tmp_path)
    assert main(["models"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["name", "size", "params"]
    params = sum(p.numel() for p in model.parameters())
    for cell in ("default", f"{params:,}", "rgb+pos@128", "coco-mini", "val/iou=0.500"):
        assert cell in row


def test_models_without_bundled_weights_says_how_to_get_them(monkeypatch, tmp_path, capsys, checkpoint):
    monkeypatch.setattr(loader, "WEIGHTS_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "no bundled weights" in capsys.readouterr().out
    assert main(["models", str(checkpoint)]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("tiny ")
    assert main(["models", str(tmp_path / "missing.pt")]) == 2


def test_console_script_help_version_and_error_exit():
    version = subprocess.run([str(EXE), "--version"], capture_output=True, text=True, check=True)
    assert __version__ in version.stdout
    for command in ("refine", "models"):
        helped = subprocess.run([str(EXE), command, "--help"], capture_output=True, text=True, check=True)
        assert f"usage: napari-segmentello {command}" in helped.stdout
    failed = subprocess.run([str(EXE), "refine", "a.png", "b.png", "-o", "c.png"], capture_output=True, text=True)
    assert failed.returncode == 2 and "no such file: a.png" in failed.stderr
