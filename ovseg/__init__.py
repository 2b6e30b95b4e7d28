"""Open-vocabulary semantic segmentation: data, models (MaskCLIP, MaskCLIP+, mask proposals), evaluation.

    from ovseg import Segmenter
    seg = Segmenter.from_config(CONFIG, CHECKPOINT)
    seg.predict("room.jpg", "wall, floor, sofa|couch").areas()

`Segmenter` and `Segmentation` are imported when first used, so that the evaluators (`ovseg.evaluation`) load
without the model code.
"""
from ovclip.lazy import lazy_attributes

__all__ = ["Segmenter", "Segmentation"]
__getattr__ = lazy_attributes(__name__, __all__)
