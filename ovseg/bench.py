"""The open-vocabulary transfer benchmark, segmentation rows: MaskCLIP (the teacher alone), MaskCLIP+
trained on the synthetic world's base labels and MaskCLIP's pseudo-labels, the mask-proposal segmenter,
and an oracle with every class's labels; novel and base mIoU on the world's val split."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from ovclip.synthetic.bench import BenchRow, evaluate_config, train_and_test

# configs under the folder the caller names (the library never looks for configs/ by its place)
MASKCLIP_CONFIG = "maskclip/maskclip_synthetic-cpu.py"
MASKCLIP_PLUS_CONFIG = "maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py"
MASKPROP_CONFIG = "maskprop/maskprop_mnv3_synthetic-cpu.py"
SELF_TRAIN_FROM = 0.75  # share of the iterations trained on MaskCLIP's pseudo-labels before self-training

# name, config, config options, training labels ("base" or "all").
STUDENTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("MaskCLIP+", MASKCLIP_PLUS_CONFIG, {}, "base"),
    ("mask proposals (student + teacher ensemble)", MASKPROP_CONFIG, {}, "base"),
    ("oracle (novel labels too)", MASKCLIP_PLUS_CONFIG, {"model.pseudo_label": None, "model.gt_classes": "all"},
     "all"),
]


def seg_world_options(world: dict[str, str], teacher_spec: dict, train_classes: str = "base") -> dict[str, Any]:
    """Config overrides pointing a synthetic segmentation config (its mmseg SyntheticShapesDataset) at one
    generated world and teacher."""
    return {
        "model.teacher": teacher_spec,
        "train_dataloader.dataset.dataset.data_root": str(Path(world["train_images"]).parent),
        "train_dataloader.dataset.train_classes": train_classes,
        "test_dataloader.dataset.dataset.data_root": str(Path(world["val_images"]).parent),
    }


def run_segmentation_rows(world: dict[str, str], teacher_spec: dict, work_dir: Path, iters: int, seed: int,
                          configs: Path, progress: Optional[Callable[[BenchRow], None]] = None) -> list[BenchRow]:
    """Evaluate MaskCLIP, then train and evaluate each student; `configs`: the folder of the project's
    configs (the repository's configs/)."""
    configs = Path(configs)
    rows = []

    def add(name: str, m: dict, t0: float, note: str = "") -> None:
        hiou = f"hIoU {m['seg/hIoU']:.1f}"
        rows.append(BenchRow("segmentation", name, m["seg/mIoU_novel"], m["seg/mIoU_base"],
                             time.perf_counter() - t0, f"{hiou}; {note}" if note else hiou))
        if progress:
            progress(rows[-1])
    t0 = time.perf_counter()
    opts = seg_world_options(world, teacher_spec)
    add("MaskCLIP (teacher zero-shot)", evaluate_config(configs / MASKCLIP_CONFIG, opts, work_dir / "MaskCLIP"), t0,
        "evaluation only")
    for name, config, options, train_classes in STUDENTS:
        t0 = time.perf_counter()
        opts = {**seg_world_options(world, teacher_spec, train_classes), **options}
        if config == MASKCLIP_PLUS_CONFIG and options.get("model.pseudo_label", {}) is not None:
            opts["model.pseudo_label.self_train_from"] = int(SELF_TRAIN_FROM * iters)
        _, m = train_and_test(configs / config, opts, work_dir / name.split()[0], iters, seed)
        add(name, m, t0)
    return rows
