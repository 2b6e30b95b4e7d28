"""Open-vocabulary detectors: ViLD on torchvision's Faster R-CNN, its mmengine model, and DetPro's prompt
training."""
from .detector import ViLDDetector
from .detpro import DetProPrompts, SavePromptsHook
from .vild import ViLD, ViLDPredictor, ViLDRoIHeads, build_vild, ensemble_scores

__all__ = ["DetProPrompts", "SavePromptsHook", "ViLD", "ViLDDetector", "ViLDPredictor", "ViLDRoIHeads", "build_vild",
           "ensemble_scores"]
