"""The results of detecting or segmenting one image, shared by the torch APIs (`ovd.Detector`,
`ovseg.Segmenter`: torch tensors) and the onnxruntime ones (`ovclip.deploy`: numpy arrays); imports neither
torch nor onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class Detections:
    """Detections of one image: xyxy pixel boxes, scores, vocabulary positions and their class names (tensors
    from `ovd.Detector`, numpy arrays from `ovclip.deploy.OnnxDetector`)."""

    boxes: Any
    scores: Any
    labels: Any
    names: list[str]
    masks: Optional[Any] = None  # (N, H, W) probabilities, with a mask head

    def __len__(self) -> int:
        return len(self.scores)

    def to_list(self) -> list[dict]:
        """JSON-ready entries: {'box': [x0, y0, x1, y1], 'score', 'label', 'name'}."""
        return [{"box": [round(v, 2) for v in b], "score": round(s, 4), "label": lab, "name": n}
                for b, s, lab, n in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist(), self.names)]


@dataclass
class Segmentation:
    """A per-pixel labelling of one image: vocabulary positions, their confidence, and the class names (tensors
    from `ovseg.Segmenter`, numpy arrays from `ovclip.deploy.OnnxSegmenter`)."""

    labels: Any  # (H, W) int64
    scores: Any  # (H, W) probability of the chosen class
    names: list[str]

    def areas(self) -> dict[str, float]:
        """Share of the image (0..1) covered by each class that appears, largest first."""
        labels = np.asarray(self.labels).reshape(-1)
        counts = np.bincount(labels, minlength=len(self.names)).tolist()
        total = max(1, labels.size)
        found = {self.names[i]: c / total for i, c in enumerate(counts) if c}
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))
