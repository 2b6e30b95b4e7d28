"""Open-vocabulary segmenters: MaskCLIP (zero-shot), MaskCLIP+ (distilled DeepLabV3), mask proposals."""
from .maskclip import DenseTeacher, MaskCLIP
from .maskclip_plus import MaskCLIPPlus, training_targets
from .maskprop import MaskProposalSegmenter

__all__ = ["DenseTeacher", "MaskCLIP", "MaskCLIPPlus", "MaskProposalSegmenter", "training_targets"]
