"""The README's results table: ``python -m training.report --models default --readme``.

Runs :mod:`training.evaluate` for every (model, dataset, protocol) of the grid on
the *val* splits (an evaluation already in ``OUT`` is reused unless ``--force``),
and writes ``OUT/results.md``: per model and protocol the model beside the stroke
itself, GrabCut and the random walker measured in the same run, and the study's
published row for the study protocol. ``--readme`` splices it into README.md
between ``<!-- results:begin -->`` and ``<!-- results:end -->``; ``--performance
FILE`` does the same for the benchmarks' Markdown (``performance`` markers).

The other README blocks are made from the JSON files of runs already done (each
carries the command that made it): ``--real`` (``evaluate --protocol real`` on
acdc-scribbles: "Real human strokes"), ``--real-all`` (``--protocol real-all``: the same
with every structure painted), ``--clicks`` (``noc --protocol clicks``:
"Clicks (standard protocol)", with published anchors as context), ``--box``
(``evaluate --protocol box``), ``--noc`` (``noc.md`` files, spliced as they are) and ``--propagation``
(``training.propagation``'s ``results.json``: "Propagation through time").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training import evaluate, noc, propagation
from training.reproduce import STUDY_BEST

REPO = Path(__file__).resolve().parents[1]
GRID = {  # dataset -> protocols evaluated on its val split
    "coco-mini": ("study", "human-scribble", "scribble", "lasso", "coarse", "click"),
    "dsb2018-nuclei": ("study", "scribble", "click"),
    "nuclei-histology": ("human-scribble", "scribble", "click"),  # issue 15: microscopy beside GrabCut
    "em-isbi2012": ("human-scribble", "scribble", "click"),
}
METHOD_NAMES = {
    evaluate.MODEL: "**{model}**",
    "identity": "stroke alone",
    "grabcut": "GrabCut",
    "randomwalker": "random walker",
}
BOX_METHOD_NAMES = {"identity": "box alone", "grabcut": "GrabCut (rectangle mode)"}
# Published NoC@90 of RITM HRNet-18 (Sofiiuk et al., ICIP 2022; figures as quoted in issue 14): other
# datasets, other objects, so context for ours, not the same test.
RITM_HRNET18_NOC90 = {"COCO MVal": 2.98, "GrabCut": 1.54, "Berkeley": 2.26, "DAVIS": 5.74}
SAM_BOX_CONTEXT = "SAM ViT-B box prompts reach about 0.75-0.80 mIoU on COCO in published figures"


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
    p.add_argument(
        "--real", type=Path, nargs="+", help="results.json of evaluate --protocol real (acdc-scribbles), one per model"
    )
    p.add_argument(
        "--real-all", type=Path, nargs="+", help="results.json of evaluate --protocol real-all, one per model"
    )
    p.add_argument("--clicks", type=Path, nargs="+", help="noc.json files of noc --protocol clicks, one per dataset")
    p.add_argument("--box", type=Path, nargs="+", help="results.json files of evaluate --protocol box")
    p.add_argument(
        "--propagation",
        type=Path,
        nargs="+",
        help="results.json of training.propagation runs (one without --adapt, one with: the two DAVIS blocks)",
    )
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


def metric_cells(summary: dict[str, Any]) -> str:
    """IoU, bIoU 2%, bIoU 1px, HD95 and latency of one method's evaluate summary, as table cells."""
    m = summary["mean"]
    return (
        f"{m['iou']:.3f} | {m['boundary_iou']:.3f} | {m['boundary_iou_1px']:.3f} | {m['hd95']:.1f} "
        f"| {summary['latency_ms_median']:.1f}"
    )


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
                name = METHOD_NAMES.get(method, method).format(model=Path(model).stem)
                lines.append(f"| {protocol} | {name} | {metric_cells(s)} |")
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


def _model_name(results: dict[str, Any]) -> str:
    return f"**{Path(results['model']).stem}**"


def _dataset_label(results: dict[str, Any]) -> str:
    return f"{results['dataset']['name']} {results['dataset']['split']}".strip()


def _commands(runs: list[dict[str, Any]]) -> list[str]:
    return [f"- `{r['command']}`" for r in runs]


def real_block(files: list[Path]) -> list[str]:
    """The "Real human strokes" table: every model given the annotator's recorded strokes, the baselines of the first.

    Several files (one per model, same objects and protocol) put the models side by side.
    """
    runs = [json.loads(f.read_text()) for f in files]
    r = runs[0]
    protocols = {run["protocol"] for run in runs}
    if len(protocols) != 1 or r["protocol"] not in evaluate.REAL_PROTOCOLS:
        raise ValueError(f"one table takes runs of one recorded-stroke protocol, got {sorted(protocols)}")
    names = {**METHOD_NAMES, "grabcut": "GrabCut (strokes as sure fg/bg)", "randomwalker": "random walker (same seeds)"}
    lines = [
        *(f"Command: `{run['command']}`." for run in runs),
        "",
        f"{r['n_objects']} objects of {_dataset_label(r)} (a seeded subset), each scored from the strokes a person "
        f"drew on it: {evaluate.REAL_PROTOCOLS[r['protocol']]}. The model "
        f"is given: {r['model_prompt']}; the baselines the same strokes on the stroke's region of interest. "
        f"Means; latency is the median per object ({r['device']}).",
        "",
        "| method | IoU | bIoU 2% | bIoU 1px | HD95 (px) | latency (ms) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {_model_name(run)} | {metric_cells(run['methods'][evaluate.MODEL])} |" for run in runs]
    for method, s in r["methods"].items():
        if method != evaluate.MODEL:
            lines.append(f"| {names.get(method, method)} | {metric_cells(s)} |")
    return lines + ["", *category_lines(runs, names)]


def category_lines(runs: list[dict[str, Any]], names: dict[str, str]) -> list[str]:
    """Mean IoU per object category, one row each (the structures differ: blobs, thin rings); models then baselines."""
    columns = [(_model_name(run), run, evaluate.MODEL) for run in runs]
    columns += [(names.get(m, m).split(" (")[0], runs[0], m) for m in runs[0]["methods"] if m != evaluate.MODEL]
    lines = [f"| IoU by structure (objects) | {' | '.join(c[0] for c in columns)} |", "|---|" + "---|" * len(columns)]
    for category in sorted({o["category"] for o in runs[0]["objects"]}):
        n = sum(o["category"] == category for o in runs[0]["objects"])
        means = [
            np.mean([o["metrics"][m]["iou"] for o in run["objects"] if o["category"] == category])
            for _, run, m in columns
        ]
        lines.append(f"| {category} ({n}) | {' | '.join(f'{v:.3f}' for v in means)} |")
    return lines


def box_block(files: list[Path]) -> list[str]:
    """The box table: the model, GrabCut in rectangle mode and the box alone, per dataset."""
    runs = [json.loads(f.read_text()) for f in files]
    lines = [
        "Each object's box with a few pixels of jitter (`strokes.jittered_box`, seeded), given to the model as "
        "`Refiner.predict(box=...)` and to GrabCut as its rectangle. Means; latency is the median per object.",
        "",
        "| dataset | objects | method | IoU | bIoU 2% | bIoU 1px | HD95 (px) | latency (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        head = f"| {_dataset_label(r)} | {r['n_objects']} |"
        if evaluate.MODEL not in r["methods"]:
            lines.append(f"{head} {_model_name(r)}: {r['model_prompt']} | – | – | – | – | – |")
        for method, s in r["methods"].items():
            name = _model_name(r) if method == evaluate.MODEL else BOX_METHOD_NAMES.get(method, method)
            lines.append(f"{head} {name} | {metric_cells(s)} |")
    return [*lines, "", f"Context, not the same test: {SAM_BOX_CONTEXT}.", "", "Commands:", *_commands(runs)]


def clicks_block(files: list[Path]) -> list[str]:
    """The "Clicks (standard protocol)" table per dataset, and RITM's published NoC@90 beside it as context."""
    runs = [json.loads(f.read_text()) for f in files]
    keys = [noc.target_key(t) for t in runs[0]["targets"]]
    rounds = [k for k in noc.SHOWN_ROUNDS if all(k <= r["rounds"] for r in runs)]
    head = [*(f"NoC@{k}" for k in keys), *(f"failures@{k}" for k in keys), *(f"IoU@{k}" for k in rounds)]
    lines = [
        "The standard protocol (RITM, SimpleClick, SAM): click 1 at the object pixel farthest from its boundary, "
        "each next click at the pixel farthest from the boundary of the larger error region (positive in missed "
        "object, negative in false positive), each method clicking on its own errors. Clicks are discs; the model "
        "holds out of its answer only a negative click's own pixel (its disc may reach into the object), GrabCut "
        "takes negative discs as sure background. NoC@t is "
        f"the mean number of clicks to reach IoU t, a failure (not reached in {runs[0]['rounds']}) counting as "
        f"{runs[0]['rounds']}; IoU@k is the mean IoU after k clicks.",
        "",
        "| dataset | objects | method | " + " | ".join(head) + " |",
        "|---" * (len(head) + 3) + "|",
    ]
    for r in runs:
        for method, s in r["methods"].items():
            name = _model_name(r) if method == noc.MODEL else METHOD_NAMES.get(method, method)
            cells = [f"{s['noc'][k]:.2f}" for k in keys] + [str(s["failures"][k]) for k in keys]
            cells += [f"{s['mean_iou'][k - 1]:.3f}" for k in rounds]
            lines.append(f"| {_dataset_label(r)} | {r['n_objects']} | {name} | " + " | ".join(cells) + " |")
    anchors = " · ".join(f"{name} {value:.2f}" for name, value in RITM_HRNET18_NOC90.items())
    return [
        *lines,
        "",
        f"Published context, not the same test (other datasets and objects): RITM HRNet-18 NoC@90 {anchors} "
        "(Sofiiuk et al., ICIP 2022).",
        "",
        "Commands:",
        *_commands(runs),
    ]


STRIP_CAPTION = (
    "Every 10th frame of each sequence: propagated mask (filled) from the first-frame stroke, true mask outlined"
)


def propagation_block(file: Path) -> tuple[str, list[str]]:
    """``(marker name, lines)`` of one ``training.propagation`` run: its command, table and, when the strip was
    written under docs/, the strip; a run with adaptation goes to the ``propagation-adapt`` block."""
    run = json.loads(file.read_text())
    lines = [f"Command: `{run['command']}` (writes `{file}`, `results.md` and `{run['strip']}`).", ""]
    lines += propagation.markdown(run).rstrip().splitlines()
    if Path(run["strip"]).parts[:1] == ("docs",):
        lines += ["", f"![{STRIP_CAPTION}]({run['strip']})"]
    return ("propagation-adapt" if run.get("adapt") else "propagation"), lines


BLOCKS = {"real": real_block, "real-all": real_block, "clicks": clicks_block, "box": box_block}


def splice_sections(args: argparse.Namespace, readme: Path) -> bool:
    """Splice every README block given on the command line; False when none was."""
    files = {"performance": [args.performance] if args.performance else [], "noc": args.noc or []}
    files |= {
        "real": args.real or [],
        "real-all": args.real_all or [],
        "clicks": args.clicks or [],
        "box": args.box or [],
    }
    for path in args.propagation or []:
        name, lines = propagation_block(path)
        readme.write_text(splice(readme.read_text(), name, "\n".join(lines) + "\n"))
        print(f"spliced {path} into {readme} ({name})")
    for name, paths in files.items():
        if not paths:
            continue
        if name in BLOCKS:
            body = "\n".join(BLOCKS[name](paths)) + "\n"
        else:
            body = "\n".join(f.read_text().rstrip() + "\n" for f in paths)
        readme.write_text(splice(readme.read_text(), name, body))
        print(f"spliced {', '.join(map(str, paths))} into {readme} ({name})")
    return any(files.values()) or bool(args.propagation)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    readme = REPO / "README.md"
    if splice_sections(args, readme):
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
