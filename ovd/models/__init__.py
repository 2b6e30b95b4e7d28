"""Open-vocabulary detectors: ViLD on torchvision's Faster R-CNN, its mmengine model, DetPro's prompt
training, and OV-DETR / DETR-text on Deformable DETR's parts."""
from .detector import ViLDDetector
from .detpro import DetProPrompts, SavePromptsHook
from .ovdetr import OVDETRDetector
from .vild import ViLD, ViLDPredictor, ViLDRoIHeads, build_vild, ensemble_scores

__all__ = ["DetProPrompts", "OVDETRDetector", "SavePromptsHook", "ViLD", "ViLDDetector", "ViLDPredictor",
           "ViLDRoIHeads", "build_vild", "ensemble_scores"]
