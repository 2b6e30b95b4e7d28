"""Per-image inference latency of the detection heads: ViLD vs torchvision's closed-vocabulary Faster R-CNN,
timed apart from the backbone they share, at equal candidate counts.

Both detectors are built with random weights (nothing to download) on the same ResNet-50 FPN, and ViLD
is given Faster R-CNN's backbone and RPN weights, so that one backbone + RPN pass per image gives both
heads the same features and the same proposals. The score threshold is 0, so that every (proposal,
class) pair is a candidate for both heads whatever their random scores, and both keep the same number of
detections per image; the table prints the candidates that reach NMS. The heads differ only in their box
predictor (ViLD: text-embedding cosine classifier, class-agnostic regression, and in ensemble mode a
second box head and softmax; Faster R-CNN: a (C+1)-way linear classifier with class-specific regression)
and in ViLD's NMS on the best `box_pre_nms_top_n` candidates first (the same detections;
`nms_top_detections`), shown with and without it.

    python benchmarks/inference.py [--runs 7] [--height 480 --width 640] [--classes 80 1203] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.ops.boxes as box_ops
from torchvision.models.detection import fasterrcnn_resnet50_fpn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovd.models.vild import build_vild  # noqa: E402

EMBED_DIM = 512  # ViT-B/32's joint embedding size


def build_models(classes: int, detections: int) -> dict[str, torch.nn.Module]:
    """Faster R-CNN and ViLD (ensemble) for one vocabulary size: the same detection settings, and ViLD with
    Faster R-CNN's backbone and RPN weights."""
    common = dict(box_score_thresh=0.0, box_detections_per_img=detections, min_size=800, max_size=1333)
    torch.manual_seed(0)
    frcnn = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=classes + 1, **common)
    vild = build_vild(F.normalize(torch.randn(classes, EMBED_DIM), dim=-1), backbone="resnet50", **common)
    vild.backbone.load_state_dict(frcnn.backbone.state_dict())
    vild.rpn.load_state_dict(frcnn.rpn.state_dict())
    return {"Faster R-CNN": frcnn.eval(), "ViLD": vild.eval()}


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings are wall-clock complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class NmsSizes:
    """Counts the candidates each batched NMS call gets while active (RoI heads only, see `heads`)."""

    def __init__(self):
        self.sizes: list[int] = []
        self._real = box_ops.batched_nms

    def __enter__(self):
        def counting(boxes, scores, idxs, iou_threshold):
            self.sizes.append(len(scores))
            return self._real(boxes, scores, idxs, iou_threshold)
        box_ops.batched_nms = counting
        return self

    def __exit__(self, *exc):
        box_ops.batched_nms = self._real


@torch.inference_mode()
def measure(models: dict[str, torch.nn.Module], image: torch.Tensor, runs: int, device: str) -> tuple[list[float], dict]:
    """(backbone + RPN seconds per run, {head: (seconds per run, candidates into NMS, detections)}); head runs
    are interleaved so that drift hits all alike."""
    frcnn, vild = models["Faster R-CNN"].to(device), models["ViLD"].to(device)
    images, _ = frcnn.transform([image])
    shared: list[float] = []
    for _ in range(runs + 1):  # the first run warms up
        sync(device)
        start = time.perf_counter()
        features = frcnn.backbone(images.tensors)
        proposals, _ = frcnn.rpn(images, features)
        sync(device)
        shared.append(time.perf_counter() - start)
    heads = {
        "Faster R-CNN head": (frcnn.roi_heads, None),
        "ViLD head (ensemble), NMS over every candidate": (vild.roi_heads, None),
        "ViLD head (ensemble), NMS on the best 1000 first": (vild.roi_heads, 1000),
        "ViLD head (text branch only), NMS on the best 1000 first": (vild.roi_heads, 1000),
    }
    times: dict[str, list[float]] = {name: [] for name in heads}
    counts: dict[str, tuple[int, int]] = {}
    for r in range(runs + 1):
        for name, (head, top_n) in heads.items():
            if head is vild.roi_heads:
                head.pre_nms_top_n = top_n
                head.inference_mode = "text" if "text branch" in name else "ensemble"
            with NmsSizes() as nms:
                sync(device)
                start = time.perf_counter()
                detections, _ = head(features, proposals, images.image_sizes)
                sync(device)
                elapsed = time.perf_counter() - start
            if r:  # not the warm-up
                times[name].append(elapsed)
            counts[name] = (max(nms.sizes, default=0), len(detections[0]["boxes"]))
    return shared[1:], {name: (times[name], *counts[name]) for name in heads}


def main(argv=None) -> int:
    """Print the latency table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--classes", type=int, nargs="+", default=[80, 1203])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    image = torch.rand(3, args.height, args.width, device=args.device)
    print(f"device {args.device}, {torch.get_num_threads()} threads, image {args.width}x{args.height} "
          f"(resized to min side 800), score threshold 0, median [min - max] of {args.runs} runs\n")
    print("| classes | part | ms / image | ratio to Faster R-CNN's head | candidates into NMS | detections |")
    print("|---|---|---|---|---|---|")
    for classes in args.classes:
        detections = 300 if classes > 100 else 100
        shared, heads = measure(build_models(classes, detections), image, args.runs, args.device)
        print(f"| {classes} | backbone + RPN (shared) | {statistics.median(shared) * 1000:.0f} "
              f"[{min(shared) * 1000:.0f} - {max(shared) * 1000:.0f}] | | | |")
        base = statistics.median(heads["Faster R-CNN head"][0])
        for name, (t, candidates, kept) in heads.items():
            print(f"| {classes} | {name} | {statistics.median(t) * 1000:.1f} [{min(t) * 1000:.1f} - "
                  f"{max(t) * 1000:.1f}] | {statistics.median(t) / base:.2f} | {candidates} | {kept} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
