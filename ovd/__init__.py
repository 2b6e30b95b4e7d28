"""ovd: open-vocabulary detection students (ViLD) built on ovclip, trained and evaluated with mmengine.

    from ovd import Detector
    det = Detector.from_config(CONFIG, CHECKPOINT)
    det.predict("image.jpg", "cat, dog, sofa|couch")

`Detector` and `Detections` are imported when first used, so that the evaluators (`ovd.evaluation`) load
without the model code.
"""
from typing import Any

__all__ = ["Detector", "Detections"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'ovd' has no attribute '{name}'")
    from . import api
    value = getattr(api, name)
    globals()[name] = value
    return value
