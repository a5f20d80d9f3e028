"""The README's results table: ``python -m training.report --models default --readme``.

Runs :mod:`training.evaluate` for every (model, dataset, protocol) of the grid on
the *val* splits (an evaluation already in ``OUT`` is reused unless ``--force``),
and writes ``OUT/results.md``: per model and protocol the model beside the stroke
itself, GrabCut and the random walker measured in the same run, and the study's
published row for the study protocol. ``--readme`` splices it into README.md
between ``<!-- results:begin -->`` and ``<!-- results:end -->``; ``--performance
FILE`` does the same for the benchmarks' Markdown (``performance`` markers).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from training import evaluate
from training.reproduce import STUDY_BEST

REPO = Path(__file__).resolve().parents[1]
GRID = {  # dataset -> protocols evaluated on its val split
    "coco-mini": ("study", "scribble", "lasso", "click"),
    "dsb2018-nuclei": ("study", "scribble", "click"),
}
METHOD_NAMES = {
    evaluate.MODEL: "**{model}**",
    "identity": "stroke alone",
    "grabcut": "GrabCut",
    "randomwalker": "random walker",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="default", help="comma list of bundled names or checkpoint paths")
    p.add_argument(
        "--max-objects", type=int, default=400, help="seeded subset of val objects per dataset (default 400)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/report"))
    p.add_argument("--force", action="store_true", help="re-run evaluations already in OUT")
    p.add_argument("--readme", action="store_true", help="splice the table into README.md")
    p.add_argument("--performance", type=Path, help="a benchmarks Markdown file to splice into README.md")
    p.add_argument("--noc", type=Path, nargs="+", help="training.noc noc.md files to splice into README.md")
    return p


def run_grid(model: str, args: argparse.Namespace) -> dict[tuple[str, str], dict[str, Any]]:
    """results.json of every dataset/protocol for one model (evaluated now or reused)."""
    tag = Path(model).stem
    results = {}
    for dataset, protocols in GRID.items():
        for protocol in protocols:
            out = args.out / tag / dataset / protocol
            if args.force or not (out / "results.json").is_file():
                argv = ["--model", model, "--dataset", dataset, "--split", "val", "--protocol", protocol]
                argv += ["--max-objects", str(args.max_objects), "--seed", str(args.seed)]
                argv += ["--device", args.device, "--out", str(out)]
                if evaluate.main(argv) != 0:
                    raise RuntimeError(f"evaluating {model} on {dataset}/{protocol} failed")
            results[dataset, protocol] = json.loads((out / "results.json").read_text())
    return results


def table(model: str, results: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """One Markdown table per dataset: rows are protocol × method."""
    lines = []
    for dataset, protocols in GRID.items():
        first = results[dataset, protocols[0]]
        lines += [
            f"**{dataset} val** ({first['n_objects']} objects, seed {first['seed']}, device {first['device']})",
            "",
            "| stroke protocol | method | IoU | bIoU 2% | bIoU 1px | HD95 (px) | latency (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        for protocol in protocols:
            r = results[dataset, protocol]
            for method, s in r["methods"].items():
                m = s["mean"]
                name = METHOD_NAMES.get(method, method).format(model=Path(model).stem)
                lines.append(
                    f"| {protocol} | {name} | {m['iou']:.3f} | {m['boundary_iou']:.3f} | {m['boundary_iou_1px']:.3f} "
                    f"| {m['hd95']:.1f} | {s['latency_ms_median']:.1f} |"
                )
            if dataset == "coco-mini" and protocol == "study":
                s = STUDY_BEST
                lines.append(
                    f"| study | NeuralSegmentello best (published, 100 COCO val images) | {s['iou']:.3f} | – "
                    f"| {s['boundary_iou_1px']:.3f} | – (HD {s['hausdorff']:.1f}) | – |"
                )
        lines.append("")
    return lines


def splice(text: str, name: str, body: str) -> str:
    """Replace what lies between the ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers."""
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- {name}:begin --> / <!-- {name}:end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    readme = REPO / "README.md"
    sections = {"performance": [args.performance] if args.performance else [], "noc": args.noc or []}
    if any(sections.values()):
        for name, files in sections.items():
            if files:
                body = "\n".join(f.read_text().rstrip() + "\n" for f in files)
                readme.write_text(splice(readme.read_text(), name, body))
                print(f"spliced {', '.join(map(str, files))} into {readme}")
        return 0
    lines = [
        f"Command: `python -m training.report --models {args.models} --max-objects {args.max_objects} --readme`. "
        "Means over a seeded subset of val objects, one simulated stroke per object shared by every method; "
        "the model runs through the real inference path on the full image, the baselines on the same stroke's "
        "region of interest. bIoU 2% is Boundary IoU (Cheng et al. 2021), bIoU 1px the thin band that matches "
        "the study's figure (docs/metrics.md); latency is the median per object on this machine.",
        "",
    ]
    for model in (m.strip() for m in args.models.split(",") if m.strip()):
        lines += table(model, run_grid(model, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.readme:
        readme.write_text(splice(readme.read_text(), "results", "\n".join(lines)))
        print(f"spliced the table into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
