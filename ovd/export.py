"""Export a trained detector to an ONNX folder whose vocabulary is an input (see `ovclip.export`).

The graph takes one float (3, H, W) image in [0, 1] (any size: the resize to the model's input size,
the normalisation and the rescaling of boxes to the image are in the graph), the (C, D) text embeddings
of a vocabulary and its (C,) base mask (which classes the ensemble treats as base; all of them for a
vocabulary without a split), with C free, and returns boxes (N, 4, xyxy pixels), scores (N,), labels (N,)
and, for a model with a mask head, masks (N, 1, H, W). NMS runs over every candidate in the graph (the
torch model's `box_pre_nms_top_n` shortcut gives the same detections).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovclip.export import ExportError, export_graph, export_text_encoder, write_manifest

from .models.detector import ViLDDetector


class _DetectorGraph(nn.Module):
    """ViLD with the vocabulary's embeddings as inputs instead of its classifier's buffer."""

    def __init__(self, model: ViLDDetector):
        super().__init__()
        self.detector = model.detector

    def forward(self, image: torch.Tensor, text_embeddings: torch.Tensor, base_mask: torch.Tensor):
        self.detector.predictor.classifier.set_text_embeddings(text_embeddings, base_mask)
        out = self.detector([image])[0]
        outputs = (out["boxes"], out["scores"], out["labels"])
        return outputs + (out["masks"],) if "masks" in out else outputs


def export_detector(model: ViLDDetector, out_dir: "str | Path", image_size: tuple[int, int] = (480, 640)) -> Path:
    """Write model.onnx, the teacher's text encoder, its tokenizer and manifest.json to `out_dir`; the
    model is left as it was. `image_size`: the (H, W) of the image traced (any size runs afterwards)."""
    if type(model).__name__ == "OVDETRDetector" and model.conditional:
        raise ExportError("OV-DETR conditions its queries on every class of the vocabulary, a batch of classes per "
                          "decoder pass: a loop whose length depends on the vocabulary's size, which a traced ONNX "
                          "graph cannot hold")
    if not isinstance(model, ViLDDetector):
        raise ExportError(f"ovd exports ViLD detectors (ViLDDetector) only: {type(model).__name__} does not export to "
                          f"ONNX yet")
    out_dir = Path(out_dir)
    detector, heads = model.detector, model.detector.roi_heads
    classifier = detector.predictor.classifier
    embeddings, base = classifier.text_embeddings.clone(), classifier.base_mask.clone()  # (synced)
    saved = (heads.pre_nms_top_n, model.training)
    heads.pre_nms_top_n = None  # no data-dependent loop in the graph; NMS over every candidate is exact
    model.eval()
    try:
        g = torch.Generator().manual_seed(0)
        image = torch.rand(3, *image_size, generator=g)
        outputs = ["boxes", "scores", "labels"] + (["masks"] if heads.has_mask() else [])
        axes: dict[str, dict[int, str]] = {"image": {1: "height", 2: "width"}, "text_embeddings": {0: "classes"},
                                           "base_mask": {0: "classes"}}
        axes.update({name: {0: "detections"} for name in outputs})
        with torch.no_grad(), classifier.text_inputs():
            export_graph(_DetectorGraph(model).cpu(), (image, embeddings.cpu(), base.cpu()), out_dir / "model.onnx",
                         ["image", "text_embeddings", "base_mask"], outputs, axes)
    finally:
        heads.pre_nms_top_n = saved[0]
        model.train(saved[1])
    entry: dict[str, Any] = {"file": "model.onnx", "inputs": ["image", "text_embeddings", "base_mask"],
                             "outputs": outputs, "image": "float32 (3, H, W) in [0, 1], RGB",
                             "embed_dim": int(embeddings.shape[1]), "inference_mode": heads.inference_mode,
                             "min_size": detector.transform.min_size[-1], "max_size": detector.transform.max_size,
                             "image_mean": list(detector.transform.image_mean),
                             "image_std": list(detector.transform.image_std)}
    encoder = export_text_encoder(model.teacher, out_dir, model.text.source)
    return write_manifest(out_dir, "detector", entry, encoder, model.vocabulary)


def export_config(config: "str | Path", checkpoint: "str | Path | None", out_dir: "str | Path",
                  cfg_options: "dict | None" = None, allow_untrained: bool = False) -> Path:
    """Build the config's detector with the checkpoint's weights (refused without one unless
    `allow_untrained`) and export it to `out_dir`; returns the manifest's path."""
    from .api import Detector
    model = Detector.from_config(config, checkpoint, cfg_options=cfg_options, allow_untrained=allow_untrained).model
    return export_detector(model, out_dir)
