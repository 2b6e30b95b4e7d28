"""Open-vocabulary detectors: ViLD on torchvision's Faster R-CNN, and its mmengine model."""
from .detector import ViLDDetector
from .vild import ViLD, ViLDPredictor, ViLDRoIHeads, build_vild, ensemble_scores

__all__ = ["ViLD", "ViLDDetector", "ViLDPredictor", "ViLDRoIHeads", "build_vild", "ensemble_scores"]
