"""Make the bundled sample: hand-drawn scribbles over three coins and their reference masks.

The photo is scikit-image's ``coins`` (shipped offline with scikit-image). The
strokes are the project's own zig-zag scribbles; the reference masks come from a
classical pipeline (Sobel elevation map + marker watershed + hole filling, as in
scikit-image's region-based segmentation example), keeping the component under
each stroke. Both are saved as uint8 label PNGs into the package's ``data/``.

Run: .venv/bin/python scripts/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import data, draw, filters, io, measure, morphology, segmentation

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_segmentello" / "data"

# One scribble per object, as (row, col) vertices in image pixels: a big coin on
# the right, one at the bottom and a small one at the top left.
SCRIBBLES = {
    1: [(170, 336), (182, 330), (176, 350), (194, 336), (186, 360), (204, 350)],
    2: [(248, 164), (262, 156), (256, 174), (274, 166), (268, 184)],
    3: [(42, 38), (52, 30), (50, 46), (62, 40), (60, 54)],
}
BRUSH_RADIUS = 2


def coin_components(image: np.ndarray) -> np.ndarray:
    """Labelled coins: watershed of the Sobel elevation from dark-background / bright-coin markers."""
    markers = np.zeros(image.shape, np.uint8)
    markers[image < 30] = 1
    markers[image > 150] = 2
    coins = segmentation.watershed(filters.sobel(image), markers) == 2
    return measure.label(ndi.binary_fill_holes(coins))


def draw_strokes(shape: tuple[int, int]) -> np.ndarray:
    """uint8 label image of the scribbles, each polyline thickened by a round brush."""
    strokes = np.zeros(shape, np.uint8)
    brush = morphology.disk(BRUSH_RADIUS)
    for label, points in SCRIBBLES.items():
        line = np.zeros(shape, bool)
        for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=False):
            rr, cc = draw.line(r0, c0, r1, c1)
            line[rr, cc] = True
        strokes[ndi.binary_dilation(line, brush)] = label
    return strokes


def reference_masks(components: np.ndarray, strokes: np.ndarray) -> np.ndarray:
    """For each stroke, the single coin component it lies on, relabelled with the stroke's id."""
    reference = np.zeros(strokes.shape, np.uint8)
    for label in SCRIBBLES:
        under = np.unique(components[strokes == label])
        under = under[under > 0]
        if under.size != 1:
            raise RuntimeError(f"stroke {label} touches {under.size} coins, expected exactly one")
        if not (components[strokes == label] > 0).all():
            raise RuntimeError(f"stroke {label} leaves its coin; redraw it")
        reference[components == under[0]] = label
    return reference


def main() -> None:
    image = data.coins()
    strokes = draw_strokes(image.shape)
    reference = reference_masks(coin_components(image), strokes)
    OUT.mkdir(parents=True, exist_ok=True)
    io.imsave(OUT / "coins_strokes.png", strokes, check_contrast=False)
    io.imsave(OUT / "coins_reference.png", reference, check_contrast=False)
    for label in SCRIBBLES:
        print(
            f"object {label}: stroke {int((strokes == label).sum())} px, reference {int((reference == label).sum())} px"
        )
    print(f"wrote {OUT / 'coins_strokes.png'} and {OUT / 'coins_reference.png'}")


if __name__ == "__main__":
    main()
