"""Why DetPro's student does or does not beat ViLD's on a CPU-benchmark seed: its learned class embeddings
against the hand prompt's, and each student tested with the other text source, from what `tools/bench_ov.py`
left in its work dir (the DetPro and ViLD rows).

    python benchmarks/detpro_prompts.py --seed 3 [--work-dir work_dirs/bench_ov/full] [--temperature 0.01 ...]

Run from the repository root, as the bench was; the teacher is the one the bench's results file names.
Prints (1) the mean pairwise cosine between the base classes, the novel classes and across the two, of the
text embeddings of the hand prompt "a photo of a {}." and of DetPro's learned prompts; (2) ViLD's checkpoint
(trained with the hand prompt) tested with the learned prompts and DetPro's (trained with the learned
prompts) tested with the hand prompt, novel / base AP50; (3) with --temperature, both rows trained again at
that classifier temperature on the same region store and prompts (DetPro's reference trains its detector at
0.01; the synthetic config at 0.05), about 11 minutes per temperature on 2 cores.

    python benchmarks/detpro_prompts.py --seed 3 --prompt-epochs 6 60 200 [--students]

instead prints, for prompts learned again over each number of epochs (the config's schedule, its cosine
stretched to them; DetPro's is 6): their fit to the proposals they learn from (DetPro's loss summed over the
IoU bins, and the top-1 accuracy of the bins' ensemble on the foreground proposals, beside the hand prompt's)
and the teacher alone on ViLD-text's proposals with them (novel / base AP50); with --students also DetPro's
student trained with them (~14 minutes each on one thread). Needs the bench's ViLD-text and DetPro rows.
"""
import argparse
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ovclip.classifier import build_text_source
from ovclip.engine.runner import load_config, test
from ovclip.learned_prompts import LearnedPrompts, prompt_fit
from ovclip.synthetic import make_world
from ovclip.synthetic.bench import train_and_test  # also registers the dumped configs' progress hook
from ovclip.synthetic.tiny_clip import load_synthetic_teacher, teacher_spec
from ovclip.vocabulary import load_vocabulary
from ovd.api import Detector
from ovd.bench import (CONFIG, DETPRO_CONFIG, DETPRO_PROMPTS_CONFIG, STUDENTS, distill_settings, learn_prompts,
                       teacher_on_proposals, train_student, world_options)
from ovd.data.proposal_embeddings import ProposalEmbeddings

ROOT = Path(__file__).resolve().parents[1]


def pairwise_cosines(embeddings: torch.Tensor, base: list[int], novel: list[int]) -> dict[str, float]:
    """Mean cosine between distinct base classes, distinct novel classes, and base against novel."""
    e = F.normalize(embeddings.float(), dim=-1)
    c = e @ e.T

    def within(idx: list[int]) -> float:
        block = c[idx][:, idx]
        return float(block[~torch.eye(len(idx), dtype=torch.bool)].mean())
    return {"base": within(base), "novel": within(novel), "base-novel": float(c[base][:, novel].mean())}


@torch.no_grad()
def prompt_epochs(args, teacher, teacher_dir: str, world: dict, vocab, students: Path, checkpoints: dict,
                  options: dict, iters: int) -> None:
    """The --prompt-epochs table: prompts learned again over each number of epochs, their fit and effect."""
    cfg = load_config(students / "DetPro-prompts" / Path(DETPRO_PROMPTS_CONFIG).name)  # as the bench ran it
    store_key = "train_dataloader.dataset.feature_store"
    data = {**{k: v for k, v in cfg.train_dataloader.dataset.items() if k != "type"},  # its paths from here
            "ann_file": world["train_base"], "img_dir": world["train_images"], "feature_store": options[store_key]}
    dataset, base = ProposalEmbeddings(**data), vocab.subset(vocab.base)
    temperature = float(cfg.model.temperature)
    proposer = Detector.from_config(students / "ViLD-text" / Path(CONFIG).name, checkpoints["ViLD-text"])

    def teacher_row(templates) -> str:
        with contextlib.redirect_stdout(io.StringIO()):  # the evaluator's own tables
            m = teacher_on_proposals(lambda img: proposer.model.detector.proposals([img])[0], teacher, world,
                                     templates=templates)
        return f"{m['AP50_novel']:.1f} / {m['AP50_base']:.1f}"
    hand = build_text_source("single")(teacher, base)
    fit = (dataset.embeddings, dataset.labels, dataset.weights)
    loss, top1 = prompt_fit(*fit, [hand] * len(cfg.model.iou_bins), temperature)
    print(f"seed {args.seed}, teacher {teacher_dir}, {len(dataset)} proposals (foreground per bin "
          f"{dataset.counts['foreground']}), prompt temperature {temperature}\n\n| prompts | training loss | "
          f"foreground top-1 | teacher on ViLD-text's proposals |{' DetPro |' if args.students else ''}\n"
          f"|---|---|---|---|{'---|' if args.students else ''}\n| hand prompt | {loss:.3f} | {top1:.4f} | "
          f"{teacher_row('single')} |{' |' if args.students else ''}", flush=True)
    for epochs in args.prompt_epochs:
        out = students / f"DetPro-prompts-{epochs}ep"
        t0 = time.perf_counter()
        with torch.enable_grad():
            file = learn_prompts(ROOT / "configs", world, teacher_spec(teacher_dir), {store_key: options[store_key]},
                                 out, args.seed, {"train_cfg.max_epochs": epochs,  # the config's cosine, stretched
                                                  "param_scheduler": [{**sched, "T_max": epochs}
                                                                      for sched in cfg.param_scheduler]})
        seconds = time.perf_counter() - t0
        context = LearnedPrompts(file).context(teacher)
        loss, top1 = prompt_fit(*fit, context.bin_embeddings(base), temperature)
        line = f"| {epochs} epochs ({seconds:.0f} s) | {loss:.3f} | {top1:.4f} | " \
               f"{teacher_row({'type': 'learned', 'file': str(file)})} |"
        if args.students:
            with torch.enable_grad():
                _, m = train_and_test(ROOT / "configs" / DETPRO_CONFIG, {**options, "model.templates.file": str(file)},
                                      out / "DetPro", iters, args.seed)
            line += f" {m['det/AP50_novel']:.1f} / {m['det/AP50_base']:.1f} |"
        print(line, flush=True)


def main(argv=None) -> int:
    """Print the tables the module docstring lists."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--work-dir", default="work_dirs/bench_ov/full", help="the bench's work dir (its 'full' folder)")
    p.add_argument("--temperature", type=float, nargs="*", default=[], help="train both rows again at these")
    p.add_argument("--prompt-epochs", type=int, nargs="+", default=[],
                   help="learn the prompts again over these numbers of epochs and print their fit and effect instead")
    p.add_argument("--students", action="store_true", help="with --prompt-epochs: DetPro's student too")
    args = p.parse_args(argv)
    if args.students and not args.prompt_epochs:
        p.error("--students goes with --prompt-epochs")
    if args.temperature and args.prompt_epochs:
        p.error("--temperature and --prompt-epochs are two runs: give one")
    work, students = Path(args.work_dir), Path(args.work_dir) / f"students-s{args.seed}"
    prompts = students / "DetPro-prompts" / "prompts.safetensors"
    rows = ("ViLD-text", "DetPro") if args.prompt_epochs else ("ViLD", "DetPro")
    needed = [work / f"results-s{args.seed}.json", prompts, students / "regions" / "store",
              *(students / row / "last_checkpoint" for row in rows)]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)}; run tools/bench_ov.py --task detection --rows {rows[0]} DetPro "
                 f"--seed {args.seed} --work-dir {work.parent} first (a full run: --quick leaves another folder)")
    results = json.loads((work / f"results-s{args.seed}.json").read_text())
    # the bench run's thread count, so that retrained rows compare with its rows (results files from before the
    # count was recorded came from two-thread runs)
    torch.set_num_threads(results.get("numerics", {}).get("threads", 2))
    checkpoints = {row: (students / row / "last_checkpoint").read_text().strip() for row in rows}
    iters = int(re.search(r"iter_(\d+)\.pth$", checkpoints["DetPro"]).group(1))
    if "teacher" not in results:
        sys.exit(f"{work / f'results-s{args.seed}.json'} does not name its teacher (a results file from before the "
                 f"bench recorded it): run the bench again")
    teacher_dir = results["teacher"]
    teacher = load_synthetic_teacher(teacher_dir)
    if teacher is None:
        sys.exit(f"the bench's teacher {teacher_dir} is not there any more")
    learned = {"type": "learned", "file": str(prompts)}
    vocab = load_vocabulary(str(work / f"world-s{args.seed}" / "vocabulary.json"))
    world, options = None, None
    if args.prompt_epochs or args.temperature:  # the runs that train: the bench's world and ViLD-row options
        world = make_world(work / f"world-s{args.seed}", seed=args.seed, n_train=400, n_val=100)  # as the bench's
        options = {**world_options(world, teacher_spec(teacher_dir), "base"),
                   **dict(next(o for n, o, _ in STUDENTS if n == "ViLD")),
                   "train_dataloader.dataset.feature_store": str(students / "regions" / "store"),
                   "train_dataloader.dataset.max_distill_regions": distill_settings(ROOT / "configs")["num_regions"]}
    if args.prompt_epochs:
        prompt_epochs(args, teacher, teacher_dir, world, vocab, students, checkpoints, options, iters)
        return 0
    print(f"seed {args.seed}, teacher {teacher_dir}\n\n| text source | base-base cosine | novel-novel | "
          f"base-novel |\n|---|---|---|---|")
    for name, spec in (("hand prompt", "single"), ("learned prompts", learned)):
        cos = pairwise_cosines(build_text_source(spec)(teacher, vocab), vocab.indices("base"), vocab.indices("novel"))
        print(f"| {name} | {cos['base']:.3f} | {cos['novel']:.3f} | {cos['base-novel']:.3f} |")

    print("\n| student (trained with) | tested with | novel AP50 | base AP50 |\n|---|---|---|---|")
    crossed = (("ViLD", Path(CONFIG).name, "hand prompt", "learned prompts", {"_delete_": True, **learned}),
               ("DetPro", Path(DETPRO_CONFIG).name, "learned prompts", "hand prompt", "single"))
    for row, config, trained_with, tested_with, templates in crossed:
        with contextlib.redirect_stdout(io.StringIO()):  # the evaluator's own tables
            m = test(students / row / config, checkpoints[row],
                     work_dir=str(students / f"{row}-crossed"),
                     cfg_options={"model.templates": templates, "log_level": "WARNING"})
        print(f"| {row} ({trained_with}) | {tested_with} | {m['det/AP50_novel']:.1f} | {m['det/AP50_base']:.1f} |",
              flush=True)

    if args.temperature:
        print("\n| row | classifier temperature | novel AP50 | base AP50 |\n|---|---|---|---|")
        for t in args.temperature:
            out = students / f"temperature-{t}"
            _, m = train_and_test(ROOT / "configs" / DETPRO_CONFIG, {**options, "model.temperature": t,
                                                                    "model.templates.file": str(prompts)},
                                  out / "DetPro", iters, args.seed)
            print(f"| DetPro | {t} | {m['det/AP50_novel']:.1f} | {m['det/AP50_base']:.1f} |", flush=True)
            _, m = train_student(ROOT / "configs", {**options, "model.temperature": t}, out / "ViLD", iters, args.seed)
            print(f"| ViLD | {t} | {m['det/AP50_novel']:.1f} | {m['det/AP50_base']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
