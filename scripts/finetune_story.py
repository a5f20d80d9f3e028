"""Finetuning user story: the default refiner finetuned on N dsb2018 *train* images' labels.

Stands in for a user's finished Labels layers; evaluate the result on val with
``python -m training.report --models runs/ft/dsb10.pt --max-objects 300 --out runs/report-ft``.
Usage: ``python scripts/finetune_story.py [--images 10] [--minutes 2] [--out runs/ft/dsb10.pt]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.finetune import finetune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--out", default="runs/ft/dsb10.pt")
    args = parser.parse_args()
    instances = CocoInstances(*dataset_files("dsb2018-nuclei", "train"), max_images=args.images)
    pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, (image_id, _) in enumerate(instances.items):
        sample = instances[i]
        _, labels = pairs.setdefault(image_id, (sample.image, np.zeros(sample.mask.shape, np.int32)))
        labels[sample.mask] = labels.max() + 1
    print(f"{len(pairs)} images, {sum(int(lab.max()) for _, lab in pairs.values())} objects")
    out = finetune(list(pairs.values()), model="default", out=args.out, minutes=args.minutes, device="cpu")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
