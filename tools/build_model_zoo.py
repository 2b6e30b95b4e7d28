"""Rebuild model_zoo/synthetic: the synthetic-world teacher, a tiny ViLD student and a demo image.

    python tools/build_model_zoo.py [--out model_zoo/synthetic] [--seed 0] [--teacher-steps 1200] [--iters 600]

Steps: generate the world (seeded), train the tiny CLIP on captioned images, train ViLD (separate
heads, ensemble inference) on the world's base classes with online distillation, export its weights
in fp16, and copy a val image that holds base and novel shapes as demo.png.
"""
import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from ovclip.synthetic import NOVEL_SHAPES, SHAPES, make_world
from ovclip.synthetic.tiny_clip import load_synthetic_teacher, teacher_spec, train_tiny_clip, zero_shot_accuracy
from ovd.bench import STUDENTS, export_student, train_student, world_options


def main(argv=None) -> int:
    """Build the zoo entry and print what was written."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="model_zoo/synthetic")
    p.add_argument("--work-dir", default="work_dirs/model_zoo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-steps", type=int, default=1200)
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--keep-teacher", action="store_true", help="reuse the teacher already in --out")
    p.add_argument("--configs", default=str(Path(__file__).resolve().parents[1] / "configs"),
                   help="the project's configs folder (default: the repository's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, work = Path(args.out), Path(args.work_dir)
    t0 = time.perf_counter()
    world = make_world(work / "world", seed=args.seed)
    if not (args.keep_teacher and load_synthetic_teacher(out)):
        train_tiny_clip(out, seed=args.seed, steps=args.teacher_steps)
    teacher = load_synthetic_teacher(out)
    zs = zero_shot_accuracy(teacher)
    name, options, annotations = next(s for s in STUDENTS if s[0] == "ViLD-ensemble")
    # the config's online distillation: no ViLD-text run (whose proposals the benchmark's store holds)
    options = {**options, "model.distill.source": "online"}
    runner, metrics = train_student(Path(args.configs), {**world_options(world, teacher_spec(out), annotations), **options},
                                    work / "student", args.iters, args.seed)
    size = export_student(runner.model, out / "vild_teacher-rn_synthetic.pth")
    val = json.loads(Path(world["val"]).read_text())
    novel = {SHAPES.index(s) + 1 for s in NOVEL_SHAPES}
    cats = {}
    for a in val["annotations"]:
        cats.setdefault(a["image_id"], set()).add(a["category_id"])
    demo = next(i for i in val["images"] if len(cats.get(i["id"], set()) & novel) and len(cats[i["id"]] - novel))
    shutil.copy(Path(world["val_images"]) / demo["file_name"], out / "demo.png")
    summary = {"teacher_zero_shot": zs, "student_metrics": metrics, "student_bytes": size,
               "seed": args.seed, "teacher_steps": args.teacher_steps, "iters": args.iters,
               "seconds": round(time.perf_counter() - t0)}
    (out / "build.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
