"""Detection datasets and augmentation pipelines."""
from .coco import CocoDetection, DetectionRecord, detection_collate, load_detection_annotations
from .proposal_embeddings import ProposalEmbeddings
from ovclip.transforms import PipelineError, build_pipeline

__all__ = ["CocoDetection", "DetectionRecord", "detection_collate", "load_detection_annotations",
           "PipelineError", "ProposalEmbeddings", "build_pipeline"]
