"""LVIS v1 / OV-LVIS evaluation (AP, APr, APc, APf; box or mask) with faster-coco-eval's LVIS mode, or the
reference `lvis` package (backend='reference'): the same numbers."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovclip.io import atomic_json_dump
from ovclip.vocabulary import Vocabulary, load_vocabulary, match_categories

from .backends import check_backend, coco_api, quiet
from .coco import format_table, to_coco_results

KEYS = ("AP", "AP50", "AP75", "APr", "APc", "APf")
FASTER_KEYS = {"AP": "AP_all", "AP50": "AP_50", "AP75": "AP_75", "APr": "APr", "APc": "APc", "APf": "APf"}


def _numpy2_compat() -> None:
    # lvis 0.5.3 calls np.float, which numpy 2 removed; it meant the builtin float.
    if "float" not in np.__dict__:
        np.float = float  # type: ignore[attr-defined]


class LvisEvaluator:
    """reset / process / evaluate for LVIS v1 box (or mask) AP with APr / APc / APf. `backend`: 'faster'
    (faster-coco-eval, `lvis_style`) or 'reference' (lvis-api)."""

    def __init__(self, ann_file: "str | Path", vocabulary: "Vocabulary | str" = "lvis-v1",
                 out_dir: "str | Path | None" = None, iou_type: str = "bbox", max_dets: int = 300,
                 backend: str = "faster"):
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', not '{iou_type}'")
        self.ann_file, self.iou_type, self.max_dets = str(ann_file), iou_type, max_dets
        self.backend = check_backend(backend)
        if backend == "faster":
            self.gt = coco_api(backend)[0](self.ann_file)
        else:
            _numpy2_compat()
            from lvis import LVIS
            with contextlib.redirect_stdout(io.StringIO()):
                self.gt = LVIS(self.ann_file)
        self.vocabulary = load_vocabulary(vocabulary)
        self.category_ids = match_categories(self.vocabulary, list(self.gt.cats.values()), self.ann_file)
        self.out_dir = Path(out_dir) if out_dir else None
        self.reset()

    def reset(self) -> None:
        """Forget all processed detections."""
        self.results: list[dict] = []

    def process(self, image_id: Any, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                masks: "list[dict] | None" = None) -> None:
        """Add one image's detections: top `max_dets` by score; `masks` are COCO RLEs for iou_type='segm'."""
        order = torch.as_tensor(scores).argsort(descending=True)[: self.max_dets]
        entries = to_coco_results(image_id, torch.as_tensor(boxes)[order], torch.as_tensor(scores)[order],
                                  torch.as_tensor(labels)[order], self.category_ids)
        if self.iou_type == "segm":
            if masks is None:
                raise ValueError("iou_type='segm' needs masks (COCO RLE dicts) for every detection")
            for entry, i in zip(entries, order.tolist()):
                entry["segmentation"] = masks[i]
        self.results.extend(entries)

    def _reference(self) -> dict[str, float]:
        from lvis import LVISEval, LVISResults
        with contextlib.redirect_stdout(io.StringIO()):
            dt = LVISResults(self.gt, [dict(r) for r in self.results], max_dets=self.max_dets)
            e = LVISEval(self.gt, dt, self.iou_type)
            e.run()
        return {k: e.results[k] for k in KEYS}

    def _faster(self) -> dict[str, float]:
        cocoeval = coco_api("faster")[1]
        dt = self.gt.loadRes([dict(r) for r in self.results])
        e = quiet(cocoeval(self.gt, dt, self.iou_type, lvis_style=True))
        e.params.maxDets = [self.max_dets]
        e.evaluate()
        e.accumulate()
        e.summarize()
        return {k: e.stats_as_dict[FASTER_KEYS[k]] for k in KEYS}

    def evaluate(self) -> dict[str, float]:
        """Run LVISEval, write results / metrics json to out_dir, print a table. A frequency group with no
        category in the ground truth has no AP: NaN here, null in the json (lvis-api says -1)."""
        if not self.results:
            present = {c.get("frequency") for c in self.gt.cats.values() if self.gt.cat_img_map.get(c["id"])}
            groups = {"APr": "r", "APc": "c", "APf": "f"}
            metrics = {k: float("nan") if k in groups and groups[k] not in present else 0.0 for k in KEYS}
        else:
            results = self._faster() if self.backend == "faster" else self._reference()
            metrics = {k: float(v) * 100 if float(v) >= 0 else float("nan") for k, v in results.items()}
        if self.out_dir is not None:
            atomic_json_dump(self.results, self.out_dir / f"lvis_{self.iou_type}_results.json")
            atomic_json_dump({"metrics": metrics}, self.out_dir / f"lvis_{self.iou_type}_metrics.json", indent=1)
        print(format_table(metrics, f"LVIS {self.iou_type} ({self.vocabulary.name})"))
        return metrics
