"""COCO-format instance datasets: one item per usable object (image + boolean mask).

Training and evaluation both read the shared real data through this module,
so the filtering rule (non-crowd, at least ``min_area`` mask pixels, image
file present) is the same everywhere and its effect is counted in ``skipped``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from skimage.io import imread
from skimage.util import img_as_ubyte

ENV_VAR = "SEGMENTELLO_DATA"
DATASETS = ("coco-mini", "dsb2018-nuclei", "coco-mval", "nuclei-histology", "em-isbi2012", "acdc-scribbles")
SPLITS = ("train", "val")
SKIP_REASONS = ("crowd", "small", "missing_file")


def _checkout_root() -> Path | None:
    """The nearest ancestor of this file holding ``pyproject.toml`` (the source checkout), if any."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def default_data_root() -> Path:
    """Where the shared data lives: ``$SEGMENTELLO_DATA``, else ``<checkout>/../shared/data``, else ``../shared/data``.

    Walking up to the checkout makes it independent of the working directory
    when running from the source tree.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    checkout = _checkout_root()
    if checkout is not None and (checkout.parent / "shared" / "data").is_dir():
        return checkout.parent / "shared" / "data"
    return Path.cwd().parent / "shared" / "data"


def dataset_files(name: str, split: str, root: str | Path | None = None) -> tuple[Path, Path]:
    """``(images_dir, annotation_json)`` of a named dataset split under ``root`` (default: ``default_data_root()``)."""
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid names: {list(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
    base = Path(root) if root is not None else default_data_root()
    ann_file = base / name / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file} (set {ENV_VAR} to the data root)")
    return base / name / "images", ann_file


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as H×W×3 uint8: grayscale is repeated, alpha dropped, other depths rescaled."""
    image = np.asarray(imread(path))
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"{path}: expected a 2D image, got array of shape {image.shape}")
    if image.shape[2] in (1, 2):  # gray or gray+alpha
        image = np.repeat(image[..., :1], 3, axis=2)
    image = image[..., :3]
    return image if image.dtype == np.uint8 else img_as_ubyte(image)


@dataclass(frozen=True)
class Instance:
    """One object: its full image and its full-frame mask, and the annotator's strokes where recorded.

    ``scribble`` / ``negative_scribble`` are the human strokes of datasets that keep
    them (acdc-scribbles: the stroke over this object and the background strokes of
    its slice), so evaluation can score real strokes instead of simulated ones.
    """

    image_id: int
    ann_id: int
    category: str
    image: np.ndarray  # H×W×3 uint8
    mask: np.ndarray  # H×W bool
    scribble: np.ndarray | None = None  # H×W bool, or None where the dataset has none
    negative_scribble: np.ndarray | None = None


class CocoInstances:
    """Non-crowd instances with at least ``min_area`` mask pixels from a COCO annotation file.

    ``max_images`` keeps only the first N image ids (sorted) for quick runs.
    Instances whose image file is missing are counted in ``skipped`` and
    warned about once, not fatal, so a partial copy of a dataset stays usable.
    """

    def __init__(
        self,
        images_dir: str | Path,
        ann_file: str | Path,
        *,
        min_area: int = 64,
        max_images: int | None = None,
        image_cache: int = 16,
    ) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        self.images_dir = Path(images_dir)
        self.ann_file = Path(ann_file)
        self.min_area = min_area
        self.coco = _load_coco(self.ann_file)
        self.image_ids: list[int] = sorted(self.coco.getImgIds())[:max_images]
        self.items: list[tuple[int, int]] = []
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        missing: list[str] = []
        for image_id in self.image_ids:
            file_name = self.coco.imgs[image_id]["file_name"]
            present = (self.images_dir / file_name).is_file()
            if not present:
                missing.append(file_name)
            for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id])):
                reason = self._skip_reason(ann, present)
                if reason:
                    self.skipped[reason] += 1
                else:
                    self.items.append((image_id, ann["id"]))
        if missing:
            warnings.warn(
                f"{len(missing)} image file(s) listed in {self.ann_file} are missing from {self.images_dir} "
                f"(e.g. {missing[0]}); their {self.skipped['missing_file']} instance(s) are skipped",
                stacklevel=2,
            )
        self._read = functools.lru_cache(maxsize=image_cache)(self._read_image)

    def _skip_reason(self, ann: dict, image_present: bool) -> str | None:
        if ann.get("iscrowd", 0):
            return "crowd"
        # the decoded pixel count, not the JSON "area" (polygon area), is what training sees
        if not ann.get("segmentation") or mask_utils.area(self.coco.annToRLE(ann)) < self.min_area:
            return "small"
        return None if image_present else "missing_file"

    def _read_image(self, image_id: int) -> np.ndarray:
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{path}: image is {image.shape[:2]} but {self.ann_file.name} says {(info['height'], info['width'])}"
            )
        image.flags.writeable = False  # shared by the cache: callers get copies
        return image

    def load_image(self, image_id: int) -> np.ndarray:
        """The H×W×3 uint8 image (a fresh copy; decoded files are LRU-cached)."""
        if image_id not in self.coco.imgs:
            raise KeyError(f"image id {image_id} is not in {self.ann_file}")
        return self._read(image_id).copy()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Instance:
        image_id, ann_id = self.items[index]
        ann = self.coco.anns[ann_id]
        return Instance(
            image_id=image_id,
            ann_id=ann_id,
            category=self.coco.cats[ann["category_id"]]["name"],
            image=self.load_image(image_id),
            mask=self.coco.annToMask(ann).astype(bool),
            scribble=_decode_extra(ann, "scribble"),
            negative_scribble=_decode_extra(ann, "negative_scribble"),
        )

    def neighbours(
        self, inst: Instance, reach: float = float("inf"), limit: int | None = None
    ) -> dict[int, np.ndarray]:
        """The other objects of ``inst``'s image whose boxes come within ``reach`` px of its box: ``{ann id: mask}``.

        Nearest first (gap between the boxes), at most ``limit``; crowd regions are no objects.
        Kept or too small for training alike: a person annotating the image sees them all.
        Why: the objects around one are what a labels layer's other ids paint (their strokes
        are this object's "not this" in ``Refiner.predict_labels``).
        """
        ref = self.coco.anns[inst.ann_id]["bbox"]
        found = []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[inst.image_id])):
            if ann["id"] == inst.ann_id or ann.get("iscrowd", 0) or not ann.get("segmentation"):
                continue
            gap = _box_gap(ref, ann["bbox"])
            if gap <= reach:
                found.append((gap, ann["id"]))
        found.sort()
        return {k: self.coco.annToMask(self.coco.anns[k]).astype(bool) for _, k in found[:limit]}

    def scribbles(self, image_id: int) -> dict[int, np.ndarray]:
        """The recorded strokes of every annotation of an image that has one: ``{annotation id: H×W bool}``.

        Every annotation counts, kept or skipped: a person painted them all.
        """
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        found = {ann["id"]: _decode_extra(ann, "scribble") for ann in anns}
        return {k: v for k, v in found.items() if v is not None}

    def summary(self) -> str:
        """One line: images, kept instances and skip counts, for logs and provenance."""
        skipped = ", ".join(f"{n} {reason}" for reason, n in self.skipped.items())
        return (
            f"{self.ann_file}: {len(self.image_ids)} images, {len(self)} instances "
            f"(min_area={self.min_area}); skipped {skipped}"
        )


def _box_gap(a: list[float], b: list[float]) -> float:
    """Chebyshev gap in px between two COCO ``[x, y, w, h]`` boxes (0 where they touch or overlap)."""
    gx = max(0.0, b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]))
    gy = max(0.0, b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]))
    return max(gx, gy)


def _decode_extra(ann: dict, key: str) -> np.ndarray | None:
    """The RLE mask under ``ann[key]`` (string or bytes ``counts``) as bool H×W; None when the key is absent."""
    rle = ann.get(key)
    if rle is None:
        return None
    try:
        counts = rle["counts"]
        encoded = {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
        return mask_utils.decode(encoded).astype(bool)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"annotation {ann.get('id')}: {key!r} is not a COCO RLE mask: {err!r}") from err


def _load_coco(ann_file: Path) -> COCO:
    """``COCO(ann_file)`` without its progress prints; unreadable JSON becomes a ValueError naming the file."""
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(ann_file))
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as err:
        raise ValueError(f"{ann_file} is not a COCO instances file: {err!r}") from err
