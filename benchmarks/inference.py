"""Per-image inference latency: ViLD vs torchvision's closed-vocabulary Faster R-CNN.

Same ResNet-50 FPN backbone, RPN settings, image size, score threshold and detections per image; the
only difference is the box predictor (ViLD: two projections to the embedding space and cosine
similarity against C text embeddings + background; Faster R-CNN: a (C+1)-way linear classifier and
class-specific box regression). Both have random weights, so neither depends on a download.

    python benchmarks/inference.py [--runs 7] [--height 480 --width 640] [--classes 80 1203] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from ovd.models.vild import build_vild

EMBED_DIM = 512  # ViT-B/32's joint embedding size


def build_pair(classes: int, detections: int) -> dict[str, torch.nn.Module]:
    """The two detectors for one vocabulary size, with identical detection settings."""
    common = dict(box_score_thresh=0.05, box_detections_per_img=detections, min_size=800, max_size=1333)
    torch.manual_seed(0)
    frcnn = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=classes + 1, **common)
    vild = build_vild(F.normalize(torch.randn(classes, EMBED_DIM), dim=-1), backbone="resnet50", **common)
    return {"Faster R-CNN": frcnn.eval(), "ViLD (ensemble)": vild.eval()}


def sync(device: str) -> None:
    """Wait for queued GPU work so that timings are wall-clock complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_models(models: dict[str, torch.nn.Module], image: torch.Tensor, runs: int, device: str) -> dict[str, float]:
    """Median seconds per image of each model; runs are interleaved so drift hits all models alike."""
    for m in models.values():
        m.to(device)
        m([image])  # warm-up: allocator, kernels, caches
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(runs):
        for name, m in models.items():
            sync(device)
            t0 = time.perf_counter()
            m([image])
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


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
          f"(resized to min side 800), median of {args.runs} runs\n")
    print("| classes | model | ms / image | ratio to Faster R-CNN |")
    print("|---|---|---|---|")
    for classes in args.classes:
        detections = 300 if classes > 100 else 100
        med = time_models(build_pair(classes, detections), image, args.runs, args.device)
        base = med["Faster R-CNN"]
        for name, t in med.items():
            print(f"| {classes} | {name} | {t * 1000:.1f} | {t / base:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
