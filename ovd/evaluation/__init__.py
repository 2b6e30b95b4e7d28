"""Evaluators for open-vocabulary detection: OV-COCO (AP50 base / novel / all) and (OV-)LVIS, also as
mmengine metrics."""
from .coco import DetectionEvaluator, OVCocoEvaluator
from .lvis import LvisEvaluator
from .metrics import DetectionMetric, LvisMetric

__all__ = ["DetectionEvaluator", "OVCocoEvaluator", "LvisEvaluator", "DetectionMetric", "LvisMetric"]
