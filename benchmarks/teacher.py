"""Teacher throughput benchmark: prints one table (medians of several runs with their spread, ratios within
the run).

    python benchmarks/teacher.py [--arch ViT-B-32] [--crops 64] [--repeats 9]

Every timed call is warmed up once first. The batched region embedding and the matmul measurement that
gives its limit run interleaved (one of each in turn), so that a machine's drift or load hits both alike;
their ratio is the median of the per-pair ratios, with its range.

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
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovclip.regions import region_embeddings  # noqa: E402
from ovclip.store import FeatureStore, StoreWriter  # noqa: E402
from ovclip.teacher import load_teacher  # noqa: E402
from ovclip.text import text_embeddings  # noqa: E402
from timing import interleaved_times, median_time, spread  # noqa: E402  (benchmarks/timing.py)


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


def matmul_benchmark(teacher, batch: int) -> tuple[Callable[[], object], float]:
    """A call doing fp32 matmuls at the encoder's own MLP shape (tokens x width @ width x 4 width), and its FLOPs
    (ten matmuls a call: one alone is too short to time steadily)."""
    visual = teacher.visual
    if not hasattr(visual, "patch_size"):
        raise SystemExit("the matmul-bound limit is defined for ViT teachers (their FLOPs are matmuls); "
                         f"{type(visual).__name__} spends its FLOPs in convolutions")
    width = visual.conv1.weight.shape[0]
    grid = teacher.image_size // visual.patch_size[0]
    m, k, n = batch * (grid * grid + 1), width, 4 * width
    a, b = torch.randn(m, k), torch.randn(k, n)

    def run() -> None:
        for _ in range(10):
            a @ b
    return run, 10 * 2 * m * k * n


def main() -> None:
    """Run every measurement and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--crops", type=int, default=64, help="crops per batched run (boxes x 2 scales)")
    p.add_argument("--loop-crops", type=int, default=8, help="crops per one-at-a-time run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    torch.manual_seed(0)
    teacher = load_teacher(f"{args.arch}/random")  # speed does not depend on the values
    image = torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(args.crops // 2, 2, generator=g) * torch.tensor([500.0, 350.0])
    wh = 20 + torch.rand(args.crops // 2, 2, generator=g) * 120
    boxes = torch.cat([xy, xy + wh], dim=1)

    flops = encoder_flops(teacher)
    matmul, matmul_flops = matmul_benchmark(teacher, args.batch_size)
    times = interleaved_times({"batched": lambda: region_embeddings(teacher, image, boxes, (1.0, 1.5), args.batch_size),
                               "matmul": matmul}, args.repeats)
    batched_rates = [args.crops / t for t in times["batched"]]
    bound_rates = [matmul_flops / t / flops for t in times["matmul"]]
    of_limit = [b / lim for b, lim in zip(batched_rates, bound_rates)]
    batched, bound = statistics.median(batched_rates), statistics.median(bound_rates)
    mm = statistics.median(matmul_flops / t for t in times["matmul"])

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())

    def loop() -> None:
        for b in boxes[: args.loop_crops].tolist():
            crop = teacher.preprocess(pil.crop(tuple(int(v) for v in b))).unsqueeze(0)
            teacher.encode_images(crop)
    loop_rates = [args.loop_crops / t for t in interleaved_times({"loop": loop}, args.repeats)["loop"]]
    loop_rate = statistics.median(loop_rates)

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
          f"{torch.get_num_threads()} threads, {args.crops} crops/batched run, median [min - max] of {args.repeats}\n")
    print("| measurement | value | ratio |")
    print("|---|---|---|")
    print(f"| encoder FLOPs per crop | {flops / 1e9:.2f} GFLOP | |")
    print(f"| fp32 matmul throughput | {mm / 1e9:.1f} GFLOP/s | |")
    print(f"| matmul-bound limit | {spread(bound_rates)} crops/s | 1.00 |")
    print(f"| batched region embedding | {spread(batched_rates)} crops/s | {spread(of_limit)} of limit |")
    print(f"| one-crop-at-a-time loop | {spread(loop_rates)} crops/s | batched = {batched / loop_rate:.2f}x loop "
          f"(limit / loop = {bound / loop_rate:.2f}x) |")
    print(f"| text embeddings, cache miss (80 classes) | {miss * 1e3:.1f} ms | |")
    print(f"| text embeddings, cache hit | {hit * 1e3:.2f} ms | miss = {miss / hit:.0f}x hit |")
    print(f"| store bytes per region ({teacher.embed_dim}-d) | {per_region:.0f} B | "
          f"{per_region / (2 * teacher.embed_dim):.3f} of fp16 payload |")


if __name__ == "__main__":
    main()
