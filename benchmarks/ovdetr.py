"""OV-DETR's inference latency against the vocabulary size: its queries are conditioned on every class, so
each batch of `eval_batch_classes` classes costs one more decoder pass over one shared encoder pass;
DETR-text (the same detector classifying its queries against the text embeddings) is the baseline.

    python benchmarks/ovdetr.py [--config configs/ovdetr/ovdetr_teacher-rn_synthetic-cpu.py] [--classes 17 65 1203]
                                [--runs 5]

Random weights (speed does not depend on them) and random unit text embeddings of the teacher's size;
one image of the config's input size; per-image predict time, median [min - max] of `runs` interleaved
runs after a warm-up, and the ratio to DETR-text at the same vocabulary size.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ovclip.engine import build_model  # noqa: E402
from timing import interleaved_times, spread  # noqa: E402  (benchmarks/timing.py)


def main(argv=None) -> int:
    """Print the latency table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/ovdetr/ovdetr_teacher-rn_synthetic-cpu.py"))
    p.add_argument("--classes", type=int, nargs="+", default=[17, 65, 1203])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    import ovd.models  # noqa: F401 - registers the detectors
    torch.manual_seed(0)
    models = {name: build_model(args.config, None, {"model.conditional": cond}).eval()
              for name, cond in (("OV-DETR", True), ("DETR-text", False))}
    size = models["OV-DETR"].transform.min_size[-1]  # the evaluation size
    image = torch.rand(3, size, size)
    batch = models["OV-DETR"].eval_batch_classes
    print(f"{args.config}: image {size}x{size}, {torch.get_num_threads()} threads, {batch} classes per decoder pass; "
          f"ms per image, median [min - max] of {args.runs} runs\n")
    print("| classes | decoder passes | OV-DETR ms | DETR-text ms | OV-DETR / DETR-text |")
    print("|---|---|---|---|---|")
    for classes in args.classes:
        with ExitStack() as stack, torch.inference_mode():
            for m in models.values():  # this vocabulary size's embeddings, the models' own restored afterwards
                stack.enter_context(m.classifier.text_inputs())
                m.classifier.set_text_embeddings(F.normalize(torch.randn(classes, m.classifier.embed_dim), dim=-1))
            times = interleaved_times({name: (lambda m=m: m([image], mode="predict")) for name, m in models.items()},
                                      args.runs)
        ov, text = (statistics.median(times[n]) for n in ("OV-DETR", "DETR-text"))
        print(f"| {classes} | {-(-classes // batch)} | {spread([t * 1000 for t in times['OV-DETR']])} | "
              f"{spread([t * 1000 for t in times['DETR-text']])} | {ov / text:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
