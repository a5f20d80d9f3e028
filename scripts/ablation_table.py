"""Issue 13's ablation table from the runs of ``scripts/ablation_encoder.sh``: one row per arm.

Usage: python scripts/ablation_table.py runs/ablation   (writes runs/ablation/ablation.md and prints it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARMS = {
    "tuned": "lite0-128, ImageNet encoder finetuned (lr/10)",
    "frozen": "lite0-128, ImageNet encoder frozen",
    "tiny": "tiny16-128 from scratch (today's default architecture)",
}


def _row(folder: Path, arm: str) -> str:
    real = json.loads((folder / arm / "acdc" / "results.json").read_text())
    clicks = json.loads((folder / arm / "clicks" / "noc.json").read_text())
    log = [json.loads(line) for line in (folder / arm / "log.jsonl").read_text().splitlines()]
    model, grabcut = clicks["methods"]["model"], clicks["methods"]["grabcut"]
    cells = [
        ARMS[arm],
        f"{sum(e['samples'] for e in log)} / {sum(e['seconds'] for e in log) / 60:.0f} min",
        f"{real['methods']['model']['mean']['iou']:.3f}",
        f"{model['mean_iou'][0]:.3f}",
        f"{model['mean_iou'][4]:.3f}",
        f"{model['noc']['90']:.2f} ({grabcut['noc']['90']:.2f})",
    ]
    return "| " + " | ".join(cells) + " |"


def main(folder: Path) -> str:
    first = json.loads((folder / "tuned" / "clicks" / "noc.json").read_text())
    real = json.loads((folder / "tuned" / "acdc" / "results.json").read_text())
    lines = [
        f"Same data and prompts, same CPU time budget per arm. acdc-scribbles val: {real['n_objects']} objects, the "
        f"recorded human strokes; coco-mini val: {first['n_objects']} objects, standard clicks "
        f"(NoC@90 over {first['rounds']} clicks, GrabCut from the same protocol in brackets).",
        "",
        "| arm | samples / wall time | acdc real-stroke IoU | coco clicks IoU@1 | IoU@5 | NoC@90 (GrabCut) |",
        "|---|---|---|---|---|---|",
        *(_row(folder, arm) for arm in ARMS if (folder / arm / "clicks" / "noc.json").is_file()),
    ]
    text = "\n".join(lines) + "\n"
    (folder / "ablation.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation")))
