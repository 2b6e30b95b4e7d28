"""CPU benchmark of open-vocabulary transfer on the synthetic shapes world.

    python tools/bench_ov.py [--seed 0 1 2] [--jobs 2] [--quick] [--task detection segmentation]
                             [--rows ViLD oracle ...] [--work-dir work_dirs/bench_ov] [--resume]
                             [--cfg-options model.trainable_layers=0 ...] [--detr-cfg-options model.min_size=128 ...]

Generates the world (seeded), loads the teacher from model_zoo/synthetic (or trains it when it is not
there, or with --train-teacher), trains the students on the base classes and prints one table per seed:
novel and base AP50 (detection) or mIoU (segmentation) and wall time per row. --quick is a smoke run
(small world, few iterations). --cfg-options override keys of the detection students' config
(configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py) for every detection row but the DETR ones, for ablations;
--detr-cfg-options those of the DETR rows' config (configs/ovdetr/ovdetr_teacher-rn_synthetic-cpu.py).

The numbers depend on the thread count and the CPU's kernels, not only on the seed: each process trains on
--threads threads (1 by default, whatever the machine has) and each results file records the count and the
kernels (ovclip/synthetic/bench.py). --jobs N runs the rows in units of N processes at once (ViLD-text first;
see plan_units): each row is trained as one process trains it, so its numbers are the same (its wall time is
not: the processes share the machine). Each finished row is recorded in its work dir: --resume keeps the rows
the last run finished (e.g. after it was stopped), if code, configs, teacher and settings are unchanged.
"""
import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import torch
from mmengine.config import DictAction

from ovclip.cli import DEBUG_FLAG, add_debug_flag, run_tool
from ovclip.synthetic import make_world
from ovclip.synthetic.tiny_clip import (
    load_synthetic_teacher, teacher_captions, teacher_spec, train_tiny_clip, zero_shot_accuracy)
from ovclip.synthetic.world import CAPTION_SETS
from ovclip.io import atomic_json_dump
from ovclip.synthetic.bench import (
    BENCH_THREADS, BenchRow, BenchUnit, bench_run, numerics_record, run_units, source_digest)
from ovd.bench import (
    DETPRO_ROW, DETR_TEXT_ROW, INDEPENDENT, NEED_VILD_TEXT, OVDETR_ROW, PSEUDO_ROW, ROW_CHOICES, ROW_ORDER, SHARED,
    run_detection_rows)
from ovseg.bench import run_segmentation_rows

SETTINGS = {
    "full": {"n_train": 400, "n_val": 100, "iters": 550, "detr_iters": 400, "seg_iters": 400,
             "teacher_steps": 1200},
    "quick": {"n_train": 8, "n_val": 4, "iters": 2, "detr_iters": 2, "seg_iters": 2, "teacher_steps": 60},
}
METRIC = {"detection": "AP50", "segmentation": "mIoU"}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED_TEACHER = str(Path(__file__).resolve().parents[1] / "model_zoo" / "synthetic")  # from any folder


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
    if {"ViLD", DETPRO_ROW} <= set(by):
        detpro, vild = by[DETPRO_ROW].novel, by["ViLD"].novel
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


def seed_run(args, s: dict, work: Path, teacher, teacher_dir: Path, seed: int, numerics: dict,
             teacher_seconds: float) -> tuple[dict, list[BenchRow]]:
    """One seed's rows in this process: the world, the teacher's zero-shot accuracy, the rows asked for;
    returns the results record and the rows."""
    t1 = time.perf_counter()
    world = make_world(work / f"world-s{seed}", seed=seed, n_train=s["n_train"], n_val=s["n_val"])
    zs = zero_shot_accuracy(teacher, seed=10_000 + seed, n_images=s["n_val"])
    print(f"\nseed {seed}: world {s['n_train']} train / {s['n_val']} val images "
          f"({time.perf_counter() - t1:.0f} s); teacher {teacher_dir} ({teacher_seconds:.0f} s to load or train), "
          f"zero-shot accuracy on held-out crops: {zs['accuracy']:.1f}% "
          f"(base {zs['base']:.1f}, novel {zs['novel']:.1f}, {zs['crops']} crops)", flush=True)

    def progress(r: BenchRow) -> None:
        print(f"  {row_line(r)}", flush=True)
    rows = []
    if "detection" in args.task:
        rows += run_detection_rows(world, teacher, teacher_spec(teacher_dir), work / f"students-s{seed}",
                                   s["iters"], seed, Path(args.configs), progress=progress,
                                   cfg_options=args.cfg_options, rows_wanted=args.rows, detr_iters=s["detr_iters"],
                                   make=args.make, detr_cfg_options=args.detr_cfg_options)
    if "segmentation" in args.task:
        rows += run_segmentation_rows(world, teacher_spec(teacher_dir), work / f"segmenters-s{seed}",
                                      s["seg_iters"], seed, Path(args.configs), progress=progress)
    results = {"seed": seed, "zero_shot": zs, "teacher": str(teacher_dir), "teacher_captions": args.teacher_captions,
               "cfg_options": args.cfg_options, "detr_cfg_options": args.detr_cfg_options, "numerics": numerics,
               "rows": [r.__dict__ for r in rows]}
    return results, rows


def row_line(r: BenchRow) -> str:
    """A finished row, as the bench prints it when the row is done."""
    return f"{r.name}: novel {r.novel:.1f} base {r.base:.1f} {METRIC[r.task]} ({r.seconds:.0f} s)"


def plan_units(args, teacher_dir: Path) -> list[BenchUnit]:
    """A parallel bench's units: per seed, ViLD-text; after it, a unit for each thing some rows share, made of
    its proposals (ovd.bench.SHARED: the pseudo-labels, the region store); a unit for each row choice that
    uses the proposals, after ViLD-text or after the shared thing it uses; the choices that need nothing (DETR-
    text, the oracle) and the segmentation rows. Each unit is this tool on its rows and the run's id: one that
    needs ViLD-text, or a shared thing, loads what the unit before it made and recorded. Listed longest path
    first, as `run_units` starts the ready units in list order: every seed's ViLD-text, every seed's shared
    things, the choices after them (longest first: ovd.bench.NEED_VILD_TEXT's order), then the rest seed by
    seed (benchmarks/bench_schedule.py models what the order gives on N cores)."""
    common = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads), "--work-dir",
              args.work_dir, "--teacher-dir", str(teacher_dir), "--teacher-captions", args.teacher_captions,
              "--configs", args.configs, "--run-id", args.run_id, "--cfg-options-json", json.dumps(args.cfg_options),
              "--detr-cfg-options-json", json.dumps(args.detr_cfg_options),
              *(["--quick"] if args.quick else []), *([DEBUG_FLAG] if args.debug else [])]
    first, shared, after, rest = [], [], [], []
    for seed in args.seed:
        def unit(tag: str, task: str, rows: Optional[list[str]], needs: tuple[str, ...] = (),
                 make: Optional[str] = None) -> BenchUnit:
            return BenchUnit(f"s{seed}-{tag}", [*common, "--seed", str(seed), "--task", task, "--results-tag", tag,
                                                *(["--rows", *rows] if rows else []),
                                                *(["--make", make] if make else [])],
                             tuple(f"s{seed}-{name}" for name in needs))
        if "detection" in args.task:
            def want(choice: str) -> bool:
                return args.rows is None or choice in args.rows
            uses = [choice for choice in NEED_VILD_TEXT if want(choice)]
            if want("ViLD-text") or uses:
                first.append(unit("ViLD-text", "detection", ["ViLD-text"]))
            made = {name: users for name, users in SHARED.items() if any(choice in users for choice in uses)}
            shared += [unit(name, "detection", ["ViLD-text"], ("ViLD-text",), name) for name in made]
            after += [(rank, unit(choice, "detection", [choice],
                                  tuple(name for name, users in made.items() if choice in users) or ("ViLD-text",)))
                      for rank, choice in enumerate(uses)]
            rest += [unit(choice, "detection", [choice]) for choice in INDEPENDENT if want(choice)]
        if "segmentation" in args.task:
            rest.append(unit("segmentation", "segmentation", None))
    after.sort(key=lambda ranked: ranked[0])  # stable: seed order within a choice
    return first + shared + [u for _, u in after] + rest


def merged_results(seed: int, units: list[BenchUnit], records: dict[str, dict], unit_seconds: dict[str, float]
                   ) -> dict:
    """A parallel bench's record of one seed from the records of its units that finished (`records` by unit
    name): each row once (from the first unit that has it: ViLD-text's own unit for ViLD-text), detection rows
    in the order one process runs them, and each unit's wall time."""
    results, rows, prefix = None, {}, f"s{seed}-"
    finished = [u for u in units if u.name.startswith(prefix) and u.name in unit_seconds]
    for u in finished:
        record = records[u.name]
        results = results or {k: v for k, v in record.items() if k != "rows"}
        for row in record["rows"]:
            rows.setdefault((row["task"], row["name"]), row)
    if results is None:
        return {}
    order = {name: i for i, name in enumerate(ROW_ORDER)}
    results["rows"] = sorted(rows.values(), key=lambda r: (r["task"], order.get(r["name"], len(order))))
    results["units"] = {u.name: round(unit_seconds[u.name], 1) for u in finished}
    return results


def run_parallel(args, s: dict, work: Path, teacher_dir: Path, t0: float) -> int:
    """The bench in units (`plan_units`), `args.jobs` processes at once; prints each seed's table (that of the
    rows that finished, when a unit failed)."""
    for seed in args.seed:  # written once, before the units read it
        make_world(work / f"world-s{seed}", seed=seed, n_train=s["n_train"], n_val=s["n_val"])
    units, records, unit_seconds = plan_units(args, teacher_dir), {}, {}

    def finished(unit: BenchUnit, seconds: float) -> None:
        unit_seconds[unit.name] = seconds
        records[unit.name] = json.loads((work / f"results-{unit.name}.json").read_text())
        for r in records[unit.name]["rows"]:
            print(f"  {unit.name}: {row_line(BenchRow(**r))}", flush=True)
        print(f"  {unit.name}: done in {seconds:.0f} s", flush=True)
    failed = run_units(units, args.jobs, work / "logs", on_done=finished)
    for seed in args.seed:
        results = merged_results(seed, units, records, unit_seconds)
        lost = [name for name in failed if name.startswith(f"s{seed}-")]
        if lost:
            print(f"\nseed {seed}: units {', '.join(lost)} did not finish (their logs are in {work / 'logs'}); "
                  f"--resume runs them again and keeps the rows that finished")
        if results:
            report(args, seed, results, [BenchRow(**r) for r in results["rows"]], work)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s ({args.jobs} processes at once)")
    return 1 if failed else 0


def run_settings(args, teacher, numerics: dict) -> dict:
    """What a run's rows depend on besides the rows and seeds asked for: `--resume` refuses another one."""
    import ovclip
    import ovd
    import ovseg
    code = source_digest(*(Path(m.__file__).parent for m in (ovclip, ovd, ovseg)), args.configs)
    return {"quick": args.quick, "threads": args.threads, "teacher": teacher.fingerprint,
            "teacher_captions": args.teacher_captions, "cfg_options": args.cfg_options,
            "detr_cfg_options": args.detr_cfg_options, "code": code,
            "numerics": {k: v for k, v in numerics.items() if k != "threads"}}  # threads: above


def start_run(p: argparse.ArgumentParser, args, work: Path, teacher, numerics: dict) -> None:
    """Give the run its id: a new one, or with --resume the last run's, when its settings are these."""
    run_file, settings = work / "run.json", run_settings(args, teacher, numerics)
    if args.resume:
        last = json.loads(run_file.read_text())
        before = last.get("settings", {})
        changed = [k for k in settings if before.get(k) != settings[k]]
        if changed:
            p.error(f"--resume: the last run in {work} had other settings ({', '.join(changed)}: "
                    f"{ {k: before.get(k) for k in changed} } then, { {k: settings[k] for k in changed} } "
                    f"now); its rows would not be this run's. Leave out --resume to start again")
        args.run_id = last["id"]
        return
    args.run_id = uuid.uuid4().hex[:12]
    work.mkdir(parents=True, exist_ok=True)
    atomic_json_dump({"id": args.run_id, "settings": settings}, run_file, indent=1)


def report(args, seed: int, results: dict, rows: list[BenchRow], work: Path) -> None:
    """Print one seed's table and write its results file."""
    overrides = f", detection config options {args.cfg_options}" if args.cfg_options else ""
    overrides += f", DETR config options {args.detr_cfg_options}" if args.detr_cfg_options else ""
    if args.teacher_captions != "default":
        overrides += f", teacher trained on the '{args.teacher_captions}' captions"
    print_table(rows, f"open-vocabulary transfer, seed {seed}{' (quick)' if args.quick else ''}{overrides}",
                verdicts=not args.quick)
    atomic_json_dump(results, work / f"results-s{seed}.json", indent=1)


def main(argv=None) -> int:
    """Run the benchmark for each seed and print its table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="world / training seeds, one table each")
    p.add_argument("--threads", type=int, default=BENCH_THREADS,
                   help=f"intra-op threads of each process (default {BENCH_THREADS}, the reported numbers'): another "
                        "count sums in another order and gives other numbers")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes at once (default 1): the rows run in units of their own, ViLD-text first (the "
                        "others use its proposals); each row's numbers are those one process gives, not its wall time")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows the last run in --work-dir finished instead of training them again (refused "
                        "if code, configs, teacher or settings changed since); a kept row's wall time is its loading")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny world, a few iterations")
    p.add_argument("--task", nargs="+", choices=sorted(METRIC), default=sorted(METRIC), help="which rows to run")
    p.add_argument("--rows", nargs="+", choices=list(ROW_CHOICES), metavar="ROW",
                   help="detection rows to run, all by default: " + "; ".join(f"{k}: {v}" for k, v in
                                                                          ROW_CHOICES.items())
                        + " (ViLD-text also runs with a row that uses its proposals)")
    p.add_argument("--work-dir", default="work_dirs/bench_ov")
    p.add_argument("--teacher-dir", default=SHIPPED_TEACHER, help="where the trained teacher is (or goes)")
    p.add_argument("--train-teacher", action="store_true", help="train the teacher even if one is there")
    p.add_argument("--teacher-captions", choices=list(CAPTION_SETS), default="default",
                   help="the caption set the teacher is (or gets) trained on; 'no-hand-prompt' leaves out the "
                        "captions in the phrasing of the prompt 'a photo of a {}.' (needs a --teacher-dir of its own)")
    p.add_argument("--configs", default=str(CONFIGS), help="the project's configs folder (default: the repository's)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override keys of the detection config for every detection row but the DETR ones: "
                        "key=value")
    p.add_argument("--detr-cfg-options", nargs="+", action=DictAction, default={},
                   help="override keys of the DETR rows' config (DETR-text, OV-DETR): key=value")
    p.add_argument("--run-id", help=argparse.SUPPRESS)  # a unit of a parallel bench: its run,
    p.add_argument("--results-tag", help=argparse.SUPPRESS)  # the name of its results file
    p.add_argument("--cfg-options-json", help=argparse.SUPPRESS)  # and the run's --cfg-options as parsed,
    p.add_argument("--detr-cfg-options-json", help=argparse.SUPPRESS)  # its --detr-cfg-options
    p.add_argument("--make", nargs="+", choices=list(SHARED), default=(), help=argparse.SUPPRESS)  # a shared thing
    add_debug_flag(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    s = SETTINGS["quick" if args.quick else "full"]
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    teacher_dir = Path(args.teacher_dir)
    args.seed = list(dict.fromkeys(args.seed))  # a seed asked for twice is run once
    if args.cfg_options_json is not None:
        args.cfg_options = json.loads(args.cfg_options_json)
    if args.detr_cfg_options_json is not None:
        args.detr_cfg_options = json.loads(args.detr_cfg_options_json)
    for name in ("threads", "jobs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, not {getattr(args, name)}")
    if args.teacher_captions != "default" and teacher_dir.resolve() == Path(SHIPPED_TEACHER).resolve():
        p.error(f"--teacher-captions {args.teacher_captions} needs a --teacher-dir of its own "
                f"({SHIPPED_TEACHER} is the shipped teacher, trained on the default captions)")
    if args.resume and not (work / "run.json").is_file():
        p.error(f"--resume: no earlier run in {work} (its run.json is missing)")
    t0 = time.perf_counter()
    teacher = None if args.train_teacher else load_synthetic_teacher(teacher_dir)
    if teacher is not None and teacher_captions(teacher_dir) != args.teacher_captions:
        p.error(f"the teacher in {teacher_dir} was trained on the caption set '{teacher_captions(teacher_dir)}', "
                f"not '{args.teacher_captions}': add --train-teacher, or name another --teacher-dir")
    torch.set_num_threads(args.threads)
    numerics = numerics_record()
    if args.results_tag is None:
        print(f"numerics: {numerics['threads']} thread(s) per process, {args.jobs} process(es) at once; kernels: "
              f"ATen {numerics['aten_cpu_capability']}, oneDNN {numerics['ONEDNN_MAX_CPU_ISA'] or 'its own choice'}, "
              f"MKL {numerics['MKL_CBWR'] or 'its own choice'}"
              + ("" if args.threads == BENCH_THREADS else
                 f" (not the default {BENCH_THREADS}: the numbers differ from a {BENCH_THREADS}-thread run's)"),
              flush=True)
    if teacher is None:
        teacher_dir = teacher_dir if args.train_teacher or not args.quick else work / "teacher"
        print(f"training the teacher ({s['teacher_steps']} steps, captions '{args.teacher_captions}') into "
              f"{teacher_dir} ...", flush=True)
        logging.getLogger("ovclip.synthetic.tiny_clip").setLevel(logging.INFO)  # its progress, every 100 steps
        train_tiny_clip(teacher_dir, steps=s["teacher_steps"], captions=args.teacher_captions)
        teacher = load_synthetic_teacher(teacher_dir)
    teacher_seconds = time.perf_counter() - t0
    if args.run_id is None:  # not a unit of a parallel run
        start_run(p, args, work, teacher, numerics)
    if args.jobs > 1:
        return run_parallel(args, s, work, teacher_dir, t0)
    with bench_run(args.run_id, may_make=args.make if args.results_tag is not None else None):
        for seed in args.seed:
            results, rows = seed_run(args, s, work, teacher, teacher_dir, seed, numerics, teacher_seconds)
            if args.results_tag is not None:  # a unit of a parallel bench: the run prints the table
                atomic_json_dump(results, work / f"results-s{seed}-{args.results_tag}.json", indent=1)
            else:
                report(args, seed, results, rows, work)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
