"""Evaluators for open-vocabulary detection: OV-COCO (AP50 base / novel / all) and (OV-)LVIS, also as
mmengine metrics (`ovd.evaluation.metrics`, registered in the `ovd` scope). Names are imported when first
used, so that the evaluators load without mmengine's runner, open_clip or the models."""
from importlib import import_module
from typing import Any

_EXPORTS = {"DetectionEvaluator": "coco", "OVCocoEvaluator": "coco", "LvisEvaluator": "lvis",
            "DetectionMetric": "metrics", "LvisMetric": "metrics"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovd.evaluation' has no attribute '{name}'")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
