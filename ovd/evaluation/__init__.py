"""Evaluators for open-vocabulary detection: OV-COCO (AP50 base / novel / all) and (OV-)LVIS."""
from .coco import DetectionEvaluator, OVCocoEvaluator
from .lvis import LvisEvaluator

__all__ = ["DetectionEvaluator", "OVCocoEvaluator", "LvisEvaluator"]
