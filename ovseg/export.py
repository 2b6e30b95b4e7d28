"""Export a segmenter to an ONNX folder whose vocabulary is an input (see `ovclip.export`).

The graph is the network on one window: a float (3, h, w) image in [0, 1] (any size) and the (C, D)
text embeddings of a vocabulary, C free -> (C, h, w) scores at the window's size (`window_logits`). The
runtime (`ovclip.deploy.OnnxSegmenter`) does what `infer_logits` does around it, with resize.onnx: the
short-side resize, the sliding windows and their average, the resize back to the image and the
probabilities; so whole-image and sliding-window configs both export.

MaskCLIP, MaskCLIP+ and the mask-proposal segmenter without its teacher ensemble export. With
`use_teacher=True` the mask-proposal segmenter crops each predicted mask's box out of the image for the
teacher: crops whose place and number depend on the image, which a traced graph cannot hold.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ovclip.export import (ExportError, export_graph, export_labels, export_resize, export_text_encoder,
                           write_manifest)

from .models.common import SegmentationModel, window_logits
from .models.maskclip import MaskCLIP
from .models.maskclip_plus import MaskCLIPPlus
from .models.maskprop import MaskProposalSegmenter


class _SegmenterGraph(nn.Module):
    """One window's scores with the vocabulary's embeddings as an input."""

    def __init__(self, model: SegmentationModel, scores: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.model, self.scores = model, scores
        self.teacher = model.text.teacher.model  # in the module tree: its weights become the graph's

    def forward(self, image: Tensor, text_embeddings: Tensor) -> Tensor:
        return window_logits(lambda x: self.scores(x, text_embeddings), image)


def _window_scores(model: SegmentationModel) -> Callable[[Tensor, Tensor], Tensor]:
    """(window, text embeddings) -> the model's scores of that window, or ExportError saying why not."""
    if isinstance(model, MaskCLIP):
        return model.dense.window_scores
    if isinstance(model, MaskProposalSegmenter) and model.use_teacher:
        raise ExportError("the mask-proposal segmenter's teacher ensemble crops each predicted mask's box out of "
                          "the image, crops whose place and number depend on the image, which a traced graph "
                          "cannot hold: export the student alone with --cfg-options model.use_teacher=False")
    if not isinstance(model, (MaskCLIPPlus, MaskProposalSegmenter)):
        raise ExportError(f"ovseg exports MaskCLIP, MaskCLIPPlus and MaskProposalSegmenter, not {type(model).__name__}")

    def scores(window: Tensor, text_embeddings: Tensor) -> Tensor:
        model.classifier.set_text_embeddings(text_embeddings)
        return model.window_scores(window)
    return scores


def export_segmenter(model: SegmentationModel, out_dir: "str | Path",
                     window_size: tuple[int, int] = (160, 224)) -> Path:
    """Write model.onnx, resize.onnx, labels.onnx, the teacher's text encoder, its tokenizer and manifest.json
    to `out_dir`; the model is left as it was, on the CPU. `window_size`: the (h, w) traced (any size runs afterwards)."""
    scores = _window_scores(model)
    text = model.text
    out_dir = Path(out_dir)
    embeddings = text.embeddings().detach().clone().float().cpu()
    classifier = getattr(model, "classifier", None)
    training = model.training
    model.eval()
    try:
        image = torch.rand(3, *window_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), (classifier.text_inputs() if classifier is not None else nullcontext()):
            export_graph(_SegmenterGraph(model, scores).cpu(), (image, embeddings), out_dir / "model.onnx",
                         ["image", "text_embeddings"], ["logits"],
                         {"image": {1: "height", 2: "width"}, "text_embeddings": {0: "classes"},
                          "logits": {0: "classes", 1: "height", 2: "width"}})
    finally:
        model.train(training)
    smoothed = isinstance(model, MaskCLIP) and model.dense.key_smoothing is not None
    entry: dict[str, Any] = {"file": "model.onnx", "inputs": ["image", "text_embeddings"], "outputs": ["logits"],
                             "image": "float32 (3, h, w) window in [0, 1], RGB", "embed_dim": int(embeddings.shape[1]),
                             "architecture": type(model).__name__, "inference": dict(model_inference(model)),
                             "probabilities": "scores" if smoothed else "softmax", "resize": export_resize(out_dir),
                             "labels": export_labels(out_dir, softmax=not smoothed)}
    encoder = export_text_encoder(text.teacher, out_dir, text.source)
    return write_manifest(out_dir, "segmenter", entry, encoder, model.vocabulary)


def model_inference(model: SegmentationModel) -> dict:
    """The model's whole-image / sliding-window settings (mode, crop_size, stride, short_side)."""
    return model.dense.inference if isinstance(model, MaskCLIP) else model.inference


def export_config(config: "str | Path", checkpoint: "str | Path | None", out_dir: "str | Path",
                  cfg_options: "dict | None" = None, allow_untrained: bool = False) -> Path:
    """Build the config's segmenter with the checkpoint's weights (MaskCLIP needs none; a trainable model
    without one is refused unless `allow_untrained`) and export it to `out_dir`; returns the manifest's path."""
    from .api import Segmenter
    model = Segmenter.from_config(config, checkpoint, cfg_options=cfg_options, allow_untrained=allow_untrained).model
    return export_segmenter(model, out_dir)
