"""The synthetic world: deterministic, valid COCO annotations and label maps; the teacher recipe."""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from ovclip.synthetic.bench import KERNEL_VARIABLES
from ovclip.synthetic import NOVEL_SHAPES, SHAPES, caption_sample, make_world, shape_mask

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), seed=3, n_train=12, n_val=6)


def test_generator_is_deterministic(world, tmp_path):
    again = make_world(tmp_path / "again", seed=3, n_train=12, n_val=6)
    other = make_world(tmp_path / "other", seed=4, n_train=12, n_val=6)
    assert digest(Path(world["root"])) == digest(Path(again["root"])) != digest(Path(other["root"]))
    # the same world asked for again is kept as written (parallel bench processes read it meanwhile); other
    # parameters write it anew
    image = Path(again["train_images"]) / "train_00000.png"
    written = image.stat().st_ino  # a file written again is another file (written aside, then renamed)
    assert make_world(tmp_path / "again", seed=3, n_train=12, n_val=6) == again
    assert image.stat().st_ino == written
    make_world(tmp_path / "again", seed=4, n_train=12, n_val=6)
    assert digest(Path(again["root"])) == digest(Path(other["root"]))
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a, b = caption_sample(rng_a), caption_sample(rng_b)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:] and SHAPES[a[2]] in a[1]


def test_annotations_load_in_pycocotools_and_masks_match_boxes(world):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    gt = COCO(world["val"])
    assert len(gt.getImgIds()) == 6 and len(gt.getCatIds()) == len(SHAPES) == 12
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns and all(1 <= len(gt.getAnnIds(imgIds=i)) <= 4 for i in gt.getImgIds())
    for a in anns:
        m = mask_utils.decode(a["segmentation"])
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        assert a["area"] == m.sum()
        label = np.asarray(Image.open(Path(world["val_labels"]) / gt.imgs[a["image_id"]]["file_name"]))
        assert (label[m.astype(bool)] == a["category_id"]).all()  # semantic PNG: class position + 1
    with open(world["vocabulary"]) as f:
        vocab = json.load(f)
    assert [v["name"] for v in vocab if v["split"] == "novel"] == list(NOVEL_SHAPES)


def test_training_annotations_hide_novel_objects_that_stay_in_the_images(world):
    base, full = (json.loads(Path(world[k]).read_text()) for k in ("train_base", "train_all"))
    novel_ids = {SHAPES.index(s) + 1 for s in NOVEL_SHAPES}
    assert not {a["category_id"] for a in base["annotations"]} & novel_ids
    hidden = [a for a in full["annotations"] if a["category_id"] in novel_ids]
    assert hidden and len(base["annotations"]) + len(hidden) == len(full["annotations"])
    label = np.asarray(Image.open(Path(world["train_labels"]) / f"train_{hidden[0]['image_id'] - 1:05d}.png"))
    assert (label == hidden[0]["category_id"]).any()


def test_every_shape_draws_a_distinct_mask():
    masks = [shape_mask(s, 64, 32, 32, 20, 0.3) for s in SHAPES]
    assert all(m.sum() > 200 for m in masks)
    assert len({m.tobytes() for m in masks}) == len(SHAPES)
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        shape_mask("blob", 64, 32, 32, 20, 0.0)


def test_teacher_training_lowers_the_loss_and_loads_as_a_teacher(tmp_path):
    from ovclip.synthetic.tiny_clip import load_synthetic_teacher, train_tiny_clip, zero_shot_accuracy
    r = train_tiny_clip(tmp_path, seed=0, steps=40, batch_size=32, pool_size=320, log_every=0)
    loss = np.asarray(r["loss"])
    assert loss[-8:].mean() < loss[:8].mean() - 0.3, loss.round(2).tolist()
    teacher = load_synthetic_teacher(tmp_path)
    assert teacher.embed_dim == 64 and teacher.image_size == 64
    assert (teacher.resize_mode, teacher.interpolation) == ("squash", "bilinear")  # as its training crops
    cfg = json.loads((tmp_path / "teacher.json").read_text())
    assert cfg["preprocess_cfg"]["resize_mode"] == "squash"  # loaded by spec too
    for key in ("resize_mode", "interpolation"):  # a teacher.json from before it said so
        del cfg["preprocess_cfg"][key]
    (tmp_path / "teacher.json").write_text(json.dumps(cfg))
    teacher = load_synthetic_teacher(tmp_path)
    assert (teacher.resize_mode, teacher.interpolation) == ("squash", "bilinear")
    zs = zero_shot_accuracy(teacher, n_images=4)
    assert zs["crops"] > 0 and 0 <= zs["accuracy"] <= 100
    assert load_synthetic_teacher(tmp_path / "none") is None


def test_a_teacher_can_be_trained_without_captions_in_the_hand_prompts_phrasing(tmp_path):
    from ovclip.prompts import SINGLE_TEMPLATE
    from ovclip.synthetic.tiny_clip import caption_pool, teacher_captions, train_tiny_clip
    from ovclip.synthetic.world import CAPTION_SETS, CAPTION_TEMPLATES
    hand = SINGLE_TEMPLATE[0].split("{}")[0]  # "a photo of a "
    _, default, _ = caption_pool(200, seed=0, size=16)
    _, without, labels = caption_pool(200, seed=0, size=16, captions="no-hand-prompt")
    assert any(c.startswith(hand) for c in default) and not any(c.startswith(hand) for c in without)
    assert all(SHAPES[int(i)] in c for c, i in zip(without, labels))
    assert set(CAPTION_SETS["no-hand-prompt"]) == {t for t in CAPTION_TEMPLATES if not t.startswith(hand)}
    # the default set draws exactly as before the choice existed (the shipped teacher's recipe; pinned from the
    # code before it)
    image, caption, label = caption_sample(np.random.default_rng(5))
    assert (caption, label) == ("a large ring.", 8)
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "40c60c2022069110"
    with pytest.raises(ValueError, match="unknown caption set 'web'.*no-hand-prompt"):
        caption_pool(4, seed=0, size=16, captions="web")
    train_tiny_clip(tmp_path / "t", steps=2, batch_size=4, pool_size=16, log_every=0, captions="no-hand-prompt")
    assert teacher_captions(tmp_path / "t") == "no-hand-prompt"
    assert teacher_captions(ROOT / "model_zoo" / "synthetic") == "default"  # trained before the choice


def test_bench_refuses_a_teacher_of_other_captions(tmp_path, monkeypatch, capsys):
    import shutil
    bench = load_tool("bench_ov")
    monkeypatch.chdir(tmp_path)  # the default --teacher-dir is the repository's, whatever the working folder
    assert (Path(bench.SHIPPED_TEACHER) / "teacher.json").is_file()
    own = tmp_path / "teacher"
    shutil.copytree(ROOT / "model_zoo" / "synthetic", own)
    (own / "training.json").write_text(json.dumps({"captions": "no-hand-prompt"}))
    for extra, message in ((["--teacher-captions", "no-hand-prompt"], "needs a --teacher-dir of its own"),
                           (["--teacher-dir", str(own)], "trained on the caption set 'no-hand-prompt', not 'default'"),
                           (["--threads", "0"], "--threads must be at least 1, not 0"),
                           (["--jobs", "0"], "--jobs must be at least 1, not 0"),
                           (["--resume"], "--resume: no earlier run in")):
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--quick", "--work-dir", str(tmp_path), *extra])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, err[-2000:]
    assert not (tmp_path / "quick").exists()  # refused before any work


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    """The quick bench, every row, in one process (as the README's smoke run)."""
    # --cfg-options reach every detection student's config (a harmless override, to see it arrive)
    work = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, "tools/bench_ov.py", "--quick", "--work-dir", str(work),
                        "--cfg-options", "model.detector.box_detections_per_img=40"], cwd=ROOT,
                       capture_output=True, text=True)  # no time limit: a loaded machine is slow, not wrong
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return work, r.stdout, json.loads((work / "quick" / "results-s0.json").read_text())  # before a test resumes it


def test_bench_quick_runs_end_to_end(quick_bench):
    tmp_path, stdout, saved = quick_bench
    for row in ("ViLD-text", "ViLD", "ViLD-ensemble", "ViLD-image", "teacher on ViLD-text's proposals", "oracle",
                "DetPro (ViLD with learned prompts)", "teacher on ViLD-text's proposals, learned prompts",
                "pseudo-labels (ViLD-text on base + teacher's novel boxes)", "DETR-text (base boxes)",
                "OV-DETR (base + teacher's novel boxes)"):
        assert f"| detection | {row}" in stdout
    for row in ("MaskCLIP (teacher zero-shot)", "MaskCLIP+", "mask proposals", "oracle (novel labels too)"):
        assert f"| segmentation | {row}" in stdout
    # a smoke run judges no target; each row says when it starts, how far its training is, when it tests
    assert "no target is judged" in stdout and "target" not in stdout.replace("no target is judged", "")
    assert not re.search(r"\bmet\b", stdout.split("open-vocabulary transfer")[-1])
    for line in ("    ViLD-text: training 2 iterations", "    ViLD-text: 2/2 iterations", "    ViLD-text: testing",
                 "    MaskCLIP+: training 2 iterations", "    OV-DETR: training 2 iterations"):
        assert line in stdout, line
    assert (tmp_path / "quick" / "students-s0" / "DetPro-prompts" / "prompts.safetensors").is_file()
    assert len(saved["rows"]) == 15 and all(0 <= row["novel"] <= 100 for row in saved["rows"])
    assert saved["cfg_options"] == {"model.detector.box_detections_per_img": 40}
    assert saved["numerics"]["threads"] == 1  # the default, whatever the machine has
    assert all(saved["numerics"][k] == os.environ.get(k) for k in KERNEL_VARIABLES)  # recorded, not set
    students = tmp_path / "quick" / "students-s0"
    pseudo = json.loads((students / "pseudo-labels" / "pseudo_boxes.json").read_text())  # VL-PLM's row
    assert len(pseudo["images"]) == 8 and all(a["pseudo"] for a in pseudo["annotations"])
    assert (students / "OV-DETR" / "class_bank.safetensors").is_file()  # OV-DETR's image conditions
    for name in ("ViLD-text", "ViLD", "ViLD-ensemble", "oracle"):
        dumped = Config.fromfile(str(students / name / "vild_teacher-rn_fpn_synthetic-cpu.py"))
        assert dumped.model.detector.box_detections_per_img == 40, name
    # ViLD and ViLD-ensemble distilled the teacher's embeddings of ViLD-text's top proposals (ViLD's
    # offline recipe; the model refuses store distillation without regions in its data)
    from ovclip.store import FeatureStore
    from ovd.bench import distill_settings
    store = FeatureStore(tmp_path / "quick" / "students-s0" / "regions" / "store")
    assert len(store) == 8 and store.meta["boxes"] == "proposals"
    assert all(0 < len(store[i][0]) <= distill_settings(ROOT / "configs")["num_regions"] == 32 for i in store.image_ids)


def test_bench_units_and_resume_give_the_rows_of_one_process(quick_bench, capsys):
    # A unit of a parallel bench (what --jobs 2 runs in a process of its own: this tool with the run's id) trains
    # ViLD and ViLD-ensemble on the ViLD-text that the one-process run trained and recorded: the same weights.
    # Then --resume keeps a finished row, and refuses other settings. (In this process: a subprocess per call
    # spends seconds on imports.)
    import torch
    work, _, before = quick_bench
    bench, threads = load_tool("bench_ov"), torch.get_num_threads()
    students, options = work / "quick" / "students-s0", {"model.detector.box_detections_per_img": 40}
    trained = {name: torch.load(students / name / "iter_2.pth", weights_only=False)["state_dict"]
               for name in ("ViLD", "ViLD-ensemble")}
    for name in trained:
        (students / name / "bench_row.json").unlink()
    run_id = json.loads((work / "quick" / "run.json").read_text())["id"]
    common = ["--quick", "--work-dir", str(work), "--configs", str(ROOT / "configs"), "--task", "detection"]
    try:
        assert bench.main([*common, "--run-id", run_id, "--results-tag", "ViLD", "--rows", "ViLD",
                           "--cfg-options-json", json.dumps(options)]) == 0
        out = capsys.readouterr().out
        assert re.search(r"    ViLD-text: finished earlier in this run \(trained and tested in \d+ s\), loaded from "
                         r"iter_2\.pth", out) and "    ViLD: training 2 iterations" in out
        for name, state in trained.items():
            again = torch.load(students / name / "iter_2.pth", weights_only=False)["state_dict"]
            assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state), name
        unit = json.loads((work / "quick" / "results-s0-ViLD.json").read_text())
        assert [r["name"] for r in unit["rows"]] == ["ViLD-text", "ViLD", "ViLD-ensemble",
                                                     "ViLD-image (ensemble model's image head)"]
        assert unit["cfg_options"] == options and "| detection |" not in out  # the run prints the table
        # --resume keeps the oracle the one-process run finished: loaded, not trained, the same numbers
        checkpoint = students / "oracle" / "iter_2.pth"
        written = checkpoint.stat().st_mtime_ns
        oracle = next(row for row in before["rows"] if row["name"] == "oracle (novel boxes too)")
        assert bench.main([*common, "--resume", "--rows", "oracle", "--cfg-options",
                           "model.detector.box_detections_per_img=40"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"    oracle: finished earlier in this run \(trained", out) and "training" not in out
        after = json.loads((work / "quick" / "results-s0.json").read_text())
        assert [(r["name"], r["novel"], r["base"]) for r in after["rows"]] == [
            (oracle["name"], oracle["novel"], oracle["base"])]
        assert checkpoint.stat().st_mtime_ns == written
        # other settings would give other rows: refused, naming what changed
        for changed, name in ((["--threads", "2", "--cfg-options", "model.detector.box_detections_per_img=40"],
                               "threads"), ([], "cfg_options")):
            with pytest.raises(SystemExit) as exit_:
                bench.main([*common, "--resume", "--rows", "oracle", *changed])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and f"--resume: the last run in {work / 'quick'} had other settings " \
                f"({name}:" in err, err[-2000:]
    finally:
        torch.set_num_threads(threads)


def test_parallel_bench_merges_its_units_records():
    bench = load_tool("bench_ov")
    row = {"task": "detection", "novel": 1.0, "base": 2.0, "note": ""}
    records = {"s0-ViLD-text": ["ViLD-text"], "s0-oracle": ["oracle (novel boxes too)"],
               "s0-ViLD": ["ViLD-text", "ViLD-ensemble", "ViLD"], "s1-oracle": ["oracle (novel boxes too)"]}
    records = {name: {"seed": int(name[1]), "numerics": {"threads": 1},
                      "rows": [{**row, "name": r, "seconds": len(name)} for r in rows]}
               for name, rows in records.items()}
    units = [bench.BenchUnit(name, []) for name in [*records, "s0-DETR-text"]]
    merged = bench.merged_results(0, units, records, {"s0-ViLD-text": 10.0, "s0-oracle": 20.0, "s0-ViLD": 30.0})
    # each row once, from the first unit that has it, in the order one process runs them; unfinished units left out
    assert [(r["name"], r["seconds"]) for r in merged["rows"]] == [
        ("ViLD-text", 12), ("ViLD", 7), ("ViLD-ensemble", 7), ("oracle (novel boxes too)", 9)]
    assert merged["units"] == {"s0-ViLD-text": 10.0, "s0-oracle": 20.0, "s0-ViLD": 30.0}
    assert merged["numerics"] == {"threads": 1} and bench.merged_results(2, units, records, {}) == {}


def test_parallel_bench_plan():
    import argparse
    bench = load_tool("bench_ov")
    args = argparse.Namespace(seed=[0, -1], task=["detection", "segmentation"], rows=None, threads=1,
                              work_dir="w", teacher_captions="default", configs="c", run_id="r", quick=False,
                              debug=True, cfg_options={"model.detector.box_detections_per_img": [40, "a,b"]})
    units = bench.plan_units(args, Path("t"))
    # longest path first: every seed's ViLD-text, the chains that wait on it (the longest first), the rest
    assert [(u.name, u.after) for u in units] == [
        ("s0-ViLD-text", ()), ("s-1-ViLD-text", ()),
        ("s0-ViLD-teacher-DetPro", ("s0-ViLD-text",)), ("s0-pseudo-labels-OV-DETR", ("s0-ViLD-text",)),
        ("s-1-ViLD-teacher-DetPro", ("s-1-ViLD-text",)), ("s-1-pseudo-labels-OV-DETR", ("s-1-ViLD-text",)),
        ("s0-DETR-text", ()), ("s0-oracle", ()), ("s0-segmentation", ()),
        ("s-1-DETR-text", ()), ("s-1-oracle", ()), ("s-1-segmentation", ())]
    command = units[2].command
    # the parsed options travel as they are, whatever way they were typed; --debug travels too
    assert json.loads(command[command.index("--cfg-options-json") + 1]) == args.cfg_options and "--debug" in command
    assert command[command.index("--rows") + 1:] == ["ViLD", "teacher", "DetPro"]
    args.rows, args.task = ["oracle", "OV-DETR"], ["detection"]
    assert [(u.name, u.after) for u in bench.plan_units(args, Path("t"))] == [
        ("s0-ViLD-text", ()), ("s-1-ViLD-text", ()), ("s0-OV-DETR", ("s0-ViLD-text",)),
        ("s-1-OV-DETR", ("s-1-ViLD-text",)), ("s0-oracle", ()), ("s-1-oracle", ())]


def test_bench_schedule_model_runs_units_as_run_units_does(capsys):
    import importlib.util
    from ovclip.synthetic.bench import BenchUnit
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_schedule.py"
    spec = importlib.util.spec_from_file_location("bench_schedule", path)
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    # s0-a (3 min), s0-b after it (2), s0-c (4): one process 9; two: a and c at once, b when a ends (3 + 2)
    units = [BenchUnit("s0-a", []), BenchUnit("s0-b", [], ("s0-a",)), BenchUnit("s0-c", [])]
    costs = {"a": 3.0, "b": 2.0, "c": 4.0}
    assert [model.makespan(units, costs, jobs) for jobs in (1, 2, 3)] == [9.0, 5.0, 5.0]
    # list order decides among the ready: c first, then a, and b after a: 4 + 3 + 2 on one process, 7 on two
    assert model.makespan([units[2], units[0], units[1]], costs, 2) == 5.0
    assert model.makespan([units[2], units[1], units[0]], {"a": 3.0, "b": 2.0, "c": 1.0}, 1) == 6.0
    # the tool's own plan: 6 units a seed, each with a cost
    assert len(model.plan(2)) == 12 and all(model.tag(u) in model.COSTS for u in model.plan(2))
    # the table: one seed on one process takes the sum of its units' costs, in either order
    assert model.main(["--seeds", "1", "--jobs", "1", "--cost", "oracle=20"]) == 0
    total = sum(model.COSTS.values()) + 20 - model.COSTS["oracle"]
    assert f"| 1 | {total:.0f} | {total:.0f} | {total:.0f} | {total:.0f} |" in capsys.readouterr().out


def test_bench_units_run_in_order_of_their_needs(tmp_path, capsys):
    from ovclip.synthetic.bench import BenchUnit, run_units

    def unit(name, code, after=()):
        return BenchUnit(name, [sys.executable, "-c", f"import time; {code}"], after)
    # "b" and "c" need "a"; "d" needs "fail", which fails, so "d" is skipped; at most 2 at once (each unit
    # notes when it starts and ends)
    stamp = "open({!r}, 'a').write('{}' + chr(10))"
    spans = "open({!r}, 'a').write(f'{{time.time()}} 1' + chr(10)); time.sleep(0.3); " \
            "open({!r}, 'a').write(f'{{time.time()}} -1' + chr(10)); "
    spans = spans.format(*[str(tmp_path / "spans")] * 2)
    units = [unit("a", spans + stamp.format(str(tmp_path / "order"), "a")),
             unit("b", spans + stamp.format(str(tmp_path / "order"), "b"), ("a",)),
             unit("fail", spans + "raise SystemExit(3)"),
             unit("d", "print('never')", ("fail",)),
             unit("c", spans + "print('hello from c')", ("a",))]
    done = []
    failed = run_units(units, 2, tmp_path / "logs", on_done=lambda u, seconds: done.append(u.name), poll_seconds=0.05)
    assert failed == ["fail", "d"] and sorted(done) == ["a", "b", "c"]
    assert (tmp_path / "order").read_text().split() == ["a", "b"]
    events = sorted((float(t), int(step)) for t, step in (line.split() for line in (tmp_path / "spans").open()))
    at_once = [sum(step for _, step in events[:i + 1]) for i in range(len(events))]
    assert len(events) == 8 and max(at_once) <= 2
    assert (tmp_path / "logs" / "c.log").read_text() == "hello from c\n"
    out = capsys.readouterr().out
    assert "fail: FAILED (exit status 3)" in out and "d: skipped (a unit it needs failed)" in out
    assert not (tmp_path / "logs" / "d.log").exists()
    with pytest.raises(RuntimeError, match="not planned"):
        run_units([unit("x", "pass", ("nowhere",))], 1, tmp_path / "logs")


def test_shipped_teacher_and_student_work_out_of_the_box():
    from ovclip.synthetic.tiny_clip import load_synthetic_teacher, zero_shot_accuracy
    from ovd import Detector
    teacher = load_synthetic_teacher(ROOT / "model_zoo" / "synthetic")
    zs = zero_shot_accuracy(teacher, seed=99, n_images=40)
    assert zs["accuracy"] > 80 and zs["novel"] > 70, zs  # 91% on 150 images when it was built
    det = Detector.from_config(ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py",
                               ROOT / "model_zoo/synthetic/vild_teacher-rn_synthetic.pth")
    out = det.predict(ROOT / "model_zoo/synthetic/demo.png", "diamond, triangle, hexagon, circle, star", score_thr=0.1)
    assert len(out) >= 3 and out.names[0] == "diamond" and out.scores[0] > 0.3
    # The same vocabulary text again is not parsed again (at 21k classes parsing cost more than detecting);
    # another one is, and so is the first one once the model was switched behind the Detector's back.
    import torch

    import ovd.api
    parsed = []
    real = ovd.api.load_vocabulary
    ovd.api.load_vocabulary = lambda spec: parsed.append(spec) or real(spec)
    try:
        again = det.predict(ROOT / "model_zoo/synthetic/demo.png", "diamond, triangle, hexagon, circle, star",
                            score_thr=0.1)
        assert not parsed and again.names == out.names and torch.equal(again.scores, out.scores)
        det.predict(ROOT / "model_zoo/synthetic/demo.png", ["circle", "star"])
        det.model.set_vocabulary("square, star")
        det.predict(ROOT / "model_zoo/synthetic/demo.png", ["circle", "star"])
        assert parsed == [["circle", "star"], ["circle", "star"]]
        assert det.vocabulary.names == ["circle", "star"]
    finally:
        ovd.api.load_vocabulary = real


def test_nms_on_the_best_candidates_keeps_the_demo_detections(monkeypatch):
    import torch

    import ovd.models.postprocess as postprocess
    from ovd import Detector
    det = Detector.from_config(ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py",
                               ROOT / "model_zoo/synthetic/vild_teacher-rn_synthetic.pth")
    heads = det.model.detector.roi_heads
    assert heads.pre_nms_top_n == 1000
    nms_sizes = []
    real = postprocess.box_ops.batched_nms
    monkeypatch.setattr(postprocess.box_ops, "batched_nms", lambda b, s, l, t: nms_sizes.append(len(s)) or real(b, s, l, t))
    vocabulary = "circle, square, triangle, star, hexagon, diamond".split(", ") + [f"thing {i}" for i in range(300)]
    out = {}
    for pre in (None, 1000, 30):
        heads.pre_nms_top_n = pre
        out[pre] = det.predict(ROOT / "model_zoo/synthetic/demo.png", vocabulary)
    candidates = max(nms_sizes)
    assert candidates > 1000 and 1000 in nms_sizes, "the cap is used: the image has more candidates than it"
    assert len(out[None]) == heads.detections_per_img
    for pre in (1000, 30):
        assert out[pre].names == out[None].names and torch.equal(out[pre].boxes, out[None].boxes)
        assert torch.equal(out[pre].scores, out[None].scores)


def test_region_store_is_rebuilt_from_the_model_it_is_given(world, tmp_path):
    """A second bench run into the same work dir distils its own ViLD-text's regions, not the last run's."""
    from types import SimpleNamespace

    import torch

    from ovclip.store import FeatureStore
    from ovclip.synthetic.tiny_clip import teacher_spec
    from ovd.bench import region_store

    def fake_student(box):
        return SimpleNamespace(detector=SimpleNamespace(
            proposals=lambda images: [(torch.tensor([box], dtype=torch.float32), torch.tensor([0.9]))]))
    spec = teacher_spec(ROOT / "model_zoo" / "synthetic")
    stored = []
    for box in ([4.0, 4.0, 60.0, 60.0], [50.0, 40.0, 120.0, 110.0]):
        opts = region_store(fake_student(box), world, spec, tmp_path / "regions", num_regions=4)
        store = FeatureStore(opts["train_dataloader.dataset.feature_store"])
        assert len(store) == 12
        boxes, emb = store[store.image_ids[0]]
        assert torch.as_tensor(boxes).tolist() == [box]
        stored.append(torch.as_tensor(emb))
    assert not torch.allclose(stored[0], stored[1])


def test_the_packaged_synthetic_vocabulary_is_the_worlds():
    """The teacher core reads the world's vocabulary as data; it must say what the world generates."""
    from ovclip.synthetic import vocabulary_entries
    from ovclip.vocabulary import load_vocabulary
    vocab = load_vocabulary("synthetic-shapes")
    entries = vocabulary_entries()
    assert [n[0] for n in vocab.synonyms] == [e["name"] for e in entries] == list(SHAPES)
    assert list(vocab.ids) == [e["id"] for e in entries]
    assert list(vocab.split) == [e["split"] for e in entries]
    assert [vocab.names[i] for i in vocab.novel] == list(NOVEL_SHAPES)
