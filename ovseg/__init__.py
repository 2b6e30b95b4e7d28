"""Open-vocabulary semantic segmentation: data, models (MaskCLIP, MaskCLIP+, mask proposals), evaluation.

    from ovseg import Segmenter
    seg = Segmenter.from_config(CONFIG, CHECKPOINT)
    seg.predict("room.jpg", "wall, floor, sofa|couch").areas()

`Segmenter` and `Segmentation` are imported when first used, so that the evaluators (`ovseg.evaluation`) load
without the model code.
"""
from typing import Any

__all__ = ["Segmenter", "Segmentation"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'ovseg' has no attribute '{name}'")
    from . import api
    value = getattr(api, name)
    globals()[name] = value
    return value
