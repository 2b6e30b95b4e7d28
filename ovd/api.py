"""The Python API: `Detector.from_config(CONFIG, CHECKPOINT).predict(image, vocabulary)`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ovclip.demo import require_checkpoint
from ovclip.results import Detections
from ovclip.engine import build_model
from ovclip.io import as_image_tensor
from ovclip.vocabulary import LastVocabulary, Vocabulary, load_vocabulary


class Detector:
    """A trained open-vocabulary detector that finds any classes named in text."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device
        self._last = LastVocabulary()

    @classmethod
    def from_config(cls, config: "str | Path", checkpoint: "str | Path | None" = None, device: str = "cpu",
                    cfg_options: Optional[dict] = None, allow_untrained: bool = False) -> "Detector":
        """Build the config's model and load a checkpoint's weights (weights_only). A detector has trainable
        weights, so no checkpoint is a ConfigError, unless `allow_untrained` asks for the untrained model."""
        import ovd.models  # noqa: F401 - registers the detectors

        model = build_model(config, checkpoint, cfg_options)
        if checkpoint is None and not allow_untrained:
            require_checkpoint(model, config)
        return cls(model, device)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes currently detected."""
        return self.model.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Detect these classes from now on ('cat, dog, sofa|couch', a list, a builtin name or a file). The
        same text or list of names as the last call costs nothing: it is not parsed again (at 21k classes
        parsing took longer than detecting)."""
        known = self._last.recall(vocabulary, self.model.vocabulary)
        if known is not None:
            return known
        vocab = load_vocabulary(vocabulary)
        if vocab != self.model.vocabulary:
            self.model.set_vocabulary(vocab)
        self._last.remember(vocabulary, self.model.vocabulary)
        return vocab

    @torch.inference_mode()
    def predict(self, image: Any, vocabulary: "str | Sequence[str] | Vocabulary | None" = None,
                score_thr: float = 0.0) -> Detections:
        """Detect in one image (path, PIL image, HxWx3 array or 3xHxW tensor), optionally with another
        vocabulary, keeping detections scoring at least `score_thr`."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        tensor = as_image_tensor(image).to(self.device)
        det = self.model([tensor], mode="predict")[0]
        keep = det["scores"] >= score_thr
        labels = det["labels"][keep].cpu()
        names = self.model.vocabulary.names
        masks = det["masks"][keep][:, 0].cpu() if "masks" in det else None
        return Detections(det["boxes"][keep].cpu(), det["scores"][keep].cpu(), labels,
                          [names[i] for i in labels.tolist()], masks)
