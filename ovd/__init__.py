"""ovd: open-vocabulary detection students (ViLD) built on ovclip, trained and evaluated with mmengine.

    from ovd import Detector
    det = Detector.from_config(CONFIG, CHECKPOINT)
    det.predict("image.jpg", "cat, dog, sofa|couch")

`Detector` and `Detections` are imported when first used, so that the evaluators (`ovd.evaluation`) load
without the model code.
"""
from ovclip.lazy import lazy_attributes

__all__ = ["Detector", "Detections"]
__getattr__ = lazy_attributes(__name__, __all__)
