"""Teacher throughput benchmark: prints one table (medians of several runs, ratios within the run).

    python benchmarks/teacher.py [--arch ViT-B-32] [--crops 64] [--repeats 3]

Rows: region embedding through the batched path vs a one-crop-at-a-time loop (PIL crop + open_clip
preprocess + encode one image, as naive ViLD code does) vs the matmul-bound limit (fp32 matmul FLOP/s
measured here divided by the encoder's FLOPs per crop); text embedding cache miss vs hit; feature-store
bytes per region. The architecture is built with random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovclip.regions import region_embeddings  # noqa: E402
from ovclip.store import FeatureStore, StoreWriter  # noqa: E402
from ovclip.teacher import load_teacher  # noqa: E402
from ovclip.text import text_embeddings  # noqa: E402


def median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def encoder_flops(teacher) -> int:
    """FLOPs of encoding one crop (multiply-add = 2 FLOPs), counted by torch's FLOP counter."""
    x = torch.zeros(1, 3, teacher.image_size, teacher.image_size)
    # The fused inference kernel of nn.MultiheadAttention is invisible to the counter: count the
    # same computation through the unfused path.
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            teacher.encode_images(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(was)
    return int(counter.get_total_flops())


def matmul_flops_per_second(teacher, batch: int, repeats: int) -> float:
    """fp32 matmul throughput at the encoder's own MLP shape (tokens x width @ width x 4 width)."""
    visual = teacher.visual
    if not hasattr(visual, "patch_size"):
        raise SystemExit("the matmul-bound limit is defined for ViT teachers (their FLOPs are matmuls); "
                         f"{type(visual).__name__} spends its FLOPs in convolutions")
    width = visual.conv1.weight.shape[0]
    grid = teacher.image_size // visual.patch_size[0]
    m, k, n = batch * (grid * grid + 1), width, 4 * width
    a, b = torch.randn(m, k), torch.randn(k, n)
    return 2 * m * k * n / median_time(lambda: a @ b, repeats)


def main() -> None:
    """Run every measurement and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--crops", type=int, default=64, help="crops per batched run (boxes x 2 scales)")
    p.add_argument("--loop-crops", type=int, default=8, help="crops per one-at-a-time run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    teacher = load_teacher(args.arch)
    image = torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(args.crops // 2, 2, generator=g) * torch.tensor([500.0, 350.0])
    wh = 20 + torch.rand(args.crops // 2, 2, generator=g) * 120
    boxes = torch.cat([xy, xy + wh], dim=1)

    batched_s = median_time(lambda: region_embeddings(teacher, image, boxes, (1.0, 1.5), args.batch_size), args.repeats)
    batched = args.crops / batched_s

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())

    def loop() -> None:
        for b in boxes[: args.loop_crops].tolist():
            crop = teacher.preprocess(pil.crop(tuple(int(v) for v in b))).unsqueeze(0)
            teacher.encode_images(crop)
    loop_rate = args.loop_crops / median_time(loop, args.repeats)

    flops = encoder_flops(teacher)
    mm = matmul_flops_per_second(teacher, args.batch_size, args.repeats)
    bound = mm / flops

    with tempfile.TemporaryDirectory() as cache:
        vocab = "coco"
        miss = median_time(lambda: text_embeddings(teacher, vocab, "single", cache_dir=False), 1)
        text_embeddings(teacher, vocab, "single", cache_dir=cache)
        hit = median_time(lambda: text_embeddings(teacher, vocab, "single", cache_dir=cache), args.repeats)

    with tempfile.TemporaryDirectory() as folder:
        n_images, per_image = 32, 300
        with StoreWriter(folder, {"embed_dim": teacher.embed_dim}, shard_size=n_images) as w:
            for i in range(n_images):
                w.add(i, torch.rand(per_image, 4), torch.randn(per_image, teacher.embed_dim))
        size = sum(f.stat().st_size for f in FeatureStore.shard_files(folder))
    per_region = size / (n_images * per_image)

    print(f"\nteacher benchmark: {args.arch} (random weights), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.crops} crops/batched run, median of {args.repeats}\n")
    print("| measurement | value | ratio |")
    print("|---|---|---|")
    print(f"| encoder FLOPs per crop | {flops / 1e9:.2f} GFLOP | |")
    print(f"| fp32 matmul throughput | {mm / 1e9:.1f} GFLOP/s | |")
    print(f"| matmul-bound limit | {bound:.2f} crops/s | 1.00 |")
    print(f"| batched region embedding | {batched:.2f} crops/s | {batched / bound:.2f} of limit |")
    print(f"| one-crop-at-a-time loop | {loop_rate:.2f} crops/s | batched = {batched / loop_rate:.2f}x loop "
          f"(limit / loop = {bound / loop_rate:.2f}x) |")
    print(f"| text embeddings, cache miss (80 classes) | {miss * 1e3:.1f} ms | |")
    print(f"| text embeddings, cache hit | {hit * 1e3:.2f} ms | miss = {miss / hit:.0f}x hit |")
    print(f"| store bytes per region ({teacher.embed_dim}-d) | {per_region:.0f} B | "
          f"{per_region / (2 * teacher.embed_dim):.3f} of fp16 payload |")


if __name__ == "__main__":
    main()
