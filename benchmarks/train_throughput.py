"""Training throughput (samples/s) of the named configs at their working size, on CPU or a GPU.

    python -m benchmarks.train_throughput [--configs default,tiny16-32_bce-dice] [--batches 8] [--device cuda]

Each config of ``training/configs`` is built exactly as ``python -m
training.run`` builds it (:class:`training.run.Trainer`: its datasets, stroke
protocol, model, loss and optimizer). After one warm-up batch three figures
are taken on the training split's shuffled order:

- *data*: building samples in this process (decode, stroke, window, target; serial);
- *step*: forward, loss, backward and optimizer step on ready batches;
- *loop*: ``Trainer.train_epoch`` for a few batches, the real loop with the
  config's DataLoader workers (data and steps overlap).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    RESULTS,
    cli_main,
    machine_info,
    md_table,
    set_threads,
)

CONFIGS = REPO / "training" / "configs"
QUICK_CONFIG = "tiny16-32_bce-dice"
QUICK_IMAGES = 4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_throughput",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--configs",
        help=f"comma list of config names in {CONFIGS.relative_to(REPO)} (default: all)",
    )
    p.add_argument("--batches", type=int, default=8, help="timed batches per figure (default 8)")
    p.add_argument(
        "--max-images",
        type=int,
        help="cap the images per dataset (faster start; default: the config's)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, mps or auto; the device is recorded",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads of the training process",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke run: {QUICK_CONFIG}, {QUICK_IMAGES} images, 1 batch",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for train_throughput.json")
    return p


def config_names(text: str | None) -> list[str]:
    available = sorted(p.stem for p in CONFIGS.glob("*.toml"))
    names = [n.strip() for n in text.split(",") if n.strip()] if text else available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise KeyError(f"unknown config(s) {unknown}; available in {CONFIGS}: {available}")
    return names


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """data / step / loop samples per second of one config."""
    import torch
    from torch.utils.data import default_collate

    from napari_segmentello.devices import resolve_device
    from training.config import load_config
    from training.run import Dist, Trainer

    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    overrides = {"max_images": args.max_images, "device": str(device)}
    cfg = load_config(CONFIGS / f"{name}.toml", overrides)
    trainer = Trainer(cfg, out / name, Dist(rank=0, world=1, local_rank=0, device=device))
    bs, n = cfg.batch_size, args.batches
    keys = itertools.cycle(trainer.sampler)  # the real loop's shuffled (index, epoch) order

    def next_batch() -> dict[str, torch.Tensor]:
        return default_collate([trainer.train_set[next(keys)] for _ in range(bs)])

    def step(batch: dict[str, torch.Tensor]) -> None:
        trainer.model.train()
        loss, _ = trainer._loss(batch)  # the training loop's own forward + loss (AMP on CUDA)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()

    batches = [next_batch()]  # warm-up batch: first decodes, allocator, kernels
    data_s = 0.0
    for _ in range(n):
        start = time.perf_counter()
        batches.append(next_batch())
        data_s += time.perf_counter() - start
    step(batches[0])
    sync()
    step_s = sum(_timed(lambda b=b: step(b), sync) for b in batches[1:])

    trainer.cfg.max_steps = 1  # warm-up epoch: starts the DataLoader workers (persistent)
    trainer.train_epoch()
    trainer.cfg.max_steps = n
    trainer.epoch = 1
    start = time.perf_counter()
    _, seen = trainer.train_epoch()
    sync()
    loop_s = time.perf_counter() - start
    samples = n * bs
    return {
        "config": name,
        "model": cfg.model,
        "working_size": trainer.spec.working_size,
        "in_channels": trainer.spec.in_channels,
        "batch_size": bs,
        "loss": cfg.loss,
        "workers": cfg.workers,
        "train_objects": trainer.n_train,
        "batches": n,
        "data_samples_per_s": samples / data_s,
        "step_samples_per_s": samples / step_s,
        "loop_samples_per_s": seen / loop_s,
        "step_ms_per_batch": step_s / n * 1000,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.configs, args.batches = args.configs or QUICK_CONFIG, 1
        args.max_images = args.max_images or QUICK_IMAGES
    if args.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {args.batches}")
    names = config_names(args.configs)
    from napari_segmentello.devices import resolve_device

    device = resolve_device(args.device)
    set_threads(args.threads)
    machine = machine_info(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, args, Path(tmp)) for name in names]
    return {
        "benchmark": "train_throughput",
        "machine": machine,
        "settings": {
            "quick": args.quick,
            "device": str(device),
            "batches": args.batches,
            "max_images": args.max_images,
        },
        "configs": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    gpu = result["machine"].get("gpu")
    where = f"`{s['device']}`" + (f" ({gpu})" if s["device"].startswith("cuda") and gpu else "")
    rows = [
        [
            f"`{r['config']}`",
            f"{r['model']}, {r['in_channels']} ch, {r['working_size']}²",
            str(r["batch_size"]),
            f"{r['data_samples_per_s']:.0f}",
            f"{r['step_samples_per_s']:.0f}",
            f"{r['loop_samples_per_s']:.0f} ({r['workers']} worker{'s' if r['workers'] != 1 else ''})",
        ]
        for r in result["configs"]
    ]
    cap = f", at most {s['max_images']} images per dataset" if s["max_images"] else ""
    lines = [
        "### Training throughput",
        "",
        (
            f"Samples per second on {where}, {s['batches']} timed batch(es) per figure after a warm-up batch{cap}. "
            "*data*: samples built in the training process; *step*: forward + loss + backward + Adam on ready "
            "batches; *loop*: the real `Trainer.train_epoch` with the config's loader workers."
        ),
        "",
        md_table(
            [
                "config",
                "model, input, working size",
                "batch",
                "data /s",
                "step /s",
                "loop /s",
            ],
            rows,
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli_main(args, run, markdown, "train_throughput")


if __name__ == "__main__":
    sys.exit(main())
