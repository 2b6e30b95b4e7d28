"""ovd: open-vocabulary detection students (ViLD) built on ovclip, trained and evaluated with mmengine.

    from ovd import Detector
    det = Detector.from_config(CONFIG, CHECKPOINT)
    det.predict("image.jpg", "cat, dog, sofa|couch")
"""
from .api import Detections, Detector

__all__ = ["Detector", "Detections"]
