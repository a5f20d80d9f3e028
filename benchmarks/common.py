"""What every benchmark shares: the machine record, summaries, Markdown tables, JSON, stand-in weights, children.

A figure is only worth quoting with the machine, date and commit it was measured
on, so every result JSON carries :func:`machine_info`. Measurements that need a
fresh process (cold start, peak memory) run in :func:`run_child`, with the same
thread settings as the parent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STAND_IN_NOTE = "stand-in random weights (latency only)"
STAND_IN_HELP = f"benchmark a random-init model of the default architecture ({STAND_IN_NOTE})"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(threads: int) -> None:
    """Cap torch and OpenCV at ``threads`` in this process (children get it through :func:`child_env`)."""
    import cv2
    import torch

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def child_env(threads: int) -> dict[str, str]:
    """The environment of a child process: the parent's, with every BLAS/OpenMP pool at ``threads``."""
    return {**os.environ, **dict.fromkeys(_THREAD_VARS, str(threads))}


def run_child(args: Sequence[str], threads: int, timeout: float = 600) -> dict[str, Any]:
    """Run ``python ARGS`` from the checkout root in a fresh process; its last stdout line is a JSON dict."""
    proc = subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=REPO,
        env=child_env(threads),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args[:3]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, memory, library versions, date, commit and load: the context of every figure."""
    import cv2
    import skimage
    import torch

    from training.run import git_commit

    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "scikit_image": skimage.__version__,
        "threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile and count (the issue's figures) plus min and max."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no measurements to summarise")
    return {
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (numbers already formatted by the caller)."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def stand_in_checkpoint(folder: Path) -> Path:
    """A random-init checkpoint with the default weights' spec (tiny16-128, RGB + pos/neg/prev, float32).

    Same architecture, input recipe and storage as the bundled default, so its
    latency is the default's; its masks are meaningless.
    """
    import torch

    from napari_segmentello.checkpoint import save_checkpoint
    from napari_segmentello.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny16-128", image_channels=3, extras=("pos", "neg", "prev"))
    path = Path(folder) / "stand-in-tiny16-128.pt"
    return save_checkpoint(path, model, provenance={"note": STAND_IN_NOTE})


def resolve_models(names: str | None, stand_in: bool, folder: Path) -> list[tuple[str, str, bool]]:
    """``(label, bundled name or checkpoint path, is_stand_in)`` for each model to benchmark.

    Default: every bundled model (``list_models()``); with ``stand_in`` (or when
    nothing is bundled and no names are given) a labelled random-init stand-in.
    """
    from napari_segmentello.loader import list_models

    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else list_models()
    models = [(Path(n).stem if n.endswith(".pt") else n, n, False) for n in chosen]
    if stand_in or not models:
        models.append(("stand-in", str(stand_in_checkpoint(folder)), True))
    return models


def header_lines(machine: dict[str, Any]) -> list[str]:
    """One Markdown line naming the machine, date and commit of a set of figures."""
    load = machine.get("load_average")
    load_text = f", load average {load[0]:.1f} at start" if load else ""
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return [
        (
            f"Measured on {machine['cpu']} ({machine['usable_cores']} usable cores{gpu}{load_text}), "
            f"torch {machine['torch']} with {machine['threads']} threads, OpenCV {machine['opencv']}, "
            f"scikit-image {machine['scikit_image']}; {machine['date']}, commit `{machine['git_commit']}`."
        )
    ]


def cli_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
    name: str,
) -> int:
    """Run one benchmark from parsed arguments: measure, write ``<out>/<name>.json``, print its table."""
    try:
        result = run(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_json(args.out / f"{name}.json", result)
    print("\n".join(header_lines(result["machine"])) + "\n")
    print(markdown(result))
    print(f"wrote {path}")
    return 0
