"""Detection datasets and augmentation pipelines."""
from .coco import CocoDetection, DetectionRecord, detection_collate, load_detection_annotations
from ovclip.transforms import PipelineError, build_pipeline

__all__ = ["CocoDetection", "DetectionRecord", "detection_collate", "load_detection_annotations",
           "PipelineError", "build_pipeline"]
