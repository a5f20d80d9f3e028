"""When pass 1's answer is final: a first stroke whose focus window would show the network nothing new.

The *stubborn* stand-in (``stand_ins.Stubborn``: its earlier mask where it has one, else the bright pixels)
counts its windows, so each test reads how many forwards the engine spent and whether the answer is the object.
"""

from __future__ import annotations

import numpy as np
from skimage.draw import disk, line

from napari_segmentello.engine import Refiner
from napari_segmentello.metrics import iou
from napari_segmentello.roi import ROI, focus_sees_more
from stand_ins import Stubborn


def _scene(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> tuple[np.ndarray, Stubborn, Refiner]:
    disc = np.zeros(shape, bool)
    disc[disk(centre, radius, shape=shape)] = True
    net = Stubborn()
    refiner = Refiner(net)
    refiner.set_image(disc.astype(np.float32))
    return disc, net, refiner


def _stroke(shape: tuple[int, int], row: int, col0: int, col1: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[line(row, col0, row, col1)] = True
    return out


def test_a_first_stroke_seen_whole_at_full_resolution_takes_one_forward():
    disc, net, refiner = _scene((400, 400), (200, 200), 20)
    answer = refiner.predict(_stroke(disc.shape, 200, 190, 210))  # 64-px pass-1 window, the disc inside it
    assert iou(disc, answer) > 0.95
    assert net.windows == 1


def test_corrections_boxes_and_clicks_keep_both_passes():
    disc, net, refiner = _scene((400, 400), (200, 200), 20)
    stroke = _stroke(disc.shape, 200, 190, 210)
    for kwargs in ({"previous": disc}, {"box": (170, 170, 231, 231)}):
        net.windows = 0
        assert iou(disc, refiner.predict(stroke, **kwargs)) > 0.95
        assert net.windows == 2, kwargs  # an earlier mask or a box: pass 2 looks again
    net.windows = 0
    click = np.zeros(disc.shape, bool)
    click[disk((200, 200), 4.5)] = True
    assert iou(disc, refiner.predict(click)) > 0.95
    assert net.windows == 2  # a click: pass 2 still helps the clicks that follow (README, latency)


def test_a_window_shrunk_to_the_working_size_is_refined_again():
    disc, net, refiner = _scene((800, 800), (400, 400), 150)
    answer = refiner.predict(_stroke(disc.shape, 400, 330, 470))  # a 420-px pass-1 window, seen at 160 px
    assert iou(disc, answer) > 0.95
    assert net.windows == 2


def test_focus_sees_more_unless_inside_an_unshrunk_window():
    window = ROI(0, 0, 100)
    assert not focus_sees_more(window, ROI(10, 10, 80), working_size=160)
    assert focus_sees_more(window, ROI(-1, 10, 80), working_size=160)  # it reaches past the window
    assert focus_sees_more(window, ROI(30, 30, 80), working_size=160)
    assert focus_sees_more(window, ROI(10, 10, 80), working_size=64)  # pass 1 saw the window shrunk
    assert window.contains(window) and not ROI(1, 0, 100).contains(window)
