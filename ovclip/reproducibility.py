"""What a benchmark's numbers depend on besides the seed, fixed where it can be and recorded.

A training run's float sums depend on the intra-op thread count (OpenMP splits each reduction by thread: the
synthetic ViLD-text trained 20 iterations ends with other weights at 1, 2 and 4 threads), so the bench trains
on a fixed count (`BENCH_THREADS` unless asked otherwise), whatever the machine has. They also depend on the
kernels each library picks for the CPU it finds (ATen's, oneDNN's and MKL's AVX2 or AVX-512 code). Those are
not forced: on the AVX2 CPU the reported numbers come from, asking the three libraries for their AVX2 kernels
(ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_CBWR=AVX2) left ViLD-text's weights unchanged but
moved the synthetic DETR-text from 12.6 / 48.1 to 13.4 / 49.0 novel / base AP50 (seed 0, one thread): the
libraries' own choice is part of the reported arithmetic. `numerics_record` writes down what a run used,
these variables included when the user set them.
"""
from __future__ import annotations

import os
import platform
from importlib import metadata

BENCH_THREADS = 2  # the intra-op threads of the bench's reported numbers (the README names the rows run on 1)
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")  # recorded, not set


def numerics_record() -> dict[str, object]:
    """What this process computes with, for a results file: threads, ATen's kernels, the kernel-choosing
    variables as set (None: the library's own choice), library versions, the CPU's architecture."""
    import torch

    return {"threads": torch.get_num_threads(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in KERNEL_VARIABLES}, "torch": torch.__version__,
            "torchvision": metadata.version("torchvision"), "machine": platform.machine()}
