"""Run every benchmark and write the README's Performance section: ``python -m benchmarks.run_all``.

Each benchmark runs in its own process (the widget one under ``xvfb-run -a``
when there is no display) and writes ``OUT/<name>.json``; then
``OUT/performance.md`` is built from those files alone (every benchmark's file in
``OUT``, so ``--only`` re-measures some and keeps the others' tables, each marked
when measured separately): the machine, date and commit, every table, and a closing
note that quotes the measured ratios.
``--quick`` proves the scripts run (a few objects and sizes); its figures are
not for quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import latency, propagation, scaling, train_throughput, widget_roundtrip
from benchmarks.common import (
    REPO,
    RESULTS,
    STAND_IN_HELP,
    STAND_IN_NOTE,
    child_env,
    header_lines,
)

BENCHMARKS = {
    "latency": latency,
    "scaling": scaling,
    "propagation": propagation,
    "widget_roundtrip": widget_roundtrip,
    "train_throughput": train_throughput,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        help="latency: comma list of bundled names / checkpoint paths (default: all bundled)",
    )
    p.add_argument(
        "--model",
        help="scaling, propagation and widget: one bundled name or checkpoint path (default: first bundled)",
    )
    p.add_argument(
        "--stand-in",
        action="store_true",
        help=STAND_IN_HELP + "; automatic when nothing is bundled",
    )
    p.add_argument("--only", help=f"comma list of {list(BENCHMARKS)} (default: all)")
    p.add_argument(
        "--markdown-only",
        action="store_true",
        help="rebuild performance.md from the JSON files in OUT",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="our model's device for latency and scaling")
    p.add_argument(
        "--train-device",
        default="cpu",
        help="device of the training-throughput benchmark",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run of every benchmark (figures not for quoting)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def _argv(name: str, args: argparse.Namespace, stand_in: bool) -> list[str]:
    """The command-line of one benchmark, from run_all's options."""
    argv = ["--out", str(args.out), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    if name == "train_throughput":
        return [*argv, "--device", args.train_device]
    argv += ["--stand-in"] if stand_in else []
    if name == "latency":
        return [*argv, "--device", args.device] + (["--models", args.models] if args.models else [])
    device = args.device if name in ("scaling", "propagation") else ("cpu" if args.device == "auto" else args.device)
    return [*argv, "--device", device] + (["--model", args.model] if args.model else [])


def run_one(name: str, argv: list[str], threads: int) -> None:
    """One benchmark in a fresh process; its table streams to this console."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *argv]
    if name == "widget_roundtrip" and not os.environ.get("DISPLAY"):
        xvfb = shutil.which("xvfb-run")
        if xvfb is None:
            raise RuntimeError("the widget benchmark needs a display: install Xvfb (xvfb-run) or set DISPLAY")
        cmd = [xvfb, "-a", *cmd]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=REPO, env=child_env(threads), check=True)


def closing_note(results: dict[str, dict[str, Any]]) -> list[str]:
    """The measured claims in one paragraph, each figure read from the results (nothing typed in)."""
    notes = []
    lat = results.get("latency")
    if lat:
        for model in lat["models"]:
            label = model["label"]
            for base, name in (
                ("grabcut", "GrabCut"),
                ("randomwalker", "the random walker"),
            ):
                r = lat["ratios"][f"{base}/refine:{model['label']}"]
                verdict = "faster" if r["median"] > 1 else "slower"
                notes.append(
                    f"`refine()` with `{label}` is {verdict} than {name} on the median object: {name} takes "
                    f"{r['median']:.2f}× our time (p10 {r['p10']:.2f}×, p90 {r['p90']:.2f}×; ours faster on "
                    f"{r['ours_faster_share'] * 100:.0f} % of {r['n']} objects)."
                )
            cold = lat["cold_ms"][f"refine:{model['label']}"]["cold_ms"]["median"]
            gc_cold = lat["cold_ms"]["grabcut"]["cold_ms"]["median"]
            notes.append(
                f"Cold start (fresh process to first mask): {cold / 1000:.1f} s for `{label}` "
                f"vs {gc_cold / 1000:.1f} s for GrabCut."
            )
    sc = results.get("scaling")
    if sc and len(sc["image_sweep"]) > 1:
        a, b = sc["image_sweep"][0], sc["image_sweep"][-1]
        ta, tb = a["time_ms"]["median"], b["time_ms"]["median"]
        notes.append(
            f"Growing the image from {a['side']}² to {b['side']}² ({b['side'] ** 2 / a['side'] ** 2:.0f}× the "
            f"pixels) with the same stroke takes `refine()` from {ta:.0f} to {tb:.0f} ms ({tb / ta:.1f}×)."
        )
    if sc and len(sc["object_sweep"]) > 1:
        a, b = sc["object_sweep"][0], sc["object_sweep"][-1]
        side = sc["settings"]["object_sweep_image"]
        notes.append(
            f"Growing the stroke from {a['extent']} to {b['extent']} px on one {side}² image takes it "
            f"from {a['time_ms']['median']:.0f} to {b['time_ms']['median']:.0f} ms."
        )
    wr = results.get("widget_roundtrip")
    if wr:
        notes.append(
            f"In napari, Refine → result takes {wr['warm_existing_layer_ms']['median']:.0f} ms (median) into the "
            f"existing output layer and {wr['warm_new_layer_ms']['median']:.0f} ms when the layer is created; the "
            f"engine alone takes {wr['engine_ms']['median']:.0f} ms of it."
        )
    return notes


def markdown(results: dict[str, dict[str, Any]], quick: bool) -> str:
    first = next(iter(results.values()))
    lines = [*header_lines(first["machine"]), ""]
    if quick:
        lines += [
            "**Quick (CI) run: a handful of objects and sizes; these figures are not for quoting.**",
            "",
        ]
    if any(m.get("stand_in") for r in results.values() for m in r.get("models", [r.get("model", {})])):
        lines += [
            (
                f"**Model: {STAND_IN_NOTE}**: no trained weights were bundled when this ran; speed is the "
                "default architecture's, masks are meaningless."
            ),
            "",
        ]
    for name, result in results.items():
        machine, ref = result["machine"], first["machine"]
        if machine["git_commit"] != ref["git_commit"] or machine["date"][:10] != ref["date"][:10]:
            lines += [f"*{name}: measured separately.* " + header_lines(machine)[0], ""]
        lines += [BENCHMARKS[name].markdown(result), ""]
    notes = closing_note(results)
    if notes:
        lines += [
            "**In short** (all figures from this run, same machine, same inputs): " + " ".join(notes),
            "",
        ]
    lines.append(f"Regenerate: `python -m benchmarks.run_all{' --quick' if quick else ''}` (see benchmarks/README.md).")
    return "\n".join(lines).rstrip() + "\n"


def run(args: argparse.Namespace) -> Path:
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; valid: {list(BENCHMARKS)}")
    if not args.markdown_only:
        from napari_segmentello.loader import list_models

        stand_in = args.stand_in or not (args.models or args.model or list_models())
        for name in names:
            run_one(name, _argv(name, args, stand_in), args.threads)
    results = {}  # every benchmark with results in OUT: --only re-measures some, the page keeps the rest
    for name in BENCHMARKS:
        path = args.out / f"{name}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
    if not results:
        raise FileNotFoundError(f"no benchmark results in {args.out}; run without --markdown-only first")
    quick = any(r["settings"].get("quick") for r in results.values())
    out = args.out / "performance.md"
    out.write_text(markdown(results, quick))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except (
        ValueError,
        KeyError,
        FileNotFoundError,
        RuntimeError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
