"""CPU benchmark of open-vocabulary transfer on the synthetic shapes world.

    python tools/bench_ov.py [--seed 0 1 2] [--quick] [--task detection segmentation] [--work-dir work_dirs/bench_ov]
                             [--cfg-options model.trainable_layers=0 ...]

Generates the world (seeded), loads the teacher from model_zoo/synthetic (or trains it when it is not
there, or with --train-teacher), trains the students on the base classes and prints one table:
novel and base AP50 (detection) or mIoU (segmentation) and wall time per row. --quick is a smoke run
(small world, few iterations). --cfg-options override keys of the detection students' config
(configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py) for every detection row, for ablations.

The numbers depend on the thread count and the CPU's kernels, not only on the seed: the bench trains on
--threads threads (2 by default, whatever the machine has; the README says which rows ran on 1) and records
the count and the kernels in each results file (ovclip/synthetic/bench.py).
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.synthetic import make_world
from ovclip.synthetic.tiny_clip import (
    load_synthetic_teacher, teacher_captions, teacher_spec, train_tiny_clip, zero_shot_accuracy)
from ovclip.synthetic.world import CAPTION_SETS
from ovclip.synthetic.bench import BENCH_THREADS, BenchRow, numerics_record
from ovd.bench import DETR_TEXT_ROW, OVDETR_ROW, PSEUDO_ROW, run_detection_rows
from ovseg.bench import run_segmentation_rows

SETTINGS = {
    "full": {"n_train": 400, "n_val": 100, "iters": 550, "detr_iters": 400, "seg_iters": 400,
             "teacher_steps": 1200},
    "quick": {"n_train": 8, "n_val": 4, "iters": 2, "detr_iters": 2, "seg_iters": 2, "teacher_steps": 60},
}
METRIC = {"detection": "AP50", "segmentation": "mIoU"}
# --rows choices: the first word of the detection rows' names
DETECTION_ROWS = {"ViLD": "ViLD and ViLD-ensemble (with its image head)", "oracle": "oracle",
                  "teacher": "teacher on ViLD-text's proposals", "DetPro": "DetPro's two rows",
                  "pseudo-labels": "VL-PLM's pseudo-labels", "DETR-text": "the DETR student, text classifier",
                  "OV-DETR": "OV-DETR on base + pseudo-boxes"}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED_TEACHER = "model_zoo/synthetic"


def print_table(rows: list[BenchRow], title: str, verdicts: bool = True) -> None:
    """The markdown table of one seed, with the targets of the benchmark (`verdicts=False`: a smoke run's
    numbers say nothing about them, and none is printed)."""
    print(f"\n{title}\n\n| task | row | novel | base | metric | wall s | note |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.task} | {r.name} | {r.novel:.1f} | {r.base:.1f} | {METRIC[r.task]} | {r.seconds:.0f} | {r.note} |")
    if not verdicts:
        print("\n(quick: a smoke run of the pipeline; its numbers are not the benchmark's, and no target is judged)")
        return
    by = {r.name: r for r in rows}
    if {"ViLD", "ViLD-text", "oracle (novel boxes too)"} <= set(by):
        vild, text, oracle = by["ViLD"].novel, by["ViLD-text"].novel, by["oracle (novel boxes too)"].novel
        print(f"\ntargets: ViLD novel >= 2x ViLD-text: {vild:.1f} vs {2 * text:.1f} "
              f"({'met' if vild >= 2 * text and vild > 0 else 'NOT met'}); "
              f"ViLD novel >= 50% of oracle: {vild:.1f} vs {oracle / 2:.1f} "
              f"({'met' if vild >= oracle / 2 and vild > 0 else 'NOT met'})")
    if {"ViLD", "DetPro (ViLD with learned prompts)"} <= set(by):
        detpro, vild = by["DetPro (ViLD with learned prompts)"].novel, by["ViLD"].novel
        print(f"target: DetPro novel >= ViLD's: {detpro:.1f} vs {vild:.1f} ({'met' if detpro >= vild else 'NOT met'})")
    if {"ViLD-text", PSEUDO_ROW} <= set(by):
        pseudo, text = by[PSEUDO_ROW].novel, by["ViLD-text"].novel
        vild = f"; ViLD's: {by['ViLD'].novel:.1f}" if "ViLD" in by else ""
        print(f"target: pseudo-labels novel > ViLD-text's: {pseudo:.1f} vs {text:.1f} "
              f"({'met' if pseudo > text else 'NOT met'}){vild}; {by[PSEUDO_ROW].note}")
    if {DETR_TEXT_ROW, OVDETR_ROW} <= set(by):
        ov, text = by[OVDETR_ROW].novel, by[DETR_TEXT_ROW].novel
        print(f"target: OV-DETR novel >= 1.5x DETR-text's: {ov:.1f} vs {1.5 * text:.1f} "
              f"({'met' if ov >= 1.5 * text and ov > 0 else 'NOT met'})")
    if {"MaskCLIP+", "MaskCLIP (teacher zero-shot)"} <= set(by):
        plus, zero = by["MaskCLIP+"].novel, by["MaskCLIP (teacher zero-shot)"].novel
        print(f"target: MaskCLIP+ novel mIoU > MaskCLIP's: {plus:.1f} vs {zero:.1f} "
              f"({'met' if plus > zero else 'NOT met'})")


def main(argv=None) -> int:
    """Run the benchmark for each seed and print its table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="world / training seeds, one table each")
    p.add_argument("--threads", type=int, default=BENCH_THREADS,
                   help=f"intra-op threads (default {BENCH_THREADS}): another count sums in another order and gives "
                        "other numbers; the README says which rows were run on which")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny world, a few iterations")
    p.add_argument("--task", nargs="+", choices=sorted(METRIC), default=sorted(METRIC), help="which rows to run")
    p.add_argument("--rows", nargs="+", choices=list(DETECTION_ROWS),
                   help="detection rows to run (ViLD-text always runs: the others use its proposals); all by default")
    p.add_argument("--work-dir", default="work_dirs/bench_ov")
    p.add_argument("--teacher-dir", default=SHIPPED_TEACHER, help="where the trained teacher is (or goes)")
    p.add_argument("--train-teacher", action="store_true", help="train the teacher even if one is there")
    p.add_argument("--teacher-captions", choices=list(CAPTION_SETS), default="default",
                   help="the caption set the teacher is (or gets) trained on; 'no-hand-prompt' leaves out the "
                        "captions in the phrasing of the prompt 'a photo of a {}.' (needs a --teacher-dir of its own)")
    p.add_argument("--configs", default=str(CONFIGS), help="the project's configs folder (default: the repository's)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override keys of the detection config for every detection row: key=value")
    add_debug_flag(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    s = SETTINGS["quick" if args.quick else "full"]
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    teacher_dir = Path(args.teacher_dir)
    if args.threads < 1:
        p.error(f"--threads must be at least 1, not {args.threads}")
    if args.teacher_captions != "default" and teacher_dir.resolve() == Path(SHIPPED_TEACHER).resolve():
        p.error(f"--teacher-captions {args.teacher_captions} needs a --teacher-dir of its own "
                f"({SHIPPED_TEACHER} is the shipped teacher, trained on the default captions)")
    t0 = time.perf_counter()
    teacher = None if args.train_teacher else load_synthetic_teacher(teacher_dir)
    if teacher is not None and teacher_captions(teacher_dir) != args.teacher_captions:
        p.error(f"the teacher in {teacher_dir} was trained on the caption set '{teacher_captions(teacher_dir)}', "
                f"not '{args.teacher_captions}': add --train-teacher, or name another --teacher-dir")
    torch.set_num_threads(args.threads)
    numerics = numerics_record()
    print(f"numerics: {numerics['threads']} threads; kernels: ATen {numerics['aten_cpu_capability']}, oneDNN "
          f"{numerics['ONEDNN_MAX_CPU_ISA'] or 'its own choice'}, MKL {numerics['MKL_CBWR'] or 'its own choice'}"
          + ("" if args.threads == BENCH_THREADS else
             f" (not the default {BENCH_THREADS}: the numbers differ from a {BENCH_THREADS}-thread run's)"), flush=True)
    if teacher is None:
        teacher_dir = teacher_dir if args.train_teacher or not args.quick else work / "teacher"
        print(f"training the teacher ({s['teacher_steps']} steps, captions '{args.teacher_captions}') into "
              f"{teacher_dir} ...", flush=True)
        logging.getLogger("ovclip.synthetic.tiny_clip").setLevel(logging.INFO)  # its progress, every 100 steps
        train_tiny_clip(teacher_dir, steps=s["teacher_steps"], captions=args.teacher_captions)
        teacher = load_synthetic_teacher(teacher_dir)
    teacher_seconds = time.perf_counter() - t0
    for seed in args.seed:
        t1 = time.perf_counter()
        world = make_world(work / f"world-s{seed}", seed=seed, n_train=s["n_train"], n_val=s["n_val"])
        zs = zero_shot_accuracy(teacher, seed=10_000 + seed, n_images=s["n_val"])
        print(f"\nseed {seed}: world {s['n_train']} train / {s['n_val']} val images "
              f"({time.perf_counter() - t1:.0f} s); teacher {teacher_dir} ({teacher_seconds:.0f} s to load or train), "
              f"zero-shot accuracy on held-out crops: {zs['accuracy']:.1f}% "
              f"(base {zs['base']:.1f}, novel {zs['novel']:.1f}, {zs['crops']} crops)", flush=True)
        def progress(r: BenchRow) -> None:
            print(f"  {r.name}: novel {r.novel:.1f} base {r.base:.1f} {METRIC[r.task]} ({r.seconds:.0f} s)", flush=True)
        rows = []
        if "detection" in args.task:
            rows += run_detection_rows(world, teacher, teacher_spec(teacher_dir), work / f"students-s{seed}",
                                       s["iters"], seed, Path(args.configs), progress=progress,
                                       cfg_options=args.cfg_options, rows_wanted=args.rows,
                                       detr_iters=s["detr_iters"])
        if "segmentation" in args.task:
            rows += run_segmentation_rows(world, teacher_spec(teacher_dir), work / f"segmenters-s{seed}",
                                          s["seg_iters"], seed, Path(args.configs), progress=progress)
        overrides = f", detection config options {args.cfg_options}" if args.cfg_options else ""
        if args.teacher_captions != "default":
            overrides += f", teacher trained on the '{args.teacher_captions}' captions"
        print_table(rows, f"open-vocabulary transfer, seed {seed}{' (quick)' if args.quick else ''}{overrides}",
                    verdicts=not args.quick)
        results = {"seed": seed, "zero_shot": zs, "teacher": str(teacher_dir),
                   "teacher_captions": args.teacher_captions, "cfg_options": args.cfg_options, "numerics": numerics,
                   "rows": [r.__dict__ for r in rows]}
        (work / f"results-s{seed}.json").write_text(json.dumps(results, indent=1))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
