"""The CPU kernels a benchmark's numbers depend on, pinned, so that another machine computes the same numbers.

A training run's float sums depend on more than its seed: on the intra-op thread count (OpenMP splits each
reduction by thread; the synthetic ViLD-text trained 20 iterations ends with other weights at 1, 2 and 4
threads) and on the vector instructions each library picks for the CPU it finds (ATen's kernels, oneDNN's
convolutions and MKL's BLAS each have AVX2 and AVX-512 versions; forcing ATen's generic kernels or MKL's
compatible path changes the same run's weights too). The bench's reported numbers were computed on an
AVX2 CPU (with 2 threads, or 1 where the README says); `pin_cpu_kernels` asks the three libraries for their
AVX2 versions and `torch.set_num_threads` does the rest. It must run before torch is imported: the libraries read these
variables when they first start. A variable already set is left as set.

Not pinned: oneDNN sizes its blocks by the CPU's caches, so a CPU with other cache sizes may still sum in
another order; on a CPU without AVX2 (or not x86) nothing is pinned.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
BENCH_THREADS = 2  # the intra-op threads of the bench's reported numbers


def has_avx2(cpuinfo: "str | Path" = "/proc/cpuinfo") -> bool:
    """Whether this is an x86-64 CPU with AVX2 (read from Linux's cpuinfo; False where it cannot tell)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = next((line for line in Path(cpuinfo).read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return "avx2" in flags.split()


def pin_cpu_kernels(avx2: "bool | None" = None) -> dict[str, str]:
    """Ask ATen, oneDNN and MKL for their AVX2 kernels (`AVX2_KERNELS`) where the CPU has AVX2 and the
    variable is not already set. Returns the variables it set. Raises if there is something to pin and torch
    is already imported: the libraries have read their settings by then and the pin would do nothing."""
    if not (has_avx2() if avx2 is None else avx2):
        return {}
    if "torch" in sys.modules:
        raise RuntimeError("pin_cpu_kernels() must run before torch is imported (the kernels are chosen at "
                           "import); call it first thing in the script")
    pinned = {k: v for k, v in AVX2_KERNELS.items() if k not in os.environ}
    os.environ.update(pinned)
    return pinned


def numerics_record() -> dict[str, object]:
    """What this process computes with, for a results file: threads, ATen's kernels, the pinning variables
    as set, library versions."""
    import torch

    return {"threads": torch.get_num_threads(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in AVX2_KERNELS}, "torch": torch.__version__,
            "torchvision": metadata.version("torchvision"), "machine": platform.machine()}
