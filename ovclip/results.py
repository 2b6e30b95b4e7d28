"""The result of detecting in one image, shared by the torch API (`ovd.Detector`, torch tensors) and the
onnxruntime one (`ovclip.deploy.OnnxDetector`, numpy arrays); imports neither torch nor onnxruntime."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


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
