"""Train a stroke refiner: ``python -m training.run --config training/configs/NAME.toml``.

One process on CPU/GPU, or several under ``torchrun`` (DistributedDataParallel,
gloo on CPU, nccl on CUDA; rank 0 writes everything). Each epoch writes
``OUT/last.pt`` (weights + optimizer + counters, for ``--resume``), ``OUT/best.pt``
when the validation loss improves, ``OUT/log.jsonl`` and ``OUT/loss_curve.png``.
The validation loss comes from images held out of the *train* split.

Finetuning a bundled model on your own COCO-format labels::

    python -m training.run --init-checkpoint src/napari_segmentello/weights/default.pt \
        --ann-file my.json --data-root my_images --epochs 5 --out runs/mine

(model and input recipe come from the checkpoint unless the config sets them,
in which case they must match it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from napari_segmentello.checkpoint import load_checkpoint, save_checkpoint
from napari_segmentello.devices import resolve_device
from napari_segmentello.inputs import channel_of
from napari_segmentello.loader import load_model
from napari_segmentello.losses import distill_loss, make_loss, prompt_loss
from napari_segmentello.models import build_model
from napari_segmentello.models.folding import folded_for_inference
from napari_segmentello.samples import PromptMix

from training.config import TrainConfig, load_config
from training.dataset import EpochSampler, StrokeSamples, open_sources, split_items
from training.iterative import IterativeRounds, PromptChannels

REPO = Path(__file__).resolve().parents[1]
LAST, BEST, LOG, CURVE = "last.pt", "best.pt", "log.jsonl", "loss_curve.png"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.run", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="TOML config (training/configs/*.toml); defaults if omitted")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (finished epochs are kept)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field (TOML value)"
    )
    named = p.add_argument_group("config overrides")
    named.add_argument("--model", help="model name, e.g. tiny16-32 or res32-256+cspn")
    named.add_argument("--loss", help="loss name, e.g. bce-dice")
    named.add_argument("--protocol", help="stroke protocol name (mixtures: --set protocol.NAME=WEIGHT)")
    named.add_argument("--epochs", type=int)
    named.add_argument("--batch-size", type=int)
    named.add_argument("--lr", type=float)
    named.add_argument("--seed", type=int)
    named.add_argument("--workers", type=int, help="DataLoader worker processes")
    named.add_argument("--max-images", type=int, help="use only the first N images of each dataset")
    named.add_argument("--max-steps", type=int, help="stop each epoch after N batches")
    named.add_argument("--time-budget", type=float, metavar="MINUTES", help="stop after the epoch that exhausts it")
    named.add_argument("--device", help="auto, cpu, cuda or mps")
    named.add_argument("--data-root", type=Path, help="images folder of --ann-file (replaces the config's datasets)")
    named.add_argument("--ann-file", type=Path, help="COCO instances JSON (replaces the config's datasets)")
    named.add_argument(
        "--init-checkpoint",
        type=Path,
        metavar="PATH",
        help="start from these weights (finetune); without --model/spec in the config, they come from it too",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads per process (default: cores / local processes)")
    p.add_argument("--write-rank-hash", action="store_true", help=argparse.SUPPRESS)  # tests: every rank's weights
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file, then the named flags, then ``--set`` (later wins)."""
    named = ("model", "loss", "protocol", "epochs", "batch_size", "lr", "seed", "workers", "max_images")
    overrides: dict[str, Any] = {k: getattr(args, k) for k in (*named, "max_steps", "time_budget", "device")}
    if args.data_root is not None and args.ann_file is None:
        raise ValueError("--data-root needs --ann-file (the COCO annotation JSON of those images)")
    if args.init_checkpoint is not None:
        overrides["init_checkpoint"] = str(args.init_checkpoint)
    if args.ann_file is not None:
        entry = {"ann_file": str(args.ann_file)}
        if args.data_root is not None:
            entry["images_dir"] = str(args.data_root)
        overrides["datasets"] = [entry]
    return load_config(args.config, overrides, args.set)


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly one-process) job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun job when its environment is set (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1:
        if dev.type == "mps":
            raise ValueError("multi-process training runs on CPU (gloo) or CUDA (nccl), not MPS")
        torch_dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, dev)


def _all_sum(values: list[float], dist: Dist) -> list[float]:
    """Element-wise sum over ranks (identity with one process)."""
    if dist.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    torch_dist.all_reduce(t)
    return t.tolist()


def _agree(flag: bool, dist: Dist) -> bool:
    """Rank 0's decision, shared so that every rank stops in the same epoch."""
    if dist.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=dist.device)
    torch_dist.broadcast(t, src=0)
    return bool(t.item())


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and raw tensor bytes (equal hashes = bit-identical weights)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def git_commit() -> str | None:
    """The checkout's HEAD commit (``+dirty`` with local changes), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Train and validation loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation (held-out train images)")
    ax.set(xlabel="epoch", ylabel="loss", title=path.parent.name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Trainer:
    """One run's state: model, optimizer, loaders and the epoch bookkeeping that ``--resume`` restores."""

    def __init__(self, cfg: TrainConfig, out: Path, dist: Dist) -> None:
        self.cfg, self.out, self.dist = cfg, out, dist
        torch.manual_seed(cfg.seed)
        self.net = build_model(cfg.model, **cfg.spec)
        self.spec = self.net.spec
        self.init: dict[str, Any] | None = None
        self.pretrained = None
        teacher = None if cfg.teacher is None else load_model(cfg.teacher, dist.device)
        self.teacher = None if teacher is None else folded_for_inference(teacher)
        if cfg.init_checkpoint is not None:  # before DDP, which broadcasts rank 0's weights
            init = load_checkpoint(cfg.init_checkpoint)
            self.net.load_state_dict(init.state_dict)
            self.init = {"path": cfg.init_checkpoint, "provenance": init.provenance, "metrics": init.metrics}
        elif teacher is not None:
            self.pretrained = self._from_teacher(teacher)
        elif self.spec.family == "lite0" and cfg.pretrained:
            self.pretrained = self.net.encoder.load_pretrained()  # {"file", "sha256"}: recorded in provenance
        self.net.to(dist.device)
        self.model: nn.Module = self.net
        if dist.world > 1:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.loss_fn = make_loss(cfg.loss)
        self.prompt_planes = self._prompt_planes()
        self.optimizer = torch.optim.Adam(self._param_groups(), lr=cfg.lr)
        self.amp = dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.sources = open_sources(cfg)
        train_items, val_items = split_items(self.sources, cfg.val_fraction, cfg.seed)
        if cfg.max_val_objects is not None and len(val_items) > cfg.max_val_objects:
            keep = np.random.default_rng([cfg.seed, 1]).choice(len(val_items), cfg.max_val_objects, replace=False)
            val_items = [val_items[i] for i in sorted(keep)]
        if not train_items or not val_items:
            raise ValueError(
                f"need objects for both training ({len(train_items)}) and validation ({len(val_items)}); "
                f"use more images (max_images={cfg.max_images}) or another val_fraction ({cfg.val_fraction})"
            )
        self.n_train, self.n_val = len(train_items), len(val_items)
        self.train_set = self._samples(train_items, train=True)
        self.sampler = EpochSampler(self.train_set, seed=cfg.seed, rank=dist.rank, world=dist.world)
        loader_args = {
            "batch_size": cfg.batch_size,
            "num_workers": cfg.workers,
            "persistent_workers": cfg.workers > 0,
            "pin_memory": dist.device.type == "cuda",
        }
        self.train_loader = DataLoader(self.train_set, sampler=self.sampler, **loader_args)
        # each rank validates its own slice of the held-out objects; sums are reduced
        self.val_loader = DataLoader(
            self._samples(val_items[dist.rank :: dist.world], train=False), shuffle=False, **loader_args
        )
        self.epoch = 0  # epochs finished
        self.best_val = math.inf
        self.bad_epochs = 0
        self.early_stopped = False
        self.history: list[dict[str, Any]] = []

    def _from_teacher(self, teacher: nn.Module) -> dict[str, Any]:
        """A student starts with the teacher's encoder and prompt fusion where their shapes match (a lite0
        teacher's finetuned encoder, not ImageNet's): only the parts that differ, its decoder, start afresh."""
        theirs = teacher.state_dict()
        mine = self.net.state_dict()
        shared = {k: v for k, v in theirs.items() if k in mine and v.shape == mine[k].shape and "decoder" not in k}
        self.net.load_state_dict(shared, strict=False)
        return {"teacher": self.cfg.teacher, "tensors": len(shared), "of": len(mine)}

    @property
    def frozen_encoder(self) -> bool:
        return self.spec.family == "lite0" and self.cfg.encoder_lr_scale == 0

    def _param_groups(self) -> list[dict[str, Any]]:
        """One Adam group, or for lite0 the pretrained encoder at ``lr * encoder_lr_scale`` (frozen at 0)."""
        if self.spec.family != "lite0":
            return [{"params": list(self.net.parameters()), "scale": 1.0}]
        encoder = set(map(id, self.net.encoder_parameters()))
        rest = [p for p in self.net.parameters() if id(p) not in encoder]
        if self.frozen_encoder:
            self.net.encoder.requires_grad_(False)
            return [{"params": rest, "scale": 1.0}]
        scale = self.cfg.encoder_lr_scale
        return [{"params": rest, "scale": 1.0}, {"params": self.net.encoder_parameters(), "scale": scale}]

    def set_lr(self) -> float:
        """This epoch's learning rate (constant, or a half cosine over ``epochs``), applied per group's scale."""
        cfg = self.cfg
        lr = cfg.lr
        if cfg.schedule == "cosine":
            lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(self.epoch, cfg.epochs) / cfg.epochs))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        return lr

    def _samples(self, items: list[tuple[int, int]], *, train: bool) -> StrokeSamples:
        """Samples of ``items``; composites, augmentation and window jitter for training only (validation: real)."""
        cfg = self.cfg
        jitter = cfg.window_jitter if train else 0.0
        return StrokeSamples(
            self.sources,
            items,
            self.spec,
            cfg.protocol,
            seed=cfg.seed,
            correction_prob=cfg.correction_prob,
            with_sdm=self.loss_fn.uses_sdm,
            mix=PromptMix(
                negative=cfg.negative_prob,
                focus=cfg.focus_prob,
                window_jitter=jitter,
                rough_prior=cfg.rough_prior_prob,
                carried=cfg.carried_prob,
                neighbours=cfg.neighbour_prob,
            ),
            composite_prob=cfg.composite_prob if train else 0.0,
            flip_prob=cfg.flip_prob if train else 0.0,
            gray_prob=cfg.gray_prob if train else 0.0,
        )

    # ------------------------------------------------------------ bookkeeping

    def resume(self) -> None:
        """Restore weights, optimizer and counters from ``OUT/last.pt``."""
        ckpt = load_checkpoint(self.out / LAST)
        if ckpt.spec != self.spec:
            raise ValueError(f"{self.out / LAST} holds a {ckpt.spec} model, the config builds {self.spec}")
        extra = ckpt.extra
        self.net.load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["rng/torch"])
        self.epoch, self.best_val, self.bad_epochs = extra["epoch"], extra["best_val"], extra["bad_epochs"]
        self.early_stopped, self.history = extra["early_stopped"], list(extra["history"])

    def provenance(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "datasets": [
                {
                    "images_dir": str(s.images_dir),
                    "ann_file": str(s.ann_file),
                    "images": len(s.image_ids),
                    "instances": len(s),
                    "skipped": dict(s.skipped),
                }
                for s in self.sources
            ],
            "objects": {"train": self.n_train, "validation": self.n_val},
            "init_checkpoint": self.init,
            "pretrained_encoder": self.pretrained,
            "epochs": self.epoch,
            "world_size": self.dist.world,
            "git_commit": git_commit(),
        }

    def write_state(self, improved: bool) -> None:
        """Rank 0: best.pt if improved, then last.pt, then the log and curve rebuilt from the history."""
        last = self.history[-1]
        if improved:
            metrics = {"val_loss": last["val_loss"], "train_loss": last["train_loss"], "epoch": last["epoch"]}
            save_checkpoint(self.out / BEST, self.net, provenance=self.provenance(), metrics=metrics)
        extra = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng/torch": torch.get_rng_state(),
            "epoch": self.epoch,
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
            "early_stopped": self.early_stopped,
            "history": self.history,
        }
        metrics = {"val_loss": last["val_loss"], "train_loss": last["train_loss"], "epoch": last["epoch"]}
        save_checkpoint(self.out / LAST, self.net, provenance=self.provenance(), metrics=metrics, extra=extra)
        self.write_log()

    def write_log(self) -> None:
        """log.jsonl and the loss curve always match last.pt (a resumed run rewrites them from it)."""
        tmp = self.out / f".tmp-{LOG}"
        tmp.write_text("".join(json.dumps(h) + "\n" for h in self.history))
        os.replace(tmp, self.out / LOG)
        if self.history:
            plot_curves(self.history, self.out / CURVE)

    # ------------------------------------------------------------ epochs

    def _loss(self, batch: dict[str, torch.Tensor], rounds: IterativeRounds | None = None) -> tuple[torch.Tensor, int]:
        dev = self.dist.device
        x, y = batch["x"].to(dev, non_blocking=True), batch["y"].to(dev, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU
        if rounds is not None:  # on the bare network: DDP syncs gradients, these passes have none
            x = rounds(self.net, x, y, batch["scale"])
        sdm = batch["sdm"].to(dev, non_blocking=True) if "sdm" in batch else None
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.amp):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y, sdm)
        if self.prompt_planes is not None:
            pos, neg = self.prompt_planes
            loss = loss + self.cfg.prompt_weight * prompt_loss(logits.float(), y, x[:, pos], x[:, neg])
        if self.teacher is not None:
            with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.amp):
                taught = self.teacher(x)
            loss = loss + self.cfg.teacher_weight * distill_loss(logits.float(), taught.float())
        return loss, len(x)

    def _prompt_planes(self) -> tuple[int, int] | None:
        """Input channels of the stroke and the "not this" stroke when ``prompt_weight`` asks for them."""
        if self.cfg.prompt_weight <= 0:
            return None
        return channel_of(self.spec, "pos"), channel_of(self.spec, "neg")

    def _rounds(self) -> IterativeRounds | None:
        """This epoch's RITM rounds, drawn from (seed, rank, epoch) so a resumed run repeats them."""
        cfg = self.cfg
        if cfg.iterative_prob <= 0:
            return None
        rng = np.random.default_rng([cfg.seed, self.dist.rank, self.epoch, 7])
        return IterativeRounds(cfg.iterative_prob, cfg.iterative_rounds, PromptChannels.of(self.spec), rng)

    def train_epoch(self) -> tuple[float, int]:
        """Mean training loss over all ranks and the number of samples seen."""
        self.model.train()
        if self.frozen_encoder:  # frozen means frozen: ImageNet batch statistics too
            self.net.encoder.eval()
        lr = self.set_lr()
        self.sampler.set_epoch(self.epoch)
        steps = (
            len(self.train_loader) if self.cfg.max_steps is None else min(self.cfg.max_steps, len(self.train_loader))
        )
        total = count = 0.0
        bar = tqdm(
            self.train_loader, total=steps, desc=f"epoch {self.epoch + 1} lr {lr:.2g}", disable=not self.dist.main
        )
        rounds = self._rounds()
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            loss, n = self._loss(batch, rounds)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        total, count = _all_sum([total, count], self.dist)
        return total / count, int(count)

    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        total = count = 0.0
        for batch in tqdm(self.val_loader, desc="validation", leave=False, disable=not self.dist.main):
            loss, n = self._loss(batch)
            total += loss.item() * n
            count += n
        total, count = _all_sum([total, count], self.dist)
        return total / count

    def fit(self) -> str:
        """Train until the epochs, the patience or the time budget run out; returns why it stopped."""
        cfg, start = self.cfg, time.monotonic()
        if self.early_stopped:
            return "already stopped early"
        if self.init is not None and self.epoch == 0:
            # the starting weights scored on this run's held-out samples: a continuation shows whether it helped
            self.init["val_loss"] = self.validate()
            if self.dist.main:
                print(json.dumps({"epoch": 0, "init_val_loss": self.init["val_loss"]}), flush=True)
        while self.epoch < cfg.epochs:
            t0 = time.monotonic()
            train_loss, seen = self.train_epoch()
            train_s = time.monotonic() - t0
            val_loss = self.validate()
            self.epoch += 1
            improved = val_loss < self.best_val
            self.best_val, self.bad_epochs = (val_loss, 0) if improved else (self.best_val, self.bad_epochs + 1)
            self.early_stopped = self.bad_epochs >= cfg.patience
            self.history.append(
                {
                    "epoch": self.epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "best_val": self.best_val,
                    "improved": improved,
                    "samples": seen,
                    "samples_per_s": seen / train_s,
                    "seconds": time.monotonic() - t0,
                }
            )
            if self.dist.main:
                self.write_state(improved)
                print(json.dumps(self.history[-1]), flush=True)
            if self.early_stopped:
                return f"early stopping: no better validation loss for {cfg.patience} epochs"
            budget_spent = cfg.time_budget is not None and time.monotonic() - start >= cfg.time_budget * 60
            if _agree(budget_spent, self.dist):
                return f"time budget of {cfg.time_budget} min spent"
        return f"{cfg.epochs} epochs done"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / cfg.name
    if (out / LAST).exists() and not args.resume:
        print(f"error: {out} already holds a run ({LAST}); pass --resume or another --out", file=sys.stderr)
        return 2
    dist = setup_distributed(cfg.device)
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0)) // local_procs))
    try:
        return train(args, cfg, out, dist)
    finally:
        if dist.world > 1:
            torch_dist.destroy_process_group()


def train(args: argparse.Namespace, cfg: TrainConfig, out: Path, dist: Dist) -> int:
    """Set up (bad data or a mismatched ``last.pt``: exit code 2), then fit and report."""
    try:
        trainer = Trainer(cfg, out, dist)
        if args.resume and (out / LAST).exists():
            trainer.resume()
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if dist.main:
        if trainer.epoch:
            trainer.write_log()
            print(f"resuming {out} after epoch {trainer.epoch}", flush=True)
        for source in trainer.sources:
            print(source.summary(), flush=True)
        print(f"{trainer.n_train} training / {trainer.n_val} validation objects, model {trainer.spec}", flush=True)
    reason = trainer.fit()
    if args.write_rank_hash:
        (out / f"rank{dist.rank}.sha256").write_text(state_hash(trainer.net.state_dict()) + "\n")
    if dist.main:
        print(f"stopped: {reason}; best validation loss {trainer.best_val:.4f}; outputs in {out}", flush=True)
        start = (trainer.init or {}).get("val_loss")
        if start is not None:
            verdict = "better than" if trainer.best_val < start else "NOT better than"
            print(f"the best epoch is {verdict} the starting weights ({start:.4f} on the same samples)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
