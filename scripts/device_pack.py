"""Pack a training config's data small enough to travel to a lent GPU machine (the device tool sends <= 64 MiB).

    PYTHONPATH=. python scripts/device_pack.py --config training/configs/default.toml --out .devdata --quality 60

The device machine sees only the repository, not ``../shared``: this writes, under ``--out``,
each dataset's annotation file cut to the images the config reads (``data.CocoInstances``'s
own choice under ``max_images``, so the held-out split is the same)
and gzipped, and those images: JPEG files re-encoded at ``--quality`` (same pixels size, so the
annotations hold; compression artefacts are the only change), others copied as they are.
``scripts/device_train.sh`` unpacks it there. Fails, naming the size, when the pack exceeds
``--budget`` MiB (default 52: with the repository's ~10 MiB the call stays under 64). For
``default.toml``: 49 MiB at quality 60 (72 MiB at 75). Add ``--out`` to ``.git/info/exclude``
(the data must never be committed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from napari_segmentello.data import CocoInstances
from training.config import load_config
from training.dataset import resolve_dataset


def _subset(source: CocoInstances) -> dict:
    """The source's annotation file with only the images it reads (``max_images``) and their annotations."""
    ann, keep = source.coco.dataset, set(source.image_ids)
    out = dict(ann)
    out["images"] = [img for img in ann["images"] if img["id"] in keep]
    out["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
    return out


def _copy_image(src: Path, dst: Path, quality: int) -> None:
    if src.suffix.lower() in (".jpg", ".jpeg"):
        with Image.open(src) as image:
            image.save(dst, quality=quality)
    else:
        shutil.copyfile(src, dst)


def pack(config: Path, out: Path, quality: int) -> int:
    """Write the pack; returns its size in bytes."""
    cfg = load_config(config)
    for entry in cfg.datasets:
        if "dataset" not in entry:
            raise ValueError(f"only named datasets can be packed, got {entry}")
        images_dir, ann_file = resolve_dataset(entry)
        ann = _subset(CocoInstances(images_dir, ann_file, max_images=entry.get("max_images", cfg.max_images)))
        target = out / entry["dataset"]
        (target / "annotations").mkdir(parents=True, exist_ok=True)
        (target / "images").mkdir(exist_ok=True)
        with gzip.open(target / "annotations" / (ann_file.name + ".gz"), "wt") as f:
            json.dump(ann, f)
        for img in ann["images"]:
            _copy_image(images_dir / img["file_name"], target / "images" / img["file_name"], quality)
        print(f"{entry['dataset']}: {len(ann['images'])} images, {len(ann['annotations'])} annotations", flush=True)
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/device_pack.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("training/configs/default.toml"))
    p.add_argument("--out", type=Path, default=Path(".devdata"))
    p.add_argument("--quality", type=int, default=60, help="JPEG quality of re-encoded photos (default 60)")
    p.add_argument("--budget", type=float, default=52.0, help="MiB the pack may take (default 52)")
    args = p.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    size = pack(args.config, args.out, args.quality) / 2**20
    print(f"{args.out}: {size:.1f} MiB")
    if size > args.budget:
        print(f"error: the pack takes {size:.1f} MiB, over --budget {args.budget}; lower --quality", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
