"""What the CPU benchmark's detection and segmentation rows share: the table row, the training run and the
record of the numerics it ran with."""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..engine.runner import ProjectRunner, drop_training, load_config

log = logging.getLogger(__name__)

# A training run's float sums depend on the intra-op thread count (OpenMP splits each reduction by thread: the
# synthetic ViLD-text trained 20 iterations ends with other weights at 1, 2 and 4 threads), so the bench trains
# on a fixed count, whatever the machine has. They also depend on the kernels each library picks for the CPU
# (ATen's, oneDNN's, MKL's AVX2 or AVX-512 code). Those are not forced: on the AVX2 CPU the reported numbers
# come from, asking the three libraries for their AVX2 kernels (the variables below) left ViLD-text's weights
# unchanged but moved the synthetic DETR-text from 12.6 / 48.1 to 13.4 / 49.0 novel / base AP50 (seed 0, one
# thread): the libraries' own choice is part of the reported arithmetic.
BENCH_THREADS = 2  # the intra-op threads of the bench's reported numbers (the README names the rows run on 1)
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")  # recorded, not set


def numerics_record() -> dict[str, object]:
    """What this process computes with, for a results file: threads, ATen's kernels, the kernel-choosing
    variables as set (None: the library's own choice), library versions, the CPU's architecture."""
    import torch

    return {"threads": torch.get_num_threads(), "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in KERNEL_VARIABLES}, "torch": torch.__version__,
            "torchvision": metadata.version("torchvision"), "machine": platform.machine()}


@dataclass
class BenchRow:
    """One line of the benchmark table."""

    task: str
    name: str
    novel: float
    base: float
    seconds: float
    note: str = ""


@HOOKS.register_module(force=True)
class BenchProgressHook(Hook):
    """Prints a benchmark row's training progress (about ten lines per row) and when it starts testing:
    the bench runs its rows quietly (log level WARNING), and a row takes minutes."""

    priority = "LOW"

    def __init__(self, name: str, lines: int = 10):
        self.name, self.lines = name, lines
        self._start = 0.0

    def before_train(self, runner) -> None:  # noqa: D102 - mmengine hook
        self._start = time.perf_counter()
        print(f"    {self.name}: training {runner.max_iters} iterations", flush=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:  # noqa: D102
        done, total = runner.iter + 1, runner.max_iters
        if done % max(1, total // self.lines) == 0 or done == total:
            elapsed = time.perf_counter() - self._start
            print(f"    {self.name}: {done}/{total} iterations, {elapsed:.0f} s, about "
                  f"{elapsed / done * (total - done):.0f} s to go", flush=True)

    def before_test(self, runner) -> None:  # noqa: D102 - mmengine hook
        print(f"    {self.name}: testing", flush=True)


def train_and_test(config: "str | Path", options: dict[str, Any], work_dir: Path, iters: int,
                   seed: int) -> tuple[ProjectRunner, dict]:
    """Train a config's model for `iters` iterations (warm-up, then cosine) and evaluate it on its test set."""
    warmup = max(1, iters // 10)
    cfg = load_config(config, {**options, "train_cfg.max_iters": iters, "randomness.seed": seed,
                               "log_level": "WARNING", "experiment_name": f"{work_dir.name}-{seed}"},
                      work_dir=str(work_dir))
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup),
                           dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, T_max=iters - warmup,
                                eta_min=cfg.optim_wrapper.optimizer.lr * 0.01)]
    cfg.default_hooks.checkpoint.interval = iters
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="BenchProgressHook", name=work_dir.name)]
    runner = ProjectRunner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    log.info("%s: %s", work_dir, metrics)
    return runner, metrics


def evaluate_config(config: "str | Path", options: dict[str, Any], work_dir: Path) -> dict:
    """Evaluate a config's model as built (a zero-shot model) on its test set."""
    cfg = load_config(config, {**options, "log_level": "WARNING"}, work_dir=str(work_dir))
    drop_training(cfg)
    return ProjectRunner.from_cfg(cfg).test()
