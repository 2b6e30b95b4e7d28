"""What the CPU benchmark's detection and segmentation rows share: the table row and the training run."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.runner import Runner

from ..engine.runner import drop_training, load_config

log = logging.getLogger(__name__)


@dataclass
class BenchRow:
    """One line of the benchmark table."""

    task: str
    name: str
    novel: float
    base: float
    seconds: float
    note: str = ""


def train_and_test(config: "str | Path", options: dict[str, Any], work_dir: Path, iters: int,
                   seed: int) -> tuple[Runner, dict]:
    """Train a config's model for `iters` iterations (warm-up, then cosine) and evaluate it on its test set."""
    warmup = max(1, iters // 10)
    cfg = load_config(config, {**options, "train_cfg.max_iters": iters, "randomness.seed": seed,
                               "log_level": "WARNING", "experiment_name": f"{work_dir.name}-{seed}"},
                      work_dir=str(work_dir))
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup),
                           dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, T_max=iters - warmup,
                                eta_min=cfg.optim_wrapper.optimizer.lr * 0.01)]
    cfg.default_hooks.checkpoint.interval = iters
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    log.info("%s: %s", work_dir, metrics)
    return runner, metrics


def evaluate_config(config: "str | Path", options: dict[str, Any], work_dir: Path) -> dict:
    """Evaluate a config's model as built (a zero-shot model) on its test set."""
    cfg = load_config(config, {**options, "log_level": "WARNING"}, work_dir=str(work_dir))
    drop_training(cfg)
    return Runner.from_cfg(cfg).test()
