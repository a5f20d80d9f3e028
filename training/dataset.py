"""Training samples: one object -> (model input, target), cut exactly as the engine cuts it.

For each object a stroke is simulated by the core (``strokes.simulate_stroke``),
the window around the *stroke* is prepared by ``inputs.prepare_window`` (the
function the engine calls at inference, never the ground-truth box) and the
target is the ground truth cut with the same ROI. Every random choice comes
from a generator seeded by (seed, epoch, dataset, annotation id), so a sample
is the same whatever the worker count, the split or the order of loading.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from napari_segmentello.data import CocoInstances, dataset_files
from napari_segmentello.inputs import intensity_range
from napari_segmentello.losses import signed_distance_map
from napari_segmentello.roi import stroke_bbox
from napari_segmentello.samples import (  # shared with finetune
    DEFAULT_MIX,
    NEIGHBOUR_LIMIT,
    NEIGHBOUR_REACH,
    PromptMix,
    Sample,
    make_sample,
    neighbour_scribbles,
    perturb_mask,
)

from training.augment import augmented
from training.composites import composite_object
from training.config import TrainConfig

__all__ = [
    "DATASET_KEYS",
    "EpochSampler",
    "Sample",
    "StrokeSamples",
    "make_sample",
    "open_sources",
    "perturb_mask",
    "resolve_dataset",
    "split_items",
]

DATASET_KEYS = ("dataset", "split", "images_dir", "data_root", "ann_file", "min_area", "max_images")

Item = tuple[int, int]  # (source index, instance index in that source)


def resolve_dataset(entry: dict[str, Any]) -> tuple[Path, Path]:
    """``(images_dir, ann_file)`` of one ``datasets`` entry of a config.

    Either a named dataset (``dataset`` + ``split``, under ``default_data_root()``)
    or an ``ann_file`` with its images folder (``images_dir``, alias ``data_root``;
    default: ``<ann_file>/../../images``, the shared data's layout).
    """
    unknown = sorted(set(entry) - set(DATASET_KEYS))
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} in a datasets entry; valid keys: {list(DATASET_KEYS)}")
    if "ann_file" in entry:
        ann_file = Path(entry["ann_file"]).expanduser()
        images = entry.get("images_dir", entry.get("data_root"))
        return (Path(images).expanduser() if images else ann_file.parent.parent / "images"), ann_file
    if "dataset" not in entry:
        raise KeyError(f"a datasets entry needs 'dataset' (+ 'split') or 'ann_file', got {entry}")
    return dataset_files(entry["dataset"], entry.get("split", "train"))


def open_sources(cfg: TrainConfig) -> list[CocoInstances]:
    """Every dataset of the config, filtered (crowd, ``min_area``, missing files) and counted."""
    sources = []
    for entry in cfg.datasets:
        images_dir, ann_file = resolve_dataset(entry)
        sources.append(
            CocoInstances(
                images_dir,
                ann_file,
                min_area=entry.get("min_area", cfg.min_area),
                max_images=entry.get("max_images", cfg.max_images),
                image_cache=cfg.image_cache,
            )
        )
    return sources


def split_items(sources: list[CocoInstances], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(train, validation) items; validation is a seeded ``val_fraction`` of each source's *images*.

    Whole images are held out, so no object of a validation image is trained
    on; it comes from the training split, the val split stays for evaluation.
    """
    train: list[Item] = []
    val: list[Item] = []
    for s, source in enumerate(sources):
        ids = np.array(sorted({image_id for image_id, _ in source.items}))
        n_val = int(round(val_fraction * len(ids)))
        if val_fraction > 0 and len(ids) > 1:
            n_val = min(max(n_val, 1), len(ids) - 1)
        held = set(np.random.default_rng([seed, s]).permutation(ids)[:n_val].tolist())
        for i, (image_id, _) in enumerate(source.items):
            (val if image_id in held else train).append((s, i))
    return train, val


class StrokeSamples(Dataset):
    """Map-style dataset of ``{"x", "y", "scale"[, "sdm"]}`` tensors over (source, instance) items.

    ``scale`` is the window's pixels per image pixel (how large a click is in the window).

    A key is an index or an ``(index, epoch)`` pair (see :class:`EpochSampler`):
    training draws new strokes every epoch while persistent loader workers
    keep their image caches; a plain index (validation) always uses epoch 0,
    so the validation loss compares epochs on identical inputs.

    ``composite_prob`` replaces that share of samples by a synthetic ring, band or
    holed object (:func:`training.composites.composite_object`) textured from another
    item's image; pass it for the training set only, so validation stays real data.
    ``flip_prob`` and ``gray_prob`` mirror an object's image or make it gray
    (:func:`training.augment.augmented`); likewise training only.
    """

    def __init__(
        self,
        sources: list[CocoInstances],
        items: list[Item],
        spec: Any,
        protocol: str | dict[str, float],
        *,
        seed: int,
        correction_prob: float = 0.0,
        with_sdm: bool = False,
        mix: PromptMix = DEFAULT_MIX,
        composite_prob: float = 0.0,
        flip_prob: float = 0.0,
        gray_prob: float = 0.0,
    ) -> None:
        if correction_prob > 0 and not {"neg", "prev"} <= set(spec.extras):
            raise ValueError(
                f"correction_prob={correction_prob} needs a model whose spec extras include 'neg' and 'prev', "
                f"got extras {tuple(spec.extras)}"
            )
        self.sources, self.items, self.spec, self.protocol = sources, items, spec, protocol
        self.seed, self.correction_prob, self.with_sdm, self.mix = seed, correction_prob, with_sdm, mix
        self.composite_prob, self.flip_prob, self.gray_prob = composite_prob, flip_prob, gray_prob
        self._ranges: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The generator of one sample: a function of (seed, epoch, source, annotation id) only."""
        s, i = self.items[index]
        ann_id = self.sources[s].items[i][1]
        return np.random.default_rng([self.seed, epoch, s, ann_id])

    def sample(self, index: int, epoch: int = 0) -> Sample:
        """The numpy sample behind ``self[index, epoch]``."""
        s, i = self.items[index]
        inst = self.sources[s][i]
        image, mask = inst.image, inst.mask
        rng = self.rng(index, epoch)
        composite = self.composite_prob > 0 and rng.random() < self.composite_prob  # no draw at 0: samples unchanged
        if composite:
            image, mask = composite_object(image, self._other_image(index, rng), mask, rng)
        others = None  # a composite's neighbours are not in its image
        if not composite and self.mix.neighbours > 0 and rng.random() < self.mix.neighbours:
            others = self._neighbour_scribbles(s, inst, rng)
        masks = mask if others is None else np.stack([mask, others])
        image, masks, changed = augmented(image, masks, rng, flip_prob=self.flip_prob, gray_prob=self.gray_prob)
        mask, others = (masks, None) if others is None else (masks[0], masks[1])
        if composite or changed:  # this image's own range, never cached under the real image
            lo, hi = intensity_range(image)
        else:
            key = (s, inst.image_id)
            if key not in self._ranges:  # once per image and worker, as the engine's set_image does
                self._ranges[key] = intensity_range(image)
            lo, hi = self._ranges[key]
        correction = self.correction_prob > 0 and rng.random() < self.correction_prob
        return make_sample(
            image, mask, self.spec, self.protocol, rng, lo=lo, hi=hi, correction=correction, mix=self.mix, others=others
        )

    def _neighbour_scribbles(self, s: int, inst: Any, rng: np.random.Generator) -> np.ndarray | None:
        """Scribbles on the objects near ``inst`` (within ``NEIGHBOUR_REACH`` × its extent), off ``inst``."""
        y0, y1, x0, x1 = stroke_bbox(inst.mask)
        reach = NEIGHBOUR_REACH * max(y1 - y0, x1 - x0)
        near = self.sources[s].neighbours(inst, reach=reach, limit=NEIGHBOUR_LIMIT)
        return neighbour_scribbles(inst.mask, near.values(), rng)

    def _other_image(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The image of another random item of this dataset (a composite's texture: same split only)."""
        other = (index + 1 + rng.integers(len(self.items) - 1)) % len(self.items) if len(self.items) > 1 else index
        s, i = self.items[other]
        source = self.sources[s]
        return source.load_image(source.items[i][0])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.sample(index, epoch)
        y = sample.y.astype(np.float32)
        scale = torch.tensor(self.spec.working_size / sample.roi.size, dtype=torch.float32)  # window px per image px
        out = {"x": torch.from_numpy(sample.x), "y": torch.from_numpy(y[None]), "scale": scale}
        if self.with_sdm:  # the boundary loss's distance map, computed here in the loader's workers
            out["sdm"] = torch.from_numpy(signed_distance_map(y)[None])
        return out


class EpochSampler(Sampler):
    """A :class:`DistributedSampler`'s shuffled order (seed + epoch), each index paired with the epoch.

    Passing the epoch inside the key lets loader workers stay alive across
    epochs (``persistent_workers``) and keep their decoded images cached.
    With one process it is a plain seeded shuffle.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world: int = 1) -> None:
        self.order = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, self.epoch) for i in self.order)
