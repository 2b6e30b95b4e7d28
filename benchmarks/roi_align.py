"""ViLD's RoIAlign (ovd.models.roi_align: its backward over all channels at once, its forward split across
threads by channel) against torchvision's kernels.

    python benchmarks/roi_align.py [--runs 9] [--batch 4] [--threads N]

On the shipped synthetic ViLD config (model_zoo/synthetic, adaptive sampling as the config sets it), with
random weights of its student and the demo image repeated: (1) the box RoIAlign alone, forward + backward,
on the FPN features and 512 boxes per image; (2) a whole training step (forward, losses, backward) of the
detector, ViLD-text's losses. Each pair runs interleaved after a warm-up; medians with [min - max]; the
outputs and every gradient are compared bit for bit.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torchvision.ops import MultiScaleRoIAlign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import interleaved_times, spread  # noqa: E402

from ovclip.engine.runner import build_model  # noqa: E402
from ovclip.io import read_image  # noqa: E402
from ovd.models.roi_align import FastMultiScaleRoIAlign  # noqa: E402

CONFIG = ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py"


def stock_twin(pool: FastMultiScaleRoIAlign) -> MultiScaleRoIAlign:
    """torchvision's pooler with the same arguments."""
    return MultiScaleRoIAlign(pool.featmap_names, pool.output_size, pool.sampling_ratio,
                              canonical_scale=pool.canonical_scale, canonical_level=pool.canonical_level)


def main(argv=None) -> int:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--batch", type=int, default=4, help="images per step")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.chdir(ROOT)  # the config names the teacher under model_zoo/ by a relative path
    model = build_model(str(CONFIG), None, {"model.distill.source": "none", "model.inference_mode": "text"})
    detector = model.detector.train()
    heads = detector.roi_heads
    fast = heads.box_roi_pool
    assert isinstance(fast, FastMultiScaleRoIAlign)
    stock = stock_twin(fast)
    image = read_image(ROOT / "model_zoo/synthetic/demo.png").float() / 255
    images = [image.clone() for _ in range(args.batch)]
    g = torch.Generator().manual_seed(0)
    base = detector.roi_heads.box_predictor.base_mask.nonzero().flatten()
    targets = []
    for _ in range(args.batch):
        xy = torch.rand(3, 2, generator=g) * 150
        targets.append({"boxes": torch.cat([xy, xy + 30 + torch.rand(3, 2, generator=g) * 70], 1),
                        "labels": base[torch.randint(0, len(base), (3,), generator=g)]})

    # (1) the pooler alone on the FPN features
    with torch.no_grad():
        image_list, _ = detector.transform(images)
        features = detector.backbone(image_list.tensors)
    boxes = []
    for _ in range(args.batch):
        xy = torch.rand(512, 2, generator=g) * 200
        boxes.append(torch.cat([xy, (xy + 4 + torch.rand(512, 2, generator=g) * 120).clamp(max=255)], 1))
    weight = torch.randn(len(boxes) * 512, heads.box_head.fc6.in_features, generator=g)

    def pooled(pool):
        x = {k: v.clone().requires_grad_() for k, v in features.items()}
        out = pool(x, boxes, image_list.image_sizes)
        (out.flatten(1) * weight).sum().backward()
        return out.detach(), [v.grad for v in x.values()]

    # (2) a training step
    def step(pool):
        heads.box_roi_pool = pool
        detector.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same RPN and RoI samples every time
        losses = detector(images, targets)
        sum(losses.values()).backward()
        return [float(v.detach()) for v in losses.values()], [q.grad.clone() for q in detector.parameters()
                                                     if q.grad is not None]

    print(f"{torch.get_num_threads()} threads, {args.batch} images per step, median [min - max] of {args.runs}\n")
    print("| what | torchvision ms | ovd ms | speed-up | same outputs and gradients |")
    print("|---|---|---|---|---|")
    for name, fn in (("box RoIAlign, forward + backward", pooled), ("training step", step)):
        a, b = fn(stock), fn(fast)
        same = all(x is y is None or torch.equal(x, y) for x, y in zip(a[1], b[1])) and len(a[1]) == len(b[1]) and \
            (a[0] == b[0] if isinstance(a[0], list) else torch.equal(a[0], b[0]))
        times = interleaved_times({"stock": lambda: fn(stock), "fast": lambda: fn(fast)}, args.runs)
        ms = {k: [t * 1000 for t in v] for k, v in times.items()}
        ratio = sorted(s / p for s, p in zip(ms["stock"], ms["fast"]))[len(ms["stock"]) // 2]
        print(f"| {name} | {spread(ms['stock'])} | {spread(ms['fast'])} | {ratio:.2f}x | "
              f"{'yes' if same else 'NO'} |")
    heads.box_roi_pool = fast
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
