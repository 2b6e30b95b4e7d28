"""The open-vocabulary transfer benchmark, detection rows: students trained on the synthetic world's
base classes, evaluated on base and novel classes (AP50), against the teacher alone and an oracle."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ovclip.cli import tool_config
from ovclip.synthetic.bench import BenchRow, made_once, train_and_test, weights_digest
from ovclip.engine.runner import ProjectRunner, load_config
from ovclip.options import with_defaults
from ovclip.io import atomic_torch_save, read_image, to_unit_float
from ovclip.precompute import run_precompute
from ovclip.pseudo_boxes import annotation_quality
from ovclip.pseudo_boxes_job import PseudoBoxJob, parts_dir
from ovclip.regions import region_embeddings
from ovclip.teacher import Teacher
from ovclip.classifier import build_text_source
from ovclip.vocabulary import load_vocabulary

from .data.class_bank import build_class_bank
from .data.coco import load_detection_annotations
from .evaluation.coco import DetectionEvaluator
from .models.detector import DISTILL_DEFAULTS, DistillConfigError
from .models.detpro import PROMPT_FILE
from .proposals import write_proposals

log = logging.getLogger(__name__)

# the detection students' config, under the configs folder the caller names (the library never looks for
# configs/ by its place in the repository)
CONFIG = "vild/vild_teacher-rn_fpn_synthetic-cpu.py"

# The "pseudo-labels" row (VL-PLM): ViLD-text's top 100 proposals, refined 10 times by its RoI head, labelled
# by the teacher with this pseudo-label config; the same ViLD-text then trained on base boxes + those labels.
PSEUDO_BOXES_CONFIG = "pseudo_boxes/synthetic-cpu.py"
PSEUDO_CONFIG = "vild/vild-text_teacher-rn_fpn_synthetic-cpu_pseudo-boxes.py"
PSEUDO_ROW = "pseudo-labels (ViLD-text on base + teacher's novel boxes)"
PSEUDO_PROPOSALS, PSEUDO_REFINE = 100, 10

# DetPro: prompts learned on the same region store, then the "ViLD" row's student trained and tested with them
DETPRO_PROMPTS_CONFIG = "detpro/detpro_prompts_synthetic-cpu.py"
DETPRO_CONFIG = "detpro/vild_detpro_teacher-rn_fpn_synthetic-cpu.py"

# OV-DETR and its DETR-text baseline (the same config unconditioned)
OVDETR_CONFIG = "ovdetr/ovdetr_teacher-rn_synthetic-cpu.py"
DETR_TEXT_ROW = "DETR-text (base boxes)"
OVDETR_ROW = "OV-DETR (base + teacher's novel boxes)"

# name, config options, which training annotations ("base" or "all"). The distilled students learn from a
# feature store of the teacher's embeddings of ViLD-text's proposals (region_store), ViLD's offline recipe.
STUDENTS: list[tuple[str, dict[str, Any], str]] = [
    ("ViLD-text", {"model.distill.source": "none", "model.inference_mode": "text"}, "base"),
    ("ViLD", {"model.distill.source": "store", "model.separate_heads": False, "model.inference_mode": "text"},
     "base"),
    ("ViLD-ensemble", {"model.distill.source": "store", "model.inference_mode": "ensemble"}, "base"),
    ("oracle (novel boxes too)", {"model.distill.source": "none", "model.inference_mode": "text",
                                  "model.gt_classes": "all"}, "all"),
]


IMAGE_ROW, TEACHER_ROW = "ViLD-image (ensemble model's image head)", "teacher on ViLD-text's proposals"
DETPRO_ROW, DETPRO_TEACHER_ROW = "DetPro (ViLD with learned prompts)", f"{TEACHER_ROW}, learned prompts"
# --rows choices: what each one is, and the rows of the table it gives
ROW_CHOICES = {"ViLD-text": "ViLD-text", "ViLD": "ViLD", "ViLD-ensemble": "ViLD-ensemble (with its image head)",
               "oracle": "oracle",
               "teacher": "the teacher on ViLD-text's proposals", "DetPro": "DetPro's two rows",
               "pseudo-labels": "VL-PLM's pseudo-labels", "DETR-text": "the DETR student, text classifier",
               "OV-DETR": "OV-DETR on base + pseudo-boxes"}
ROWS_OF_CHOICE = {"ViLD-text": ["ViLD-text"], "ViLD": ["ViLD"], "ViLD-ensemble": ["ViLD-ensemble", IMAGE_ROW],
                  "oracle": [STUDENTS[3][0]], "teacher": [TEACHER_ROW], "DetPro": [DETPRO_ROW, DETPRO_TEACHER_ROW],
                  "pseudo-labels": [PSEUDO_ROW], "DETR-text": [DETR_TEXT_ROW], "OV-DETR": [OVDETR_ROW]}
# The choices whose rows use ViLD-text's proposals (ViLD-text runs with them), longest first (a parallel bench
# starts them in this order; minutes of one process beside another on 2026-12-02: 19.8, 18.0, 12.0, 12.3, 11.6,
# 0.7), and what some of them share, made once from the proposals (`made_once` by these names): the
# pseudo-labels, the distilled students' region store. A parallel bench makes each in a unit of its own, in
# this order (the labels' path to OV-DETR is the longer), before the units of the rows that use it. The
# choices that need nothing.
NEED_VILD_TEXT = ("OV-DETR", "DetPro", "ViLD", "ViLD-ensemble", "pseudo-labels", "teacher")
SHARED = {"labels": ("pseudo-labels", "OV-DETR"), "regions": ("ViLD", "ViLD-ensemble", "DetPro")}
INDEPENDENT = ("DETR-text", "oracle")
# the rows in the order one process runs them (ROWS_OF_CHOICE's; a parallel bench's table keeps it)
ROW_ORDER = [name for names in ROWS_OF_CHOICE.values() for name in names]


def row_choice(name: str) -> str:
    """The --rows choice a row of the table belongs to."""
    return next(choice for choice, names in ROWS_OF_CHOICE.items() if name in names)


def distill_settings(configs: Path, options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The synthetic config's `model.distill` (its defaults filled in, `options` applied): the region store
    uses the same number of regions per train image and crop scales as the config's online distillation."""
    cfg = load_config(Path(configs) / CONFIG, options or {})
    return with_defaults("distill", cfg.model.distill, DISTILL_DEFAULTS, DistillConfigError)


def world_options(world: dict[str, str], teacher_spec: dict, annotations: str) -> dict[str, Any]:
    """Config overrides pointing the synthetic config at one generated world and teacher."""
    train_ann = world["train_all"] if annotations == "all" else world["train_base"]
    return {
        "model.teacher": teacher_spec,
        "train_dataloader.dataset.ann_file": train_ann, "train_dataloader.dataset.img_dir": world["train_images"],
        "train_dataloader.dataset.train_classes": annotations,
        "test_dataloader.dataset.ann_file": world["val"], "test_dataloader.dataset.img_dir": world["val_images"],
        "test_evaluator.ann_file": world["val"],
    }


def region_store(model: torch.nn.Module, world: dict[str, str], teacher_spec: dict, out: Path,
                 num_regions: int, scales: Sequence[float] = DISTILL_DEFAULTS["scales"]) -> dict[str, Any]:
    """ViLD's offline distillation data: a trained student's top `num_regions` class-agnostic proposals on
    each train image (tools/proposals.py), embedded by the teacher at each crop scale into a feature store
    (tools/precompute.py). Returns the dataset options that point a config at it. Made once in a bench run
    (`made_once` "regions": the same model, world, teacher and settings). When it is made, what an earlier run
    left in `out` is removed first: it came from another model, and a resumed store would mix the two."""
    def make() -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        proposals = out / "proposals.json"
        write_proposals(lambda image: model.detector.proposals([image])[0], world["train_base"],
                        world["train_images"], str(proposals), max_per_image=num_regions, progress=False)
        store = out / "store"
        run_precompute({"teacher": {"spec": teacher_spec, "device": "cpu"},
                        "dataset": {"ann_file": world["train_base"], "img_dir": world["train_images"],
                                    "proposals": str(proposals), "max_regions": num_regions},
                        "region": {"scales": tuple(scales), "batch_size": 256}}, str(store), progress=False)
        return {"train_dataloader.dataset.feature_store": str(store),
                "train_dataloader.dataset.max_distill_regions": num_regions}

    def key() -> dict[str, Any]:
        return {"proposer": weights_digest(model), "world": world, "teacher": teacher_spec, "num_regions": num_regions,
                "scales": list(scales)}
    return made_once("regions", Path(f"{out}.made.json"), key, make, [out / "store" / "shards"])


def train_student(configs: Path, options: dict[str, Any], work_dir: Path, iters: int, seed: int
                  ) -> tuple[ProjectRunner, dict]:
    """Train one detection student of the synthetic config (under `configs`) and evaluate it on the world's
    val split."""
    return train_and_test(Path(configs) / CONFIG, options, work_dir, iters, seed)


@torch.inference_mode()
def teacher_on_proposals(proposals: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], teacher: Teacher,
                         world: dict[str, str], top_k: int = 50, templates: Any = "single") -> dict[str, float]:
    """The teacher alone as the classifier: it embeds a student's top class-agnostic proposals of each
    val image (crops at 1x and 1.5x) and scores them against the text embeddings of all classes
    (`templates`: any text source spec, e.g. learned prompts)."""
    vocab = load_vocabulary(world["vocabulary"])
    text = build_text_source(templates)(teacher, vocab)
    scale = float(teacher.model.logit_scale.exp())
    evaluator = DetectionEvaluator(world["val"], vocab, name="teacher")
    records, _, _ = load_detection_annotations(world["val"], world["val_images"], vocab)
    for rec in records:
        image = read_image(rec.path)
        boxes, _ = proposals(to_unit_float(image))
        boxes = boxes[:top_k].cpu()
        r = region_embeddings(teacher, image, boxes)
        probs = F.softmax(scale * r.embeddings @ text.T, dim=-1)
        idx, labels = torch.where(probs > 0.01)
        b, s = r.boxes[idx], probs[idx, labels]
        keep = batched_nms(b, s, labels, 0.5)[:100]
        evaluator.process(rec.id, b[keep], s[keep], labels[keep])
    return evaluator.evaluate()


def learn_prompts(configs: Path, world: dict[str, str], teacher_spec: "str | dict", store: dict[str, Any],
                  work_dir: Path, seed: int, options: Optional[dict[str, Any]] = None) -> Path:
    """DetPro's prompts learned on the region store of the distilled students (its schedule: 6 epochs;
    `options` override any key of the prompt config, those set here included); returns the prompt file."""
    cfg = load_config(Path(configs) / DETPRO_PROMPTS_CONFIG, {
        "model.teacher": teacher_spec, "randomness.seed": seed, "log_level": "WARNING",
        "train_dataloader.dataset.ann_file": world["train_base"],
        "train_dataloader.dataset.img_dir": world["train_images"],
        "train_dataloader.dataset.feature_store": store["train_dataloader.dataset.feature_store"],
        **(options or {})}, work_dir=str(work_dir))
    ProjectRunner.from_cfg(cfg).train()
    return Path(work_dir) / PROMPT_FILE


def run_detection_rows(world: dict[str, str], teacher: Teacher, teacher_spec: dict, work_dir: Path, iters: int,
                       seed: int, configs: Path, progress: Optional[Callable[[BenchRow], None]] = None,
                       cfg_options: Optional[dict[str, Any]] = None, detpro: bool = True,
                       rows_wanted: Optional[Sequence[str]] = None, detr_iters: Optional[int] = None,
                       make: Sequence[str] = (), detr_cfg_options: Optional[dict[str, Any]] = None) -> list[BenchRow]:
    """Train and evaluate every student (ViLD-text first: its proposals are the distilled regions of the
    others, and the teacher's alone), then the teacher on ViLD-text's proposals, then the pseudo-label
    row. `configs`: the folder of the project's configs (the repository's configs/). `cfg_options` override
    keys of the synthetic config for every student (e.g. {"model.trainable_layers": 0}); a row's own
    settings (distillation source, inference mode) still apply on top. `rows_wanted`: the first word of
    each row to run (`ROW_CHOICES`; ViLD-text also runs when a row asked for uses its proposals); all by
    default. `detr_iters`: the DETR rows' iterations (`iters` if not given); `cfg_options` do not reach them
    (they are the ViLD config's keys): `detr_cfg_options` override keys of the DETR rows' config. `make`: what
    of `SHARED` to make (and record, in a bench run) even if no row asked for uses it: a parallel bench's unit
    that makes it for the units after it."""
    def wanted(name: str) -> bool:
        return rows_wanted is None or row_choice(name) in rows_wanted or \
            (name == "ViLD-text" and (any(r in NEED_VILD_TEXT for r in rows_wanted) or bool(make)))
    rows, trained, store, cfg_options = [], {}, {}, cfg_options or {}

    def shared_store() -> dict[str, Any]:  # the region store, made (or found made) when first asked for
        if not store:
            distill = distill_settings(configs, cfg_options)
            store.update(region_store(trained["ViLD-text"], world, teacher_spec, work_dir / "regions",
                                      distill["num_regions"], distill["scales"]))
        return store
    for name, options, train_annotations in STUDENTS:
        if not wanted(name):
            continue
        t0 = time.perf_counter()
        uses_store = options.get("model.distill.source") == "store"
        runner, m = train_student(configs, {**world_options(world, teacher_spec, train_annotations), **cfg_options,
                                         **options, **(shared_store() if uses_store else {})},
                                  work_dir / name.split()[0], iters, seed)
        trained[name] = runner.model
        rows.append(BenchRow("detection", name, m["det/AP50_novel"], m["det/AP50_base"], time.perf_counter() - t0))
        if progress:
            progress(rows[-1])
        if name == "ViLD-ensemble":  # the same model scored by its distilled image head alone
            t0 = time.perf_counter()
            runner.model.detector.roi_heads.inference_mode = "image"
            m = runner.test()
            runner.model.detector.roi_heads.inference_mode = "ensemble"
            rows.append(BenchRow("detection", IMAGE_ROW, m["det/AP50_novel"],
                                 m["det/AP50_base"], time.perf_counter() - t0, "evaluation only"))
            if progress:
                progress(rows[-1])
    student = trained.get("ViLD-text")
    if "regions" in make:
        shared_store()
    if wanted(TEACHER_ROW):
        t0 = time.perf_counter()
        m = teacher_on_proposals(lambda img: student.detector.proposals([img])[0], teacher, world)
        rows.append(BenchRow("detection", TEACHER_ROW, m["AP50_novel"], m["AP50_base"],
                             time.perf_counter() - t0))
        if progress:
            progress(rows[-1])
    if detpro and wanted(DETPRO_ROW):
        rows += detpro_rows(world, teacher, teacher_spec, work_dir, iters, seed, configs, shared_store(), student,
                            progress, cfg_options)
    labels = None
    if wanted(PSEUDO_ROW) or wanted(OVDETR_ROW) or "labels" in make:
        labels = make_pseudo_labels(world, teacher_spec, work_dir / "pseudo-labels", configs, student)
    if wanted(PSEUDO_ROW):
        rows.append(pseudo_label_row(world, teacher_spec, work_dir / "pseudo-labels", iters, seed, configs, student,
                                     cfg_options, labels=labels))
        if progress:
            progress(rows[-1])
    if wanted(DETR_TEXT_ROW) or wanted(OVDETR_ROW):
        rows += ovdetr_rows(world, teacher, teacher_spec, work_dir, detr_iters or iters, seed, configs, labels,
                            progress, wanted, detr_cfg_options)
    return rows


def make_pseudo_labels(world: dict[str, str], teacher_spec: dict, work_dir: Path, configs: Path,
                       proposer: torch.nn.Module, pseudo_options: Optional[dict[str, Any]] = None) -> tuple[Path, str]:
    """VL-PLM's labelling on the synthetic world: `proposer`'s (ViLD-text's) top 100 proposals on the train
    images, refined 10 times by its RoI head (tools/proposals.py --refine 10), labelled by the teacher
    (tools/pseudo_boxes.py with configs/pseudo_boxes/synthetic-cpu.py). Returns the pseudo-label file and a
    note: their precision / recall against the train images' withheld novel ground truth (IoU 0.5) and the
    time the labelling took. `pseudo_options` override the config's `pseudo` section. Made once in a bench run
    (`made_once` "labels": the same proposer, world, teacher and options)."""
    proposals, pseudo = work_dir / "proposals.json", work_dir / "pseudo_boxes.json"

    def key() -> dict[str, Any]:
        return {"proposer": weights_digest(proposer), "world": world, "teacher": teacher_spec,
                "pseudo_options": pseudo_options or {}}
    done = made_once("labels", work_dir / "pseudo_boxes.made.json", key,
                     lambda: label_train_images(world, teacher_spec, configs, proposer, proposals, pseudo,
                                                pseudo_options), [pseudo])
    return Path(done[0]), done[1]


def label_train_images(world: dict[str, str], teacher_spec: dict, configs: Path, proposer: torch.nn.Module,
                       proposals: Path, pseudo: Path, pseudo_options: Optional[dict[str, Any]]) -> list[str]:
    """`make_pseudo_labels`' work: returns the pseudo-label file (as a string) and its note."""
    t0 = time.perf_counter()
    for made in (proposals, pseudo):  # by another proposer, perhaps; the student's row beside them stays
        made.unlink(missing_ok=True)
    shutil.rmtree(parts_dir(pseudo), ignore_errors=True)
    write_proposals(lambda image: proposer.detector.proposals([image], PSEUDO_REFINE)[0], world["train_base"],
                    world["train_images"], str(proposals), max_per_image=PSEUDO_PROPOSALS, progress=False)
    sections = tool_config(str(Path(configs) / PSEUDO_BOXES_CONFIG), {})
    sections["teacher"] = {**sections["teacher"], "spec": teacher_spec}
    sections["pseudo"] = {**sections["pseudo"], **(pseudo_options or {})}
    sections["dataset"] = {**sections["dataset"], "ann_file": world["train_base"], "img_dir": world["train_images"],
                           "proposals": str(proposals)}
    job = PseudoBoxJob(sections)
    job.run(str(pseudo), progress=False)
    job.write(str(pseudo))
    vocab = load_vocabulary(world["vocabulary"])
    quality = annotation_quality(pseudo, world["train_all"], [vocab.ids[i] for i in vocab.novel])
    note = (f"{quality['pseudo_labels']} pseudo-labels, precision {quality['precision']:.1f}% / recall "
            f"{quality['recall']:.1f}% of {quality['truths']} novel objects; labelling "
            f"{time.perf_counter() - t0:.0f} s")
    return [str(pseudo), note]


def pseudo_label_row(world: dict[str, str], teacher_spec: dict, work_dir: Path, iters: int, seed: int,
                     configs: Path, proposer: torch.nn.Module, cfg_options: Optional[dict[str, Any]] = None,
                     pseudo_options: Optional[dict[str, Any]] = None,
                     labels: Optional[tuple[Path, str]] = None) -> BenchRow:
    """VL-PLM on the synthetic world: ViLD-text trained on the base boxes + the teacher's pseudo-labels
    (`make_pseudo_labels`, or `labels` already made); the row's note is the labels' quality and time."""
    t0 = time.perf_counter()
    pseudo, note = labels or make_pseudo_labels(world, teacher_spec, work_dir, configs, proposer, pseudo_options)
    _, m = train_and_test(Path(configs) / PSEUDO_CONFIG,
                          {**world_options(world, teacher_spec, "base"), **(cfg_options or {}),
                           "train_dataloader.dataset.pseudo_annotations": [str(pseudo)]}, work_dir / "student", iters,
                          seed)
    return BenchRow("detection", PSEUDO_ROW, m["det/AP50_novel"], m["det/AP50_base"], time.perf_counter() - t0, note)


def ovdetr_rows(world: dict[str, str], teacher: Teacher, teacher_spec: dict, work_dir: Path, iters: int, seed: int,
                configs: Path, labels: tuple[Path, str], progress: Optional[Callable[[BenchRow], None]] = None,
                wanted: Callable[[str], bool] = lambda name: True, cfg_options: Optional[dict[str, Any]] = None
                ) -> list[BenchRow]:
    """DETR-text (the synthetic OV-DETR config unconditioned, text classifier, base boxes only) and OV-DETR
    (conditional matching, trained on the base boxes + the teacher's pseudo-boxes `labels`, image conditions
    from a class bank of the teacher's embeddings of those boxes). `cfg_options` override keys of that config
    for both rows; a row's own settings apply on top."""
    rows, common = [], {**world_options(world, teacher_spec, "base"), **(cfg_options or {})}
    if wanted(DETR_TEXT_ROW):
        t0 = time.perf_counter()
        _, m = train_and_test(Path(configs) / OVDETR_CONFIG, {**common, "model.conditional": False},
                              work_dir / "DETR-text", iters, seed)
        rows.append(BenchRow("detection", DETR_TEXT_ROW, m["det/AP50_novel"], m["det/AP50_base"],
                             time.perf_counter() - t0))
        if progress:
            progress(rows[-1])
    if wanted(OVDETR_ROW):
        t0 = time.perf_counter()
        pseudo, _ = labels
        bank = work_dir / "OV-DETR" / "class_bank.safetensors"
        bank.parent.mkdir(parents=True, exist_ok=True)
        build_class_bank(teacher, world["train_base"], world["train_images"], world["vocabulary"], bank,
                         pseudo_annotations=[str(pseudo)], progress=False)
        _, m = train_and_test(Path(configs) / OVDETR_CONFIG, {
            **common, "model.conditioning.class_bank": str(bank),
            "train_dataloader.dataset.pseudo_annotations": [str(pseudo)],
            "train_dataloader.dataset.pseudo_weight": "one"}, work_dir / "OV-DETR", iters, seed)
        rows.append(BenchRow("detection", OVDETR_ROW, m["det/AP50_novel"], m["det/AP50_base"],
                             time.perf_counter() - t0, "the pseudo-labels row's labels"))
        if progress:
            progress(rows[-1])
    return rows


def detpro_rows(world: dict[str, str], teacher: Teacher, teacher_spec: dict, work_dir: Path, iters: int, seed: int,
                configs: Path, store: dict[str, Any], proposer: torch.nn.Module,
                progress: Optional[Callable[[BenchRow], None]] = None,
                cfg_options: Optional[dict[str, Any]] = None) -> list[BenchRow]:
    """DetPro: prompts learned on the region store (time in the row), the "ViLD" row's student trained and
    tested with them, and the teacher alone on `proposer`'s proposals with the learned prompts (to set
    beside "teacher on ViLD-text's proposals", which uses the hand-written template)."""
    rows = []
    t0 = time.perf_counter()
    prompts = learn_prompts(configs, world, teacher_spec, store, work_dir / "DetPro-prompts", seed)
    prompt_seconds = time.perf_counter() - t0
    vild = dict(next(options for name, options, _ in STUDENTS if name == "ViLD"))
    _, m = train_and_test(Path(configs) / DETPRO_CONFIG,
                          {**world_options(world, teacher_spec, "base"), **(cfg_options or {}), **vild, **store,
                           "model.templates.file": str(prompts)}, work_dir / "DetPro", iters, seed)
    rows.append(BenchRow("detection", DETPRO_ROW, m["det/AP50_novel"], m["det/AP50_base"],
                         time.perf_counter() - t0, f"prompts {prompt_seconds:.0f} s"))
    if progress:
        progress(rows[-1])
    t0 = time.perf_counter()
    m = teacher_on_proposals(lambda img: proposer.detector.proposals([img])[0], teacher, world,
                             templates={"type": "learned", "file": str(prompts)})
    rows.append(BenchRow("detection", DETPRO_TEACHER_ROW, m["AP50_novel"],
                         m["AP50_base"], time.perf_counter() - t0))
    if progress:
        progress(rows[-1])
    return rows


def export_student(model: torch.nn.Module, path: "str | Path") -> int:
    """Save a student's weights alone, in fp16 (a checkpoint of a few MB for the model zoo); returns bytes."""
    state = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_torch_save({"state_dict": state}, path)
    return Path(path).stat().st_size
