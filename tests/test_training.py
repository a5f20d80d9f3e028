"""Training: configs, the sample cut, and short real runs (artifacts, determinism, resume, early stopping, finetuning).

The runs are tiny (3 coco-mini train images, 2 batches of 4, 64 px windows) but go
through ``training.run.main`` exactly as the command line does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segmentello.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.inputs import intensity_range, prepare_window
from napari_segmentello.models import build_model, get_spec
from napari_segmentello.roi import crop, resize_mask, roi_from_stroke
from napari_segmentello.strokes import simulate_stroke

from training import run  # noqa: E402
from training.config import load_config  # noqa: E402
from training.dataset import StrokeSamples  # noqa: E402

CONFIGS = Path(run.__file__).parent / "configs"
STUDY_ROWS = {  # config stem -> (model, loss), NeuralSegmentello Table 1
    "tiny16-32_bce-dice": ("tiny16-32", "bce-dice"),
    "res16-32_bce-dice": ("res16-32", "bce-dice"),
    "tiny16-128_bce-dice": ("tiny16-128", "bce-dice"),
    "res16-128_bce-dice": ("res16-128", "bce-dice"),
    "tiny16-128_bce-dice-bound": ("tiny16-128", "bce-dice-bound"),
    "res16-128_bce-dice-bound": ("res16-128", "bce-dice-bound"),
    "res32-256_bce-dice-bound": ("res32-256", "bce-dice-bound"),
    "attn32-256_bce-dice-bound": ("attn32-256", "bce-dice-bound"),
}
STUDY = CONFIGS / "tiny16-32_bce-dice.toml"
FAST = ["--max-images", "3", "--max-steps", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu"]
FAST_STUDY = ["--config", str(STUDY), *FAST, "--set", "spec.working_size=64"]


def train(out: Path, *argv: str, base: list[str] = FAST_STUDY) -> int:
    """``training.run`` in this process, on one thread (tiny batches; two threads on two busy cores crawl)."""
    threads = torch.get_num_threads()
    try:
        return run.main([*base, "--threads", "1", "--out", str(out), *argv])
    finally:
        torch.set_num_threads(threads)  # run.main sets it process-wide


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / run.LOG).read_text().splitlines()]


def weights_hash(path: Path) -> str:
    return run.state_hash(load_checkpoint(path).state_dict)


# ---------------------------------------------------------------- configs


def test_every_study_config_has_the_study_settings():
    shipped = ["default", "fast-2026c", "fast-2026b", "fast-2026", "lite0-2026", "tiny-2025"]
    assert sorted(p.stem for p in CONFIGS.glob("*.toml")) == sorted([*STUDY_ROWS, *shipped])
    for stem, (model, loss) in STUDY_ROWS.items():
        cfg = load_config(CONFIGS / f"{stem}.toml")
        assert (cfg.name, cfg.model, cfg.loss) == (stem, model, loss)
        assert (cfg.lr, cfg.epochs, cfg.patience, cfg.protocol) == (1e-3, 50, 5, "study")
        assert cfg.spec == {"image_channels": 1, "extras": ("pos", "grad")}  # the study's input recipe
        assert cfg.datasets == [{"dataset": "coco-mini", "split": "train"}]


def test_default_config_loads_and_the_previous_defaults_stay_reproducible():
    cfg = load_config(CONFIGS / "default.toml")
    assert cfg.model == "lite0-64" and cfg.correction_prob > 0 and cfg.iterative_prob > 0 and cfg.composite_prob > 0
    assert isinstance(cfg.protocol, dict) and sum(cfg.protocol.values()) == pytest.approx(1.0)
    teacher = load_config(CONFIGS / "lite0-2026.toml")
    assert (cfg.teacher, teacher.model, teacher.teacher) == ("lite0-2026", "lite0-128", None)
    own = {"name", "model", "schedule", "epochs", "patience", "teacher"}  # what default.toml sets over its base
    differ = {k for k, v in cfg.to_dict().items() if v != teacher.to_dict()[k]}
    assert differ == own  # the student learns the teacher's recipe, the rest inherited through `base`
    fast = load_config(CONFIGS / "fast-2026.toml")  # the third default: runs 11-12 of default.toml's recipe
    assert {k for k, v in fast.to_dict().items() if v != cfg.to_dict()[k]} == {"name"}
    for later in ("fast-2026b", "fast-2026c"):  # the fourth and fifth defaults: runs 21 and 23, the recipe continued
        continued = load_config(CONFIGS / f"{later}.toml")
        assert {k for k, v in continued.to_dict().items() if v != cfg.to_dict()[k]} == {"name"}
    old = load_config(CONFIGS / "tiny-2025.toml")
    assert (old.model, old.loss, old.lr, old.epochs, old.patience) == ("tiny16-128", "bce-dice-bound", 1e-3, 50, 5)
    assert old.spec["extras"] == ("pos", "neg", "prev") and old.correction_prob > 0


def test_a_config_inherits_its_base_and_replaces_what_it_sets(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "root.toml").write_text(
        'name = "root"\nlr = 5e-4\nepochs = 7\nprotocol = {lasso = 0.5, clicks = 0.5}\n'
    )
    (tmp_path / "mid.toml").write_text('base = "recipes/root.toml"\nepochs = 9\n')
    (tmp_path / "leaf.toml").write_text('base = "mid.toml"\nprotocol = {scribble = 1.0}\n')
    cfg = load_config(tmp_path / "leaf.toml", sets=["lr=1e-4"])
    assert (cfg.name, cfg.epochs, cfg.protocol, cfg.lr) == ("leaf", 9, {"scribble": 1.0}, 1e-4)  # tables replaced whole
    assert load_config(tmp_path / "mid.toml").protocol == {"lasso": 0.5, "clicks": 0.5}


@pytest.mark.parametrize(
    ("files", "error", "match"),
    [
        ({"a.toml": 'base = "b.toml"', "b.toml": 'base = "a.toml"'}, ValueError, "cycle: a.toml -> b.toml -> a.toml"),
        ({"a.toml": 'base = "gone.toml"'}, FileNotFoundError, "no such config file: .*gone.toml"),
        ({"a.toml": "base = 3"}, ValueError, "'base' must be a config file path"),
    ],
)
def test_a_bad_base_is_a_clear_error(tmp_path, files, error, match):
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    with pytest.raises(error, match=match):
        load_config(tmp_path / "a.toml")


def test_set_and_named_overrides_win():
    args = run.build_parser().parse_args(
        ["--config", str(STUDY), "--epochs", "3", "--lr", "0.01", "--set", "lr=2e-4", "--set", "spec.working_size=64"]
    )
    cfg = run.config_from_args(args)
    assert (cfg.epochs, cfg.lr, cfg.loss) == (3, 2e-4, "bce-dice")  # named beats the file, --set beats named
    assert cfg.spec == {"image_channels": 1, "extras": ("pos", "grad"), "working_size": 64}
    cfg = load_config(STUDY, sets=["protocol.lasso=0.25", "protocol.click=0.75", "max_images=none"])
    assert cfg.protocol == {"lasso": 0.25, "click": 0.75} and cfg.max_images is None


@pytest.mark.parametrize(
    ("sets", "error", "match"),
    [
        (["bogus=1"], KeyError, "bogus"),
        (["optimiser.lr=1"], KeyError, "optimiser"),
        (["protocol.wiggle=1"], KeyError, "wiggle"),
        (["lr=-1"], ValueError, "'lr'"),
        (["epochs='ten'"], ValueError, "'epochs'"),
        (["patience=true"], ValueError, "'patience'"),
        (["val_fraction=1.0"], ValueError, "'val_fraction'"),
        (["spec=3"], ValueError, "'spec'"),
        (["prompt_weight=-1"], ValueError, "'prompt_weight'"),
        (["prompt_weight=0.5"], ValueError, "'prompt_weight'.*'neg'"),
        (["lr"], ValueError, "key=value"),
    ],
)
def test_bad_config_is_a_clear_error(sets, error, match):
    with pytest.raises(error, match=match):
        load_config(STUDY, sets=sets)


def test_unknown_field_in_a_file_and_bad_cli_values_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "tiny16-32"\nlearning_rate = 0.1\n')
    with pytest.raises(KeyError, match="learning_rate"):
        load_config(bad)
    assert run.main(["--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert run.main(["--model", "tiny99", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "tiny99" in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- samples


@pytest.fixture(scope="module")
def coco_train(data_root):
    return CocoInstances(*dataset_files("coco-mini", "train", data_root), max_images=4)


@pytest.mark.data
def test_sample_is_cut_around_the_stroke_like_the_engine(coco_train):
    spec = get_spec("tiny16-32", image_channels=1, extras=("pos", "grad"), working_size=64)
    items = [(0, i) for i in range(len(coco_train))]
    ds = StrokeSamples([coco_train], items, spec, "study", seed=3)
    checked = 0
    for index in range(len(ds)):
        inst = coco_train[index]
        sample = ds.sample(index, epoch=1)
        assert np.array_equal(sample.stroke, simulate_stroke(inst.mask, "study", ds.rng(index, 1)))
        roi = roi_from_stroke(sample.stroke, margin=spec.roi_margin)
        tensors = ds[index, 1]
        assert tensors["x"].shape == (spec.in_channels, 64, 64) == (3, 64, 64)
        expected_x, _ = prepare_window(inst.image, sample.stroke, spec, *intensity_range(inst.image))
        assert np.array_equal(tensors["x"].numpy(), expected_x)
        y = tensors["y"].numpy()[0]
        assert np.array_equal(y, resize_mask(crop(inst.mask, roi), 64))
        if roi != roi_from_stroke(inst.mask, margin=spec.roi_margin):  # stroke and object boxes differ
            checked += 1
            assert not np.array_equal(y, resize_mask(crop(inst.mask, roi_from_stroke(inst.mask)), 64))
    assert checked >= 3
    assert torch.equal(ds[0, 1]["x"], ds[0, 1]["x"]) and not torch.equal(ds[0, 1]["x"], ds[0, 2]["x"])
    assert torch.equal(ds[0]["x"], ds[0, 0]["x"])  # validation (plain index) is always epoch 0


@pytest.mark.data
def test_protocol_mixture_draws_both_kinds_of_stroke(coco_train):
    cfg = load_config(STUDY, sets=["protocol.click=1", "protocol.lasso=1"])
    big = [i for i, (image_id, ann_id) in enumerate(coco_train.items) if coco_train.coco.anns[ann_id]["area"] > 3000]
    spec = get_spec(cfg.model, **cfg.spec)
    ds = StrokeSamples([coco_train], [(0, i) for i in big], spec, cfg.protocol, seed=0)
    coverage = []
    for index in range(len(ds)):
        for epoch in range(3):
            mask = coco_train[big[index]].mask
            stroke = ds.sample(index, epoch).stroke
            coverage.append(np.count_nonzero(stroke & mask) / np.count_nonzero(mask))
    assert len(big) >= 2
    assert min(coverage) < 0.15 and max(coverage) > 0.5  # clicks are dots, lassos cover most of the object


@pytest.mark.data
def test_correction_rounds_need_neg_and_prev(coco_train, tmp_path):
    with pytest.raises(ValueError, match="neg.*prev"):
        StrokeSamples([coco_train], [(0, 0)], get_spec("tiny16-32"), "study", seed=0, correction_prob=0.5)
    with pytest.raises(ValueError, match="correction_prob"):
        load_config(STUDY, sets=["correction_prob=0.5"])
    spec = get_spec("tiny16-32", extras=("pos", "neg", "prev"), working_size=64)
    ds = StrokeSamples([coco_train], [(0, i) for i in range(6)], spec, "study", seed=0, correction_prob=1.0)
    sample = ds.sample(0)
    assert sample.prev is not None and ds[0]["x"].shape == (6, 64, 64)
    assert ds[0]["x"][5].any()  # the previous mask is shown to the model


# ---------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("run") / "one-epoch"
    assert train(out, "--epochs", "1") == 0
    return out


@pytest.mark.data
def test_run_writes_checkpoints_log_and_curve(trained):
    assert {p.name for p in trained.iterdir()} >= {run.LAST, run.BEST, run.LOG, run.CURVE}
    assert (trained / run.CURVE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (entry,) = read_log(trained)
    assert entry["epoch"] == 1 and entry["samples"] == 8  # --max-steps 2 batches of --batch-size 4
    assert np.isfinite([entry["train_loss"], entry["val_loss"], entry["samples_per_s"]]).all()
    best = load_checkpoint(trained / run.BEST)
    prov = best.provenance
    assert prov["config"]["model"] == "tiny16-32" and prov["config"]["spec"]["working_size"] == 64
    assert "git_commit" in prov and prov["epochs"] == 1
    (dataset,) = prov["datasets"]
    assert dataset["ann_file"].endswith("coco-mini/annotations/instances_train.json") and dataset["images"] == 3
    assert best.metrics["epoch"] == 1 and best.metrics["val_loss"] == pytest.approx(entry["val_loss"])
    model = load_model_from_checkpoint(trained / run.BEST)
    assert model.spec == get_spec("tiny16-32", image_channels=1, extras=("pos", "grad"), working_size=64)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert weights_hash(trained / run.BEST) == weights_hash(trained / run.LAST)  # epoch 1 always improves


@pytest.mark.data
@pytest.mark.slow
def test_identical_runs_give_bit_identical_weights(trained, tmp_path):
    assert train(tmp_path / "twin", "--epochs", "1") == 0
    assert weights_hash(tmp_path / "twin" / run.LAST) == weights_hash(trained / run.LAST)
    torch.manual_seed(0)  # the config's seed: the initial weights
    initial = build_model("tiny16-32", image_channels=1, extras=("pos", "grad"), working_size=64)
    assert run.state_hash(initial.state_dict()) != weights_hash(trained / run.LAST)


@pytest.mark.data
@pytest.mark.slow
def test_resume_continues_the_epoch_counter_and_matches_an_uninterrupted_run(trained, tmp_path, capsys):
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    assert train(resumed, "--epochs", "2") == 2  # the folder holds a run: refuse to overwrite it
    assert "--resume" in capsys.readouterr().err
    assert train(resumed, "--resume", "--epochs", "2") == 0
    assert "resuming" in capsys.readouterr().out
    log = read_log(resumed)
    assert [e["epoch"] for e in log] == [1, 2] and log[0] == read_log(trained)[0]
    assert load_checkpoint(resumed / run.LAST).extra["epoch"] == 2
    assert train(tmp_path / "straight", "--epochs", "2") == 0
    assert weights_hash(resumed / run.LAST) == weights_hash(tmp_path / "straight" / run.LAST)


@pytest.mark.data
def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, monkeypatch, capsys):
    """A scripted validation loss (0.5, 0.4, 0.45, ...): epoch 3 does not improve, patience 1 stops there."""
    losses = iter([0.5, 0.4, 0.45, 0.3, 0.2])
    monkeypatch.setattr(run.Trainer, "validate", lambda self: next(losses))
    out = tmp_path / "early"
    assert train(out, "--epochs", "5", "--set", "patience=1", "--max-steps", "1") == 0
    assert "early stopping" in capsys.readouterr().out
    log = read_log(out)
    assert [e["improved"] for e in log] == [True, True, False]
    last = load_checkpoint(out / run.LAST)
    assert last.extra["early_stopped"] and last.extra["epoch"] == 3
    assert load_checkpoint(out / run.BEST).metrics == {"val_loss": 0.4, "train_loss": log[1]["train_loss"], "epoch": 2}
    assert train(out, "--resume", "--epochs", "5") == 0  # a stopped run stays stopped
    assert "already stopped early" in capsys.readouterr().out and len(read_log(out)) == 3


# ---------------------------------------------------------------- finetuning


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
    torch.manual_seed(123)  # not the run's seed: weights a fresh run would never have
    model = build_model("tiny16-32", extras=("pos", "neg", "prev"), working_size=64)
    return save_checkpoint(tmp_path_factory.mktemp("init") / "init.pt", model, half=True)


@pytest.mark.data
def test_finetuning_on_own_coco_labels_starts_from_the_checkpoint(init_checkpoint, tmp_path, data_root):
    """The README's finetuning command: weights, model and spec from --init-checkpoint, data from --ann-file."""
    images, ann_file = dataset_files("coco-mini", "train", data_root)
    out = tmp_path / "finetune"
    argv = ["--init-checkpoint", str(init_checkpoint), "--ann-file", str(ann_file), "--data-root", str(images)]
    assert train(out, *argv, "--max-steps", "1", "--epochs", "1", "--set", "correction_prob=0.5", base=FAST) == 0
    start = load_checkpoint(init_checkpoint)
    tuned = load_checkpoint(out / run.LAST)
    assert tuned.spec == start.spec
    assert tuned.provenance["config"]["model"] == "tiny16-32"
    assert tuned.provenance["init_checkpoint"]["path"] == str(init_checkpoint)
    # the starting weights are scored on the run's held-out samples, so a continuation shows what it gained
    first = json.loads((out / run.LOG).read_text().splitlines()[0])
    assert 0 < tuned.provenance["init_checkpoint"]["val_loss"] != first["val_loss"]
    assert tuned.provenance["datasets"][0]["ann_file"] == str(ann_file)
    params = {name for name, _ in build_model(start.spec).named_parameters()}
    steps = [(tuned.state_dict[k] - start.state_dict[k]).abs().max().item() for k in params]
    assert 0 < max(steps) <= 1e-3 * 1.001  # one Adam step of lr 1e-3 from the checkpoint's weights


@pytest.mark.data
def test_init_checkpoint_must_match_the_configured_spec(init_checkpoint, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"extras.*checkpoint \('pos', 'neg', 'prev'\).*config \('pos', 'grad'\)"):
        load_config(STUDY, {"init_checkpoint": str(init_checkpoint)})
    named = {"init_checkpoint": str(init_checkpoint), "model": "tiny16-32"}
    cfg = load_config(None, named, ["spec.extras=['pos','neg','prev']", "spec.working_size=64"])
    assert get_spec(cfg.model, **cfg.spec) == load_checkpoint(init_checkpoint).spec
    assert train(tmp_path / "x", "--init-checkpoint", str(init_checkpoint)) == 2
    assert train(tmp_path / "x", "--init-checkpoint", str(tmp_path / "missing.pt"), base=FAST) == 2
    err = capsys.readouterr().err
    assert "init_checkpoint" in err and "missing.pt" in err
    assert not (tmp_path / "x").exists()
