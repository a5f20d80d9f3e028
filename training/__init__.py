"""Training, evaluation and study reproduction for napari-segmentello (run from a checkout, not installed).

- ``python -m training.run``: train one config (``training/configs/*.toml``), single process or torchrun
- ``python -m training.evaluate``: the real inference path + baselines on a COCO split
- ``python -m training.reproduce``: the study's eight rows, trained on a budget and evaluated
"""
