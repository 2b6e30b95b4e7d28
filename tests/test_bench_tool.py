"""The CPU benchmark tool (tools/bench_ov.py): the quick bench end to end, a parallel bench's units (their plan,
their order, what they share), --resume, and the model of the bench's wall time on N cores."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from ovclip.synthetic.bench import KERNEL_VARIABLES

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


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


# harmless overrides of the ViLD family's config and the DETR rows', to see them arrive (every run in the quick
# bench's work dir gives them: --resume refuses other settings)
OVERRIDES = ["--cfg-options", "model.detector.box_detections_per_img=40",
             "--detr-cfg-options", "model.detections_per_img=30"]


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    """The quick bench, every row, in one process (as the README's smoke run)."""
    work = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, "tools/bench_ov.py", "--quick", "--work-dir", str(work), *OVERRIDES], cwd=ROOT,
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
    assert saved["detr_cfg_options"] == {"model.detections_per_img": 30}
    assert saved["numerics"]["threads"] == 1  # the default, whatever the machine has
    assert all(saved["numerics"][k] == os.environ.get(k) for k in KERNEL_VARIABLES)  # recorded, not set
    students = tmp_path / "quick" / "students-s0"
    pseudo = json.loads((students / "pseudo-labels" / "pseudo_boxes.json").read_text())  # VL-PLM's row
    assert len(pseudo["images"]) == 8 and all(a["pseudo"] for a in pseudo["annotations"])
    assert (students / "OV-DETR" / "class_bank.safetensors").is_file()  # OV-DETR's image conditions
    for name in ("ViLD-text", "ViLD", "ViLD-ensemble", "oracle"):
        dumped = Config.fromfile(str(students / name / "vild_teacher-rn_fpn_synthetic-cpu.py"))
        assert dumped.model.detector.box_detections_per_img == 40, name
    for name in ("DETR-text", "OV-DETR"):
        dumped = Config.fromfile(str(students / name / "ovdetr_teacher-rn_synthetic-cpu.py"))
        assert dumped.model.detections_per_img == 30 and "detector" not in dumped.model, name
    # ViLD and ViLD-ensemble distilled the teacher's embeddings of ViLD-text's top proposals (ViLD's
    # offline recipe; the model refuses store distillation without regions in its data)
    from ovclip.store import FeatureStore
    from ovd.bench import distill_settings
    store = FeatureStore(tmp_path / "quick" / "students-s0" / "regions" / "store")
    assert len(store) == 8 and store.meta["boxes"] == "proposals"
    assert all(0 < len(store[i][0]) <= distill_settings(ROOT / "configs")["num_regions"] == 32 for i in store.image_ids)


def test_bench_units_and_resume_give_the_rows_of_one_process(quick_bench, capsys):
    # Units of a parallel bench (what --jobs 2 runs in processes of their own: this tool with the run's id): the
    # "regions" unit makes the region store again from the ViLD-text the one-process run trained and recorded (the
    # same store); the ViLD-ensemble unit trains on it (the same weights; the store not made again). Then --resume
    # keeps a finished row, and refuses other settings. (In this process: a subprocess per call spends seconds on
    # imports.)
    import torch
    work, _, before = quick_bench
    bench, threads = load_tool("bench_ov"), torch.get_num_threads()
    students, options = work / "quick" / "students-s0", {"model.detector.box_detections_per_img": 40}
    trained = torch.load(students / "ViLD-ensemble" / "iter_2.pth", weights_only=False)["state_dict"]
    (students / "ViLD-ensemble" / "bench_row.json").unlink()

    def stored():  # each image's boxes and embeddings (how they fall into shards depends on time: flushes)
        from ovclip.store import FeatureStore
        store = FeatureStore(students / "regions" / "store")
        return {i: [torch.as_tensor(t) for t in store[i]] for i in store.image_ids}
    store = stored()
    (students / "regions.made.json").unlink()
    run_id = json.loads((work / "quick" / "run.json").read_text())["id"]
    common = ["--quick", "--work-dir", str(work), "--configs", str(ROOT / "configs"), "--task", "detection"]
    unit = [*common, "--run-id", run_id, "--cfg-options-json", json.dumps(options)]
    try:
        # a unit that uses the store does not make it (other units may be reading it): it says which unit does
        with pytest.raises(RuntimeError, match=r"regions: not made .*the unit 'regions' made before it"):
            bench.main([*unit, "--results-tag", "ViLD-ensemble", "--rows", "ViLD-ensemble"])
        assert bench.main([*unit, "--results-tag", "regions", "--rows", "ViLD-text", "--make", "regions"]) == 0
        assert re.search(r"    regions: made in \d+ s", capsys.readouterr().out)
        again = stored()
        assert store and again.keys() == store.keys() and all(
            torch.equal(x, y) for i in store for x, y in zip(again[i], store[i], strict=True))
        shards = {p: p.stat().st_mtime_ns for p in (students / "regions").rglob("*") if p.is_file()}
        assert bench.main([*unit, "--results-tag", "ViLD-ensemble", "--rows", "ViLD-ensemble"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"    ViLD-text: finished earlier in this run \(trained and tested in \d+ s\), loaded from "
                         r"iter_2\.pth", out) and "    ViLD-ensemble: training 2 iterations" in out
        assert re.search(r"    regions: made earlier in this run \(in \d+ s\), reused", out)
        assert shards and {p: p.stat().st_mtime_ns for p in shards} == shards
        again = torch.load(students / "ViLD-ensemble" / "iter_2.pth", weights_only=False)["state_dict"]
        assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)
        unit = json.loads((work / "quick" / "results-s0-ViLD-ensemble.json").read_text())
        assert [r["name"] for r in unit["rows"]] == ["ViLD-text", "ViLD-ensemble",
                                                     "ViLD-image (ensemble model's image head)"]
        assert unit["cfg_options"] == options and "| detection |" not in out  # the run prints the table
        # --resume keeps the oracle the one-process run finished: loaded, not trained, the same numbers
        checkpoint = students / "oracle" / "iter_2.pth"
        written = checkpoint.stat().st_mtime_ns
        oracle = next(row for row in before["rows"] if row["name"] == "oracle (novel boxes too)")
        assert bench.main([*common, "--resume", "--rows", "oracle", *OVERRIDES]) == 0
        out = capsys.readouterr().out
        assert re.search(r"    oracle: finished earlier in this run \(trained", out) and "training" not in out
        after = json.loads((work / "quick" / "results-s0.json").read_text())
        assert [(r["name"], r["novel"], r["base"]) for r in after["rows"]] == [
            (oracle["name"], oracle["novel"], oracle["base"])]
        assert checkpoint.stat().st_mtime_ns == written
        # other settings would give other rows: refused, naming what changed
        for changed, name in ((["--threads", "2", *OVERRIDES], "threads"), (OVERRIDES[2:], "cfg_options"),
                              (OVERRIDES[:2], "detr_cfg_options")):
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
               "s0-ViLD-ensemble": ["ViLD-text", "ViLD-ensemble"], "s0-ViLD": ["ViLD-text", "ViLD"],
               "s0-regions": ["ViLD-text"], "s1-oracle": ["oracle (novel boxes too)"]}
    records = {name: {"seed": int(name[1]), "numerics": {"threads": 1},
                      "rows": [{**row, "name": r, "seconds": len(name)} for r in rows]}
               for name, rows in records.items()}
    units = [bench.BenchUnit(name, []) for name in [*records, "s0-DETR-text"]]
    seconds = {"s0-ViLD-text": 10.0, "s0-oracle": 20.0, "s0-ViLD-ensemble": 30.0, "s0-ViLD": 40.0,
               "s0-regions": 5.0}
    merged = bench.merged_results(0, units, records, seconds)
    # each row once, from the first unit that has it, in the order one process runs them; unfinished units left
    # out; a unit that made something and gave no row of its own is in the units' times
    assert [(r["name"], r["seconds"]) for r in merged["rows"]] == [
        ("ViLD-text", 12), ("ViLD", 7), ("ViLD-ensemble", 16), ("oracle (novel boxes too)", 9)]
    assert merged["units"] == seconds
    assert merged["numerics"] == {"threads": 1} and bench.merged_results(2, units, records, {}) == {}


def test_parallel_bench_plan():
    import argparse
    bench = load_tool("bench_ov")
    args = argparse.Namespace(seed=[0, -1], task=["detection", "segmentation"], rows=None, threads=1,
                              work_dir="w", teacher_captions="default", configs="c", run_id="r", quick=False,
                              debug=True, cfg_options={"model.detector.box_detections_per_img": [40, "a,b"]},
                              detr_cfg_options={"model.min_size": 128})
    units = bench.plan_units(args, Path("t"))
    # longest path first: every seed's ViLD-text; what rows share of its proposals, made once (the labels before
    # the store: OV-DETR's path is the longer); the rows that use them, longest first, seed after seed; the rest
    assert [(u.name, u.after) for u in units] == [
        ("s0-ViLD-text", ()), ("s-1-ViLD-text", ()),
        ("s0-labels", ("s0-ViLD-text",)), ("s0-regions", ("s0-ViLD-text",)),
        ("s-1-labels", ("s-1-ViLD-text",)), ("s-1-regions", ("s-1-ViLD-text",)),
        ("s0-OV-DETR", ("s0-labels",)), ("s-1-OV-DETR", ("s-1-labels",)),
        ("s0-DetPro", ("s0-regions",)), ("s-1-DetPro", ("s-1-regions",)),
        ("s0-ViLD", ("s0-regions",)), ("s-1-ViLD", ("s-1-regions",)),
        ("s0-ViLD-ensemble", ("s0-regions",)), ("s-1-ViLD-ensemble", ("s-1-regions",)),
        ("s0-pseudo-labels", ("s0-labels",)), ("s-1-pseudo-labels", ("s-1-labels",)),
        ("s0-teacher", ("s0-ViLD-text",)), ("s-1-teacher", ("s-1-ViLD-text",)),
        ("s0-DETR-text", ()), ("s0-oracle", ()), ("s0-segmentation", ()),
        ("s-1-DETR-text", ()), ("s-1-oracle", ()), ("s-1-segmentation", ())]
    command = units[2].command
    # the parsed options travel as they are, whatever way they were typed; --debug travels too
    assert json.loads(command[command.index("--cfg-options-json") + 1]) == args.cfg_options and "--debug" in command
    assert json.loads(command[command.index("--detr-cfg-options-json") + 1]) == args.detr_cfg_options
    assert command[command.index("--rows") + 1:] == ["ViLD-text", "--make", "labels"]
    assert command[command.index("--seed") + 1] == "0" and command[command.index("--results-tag") + 1] == "labels"
    assert units[6].command[units[6].command.index("--rows") + 1:] == ["OV-DETR"]
    # only what the rows asked for use: the labels for OV-DETR, no store; ViLD-text for the teacher alone
    args.rows, args.task = ["oracle", "OV-DETR"], ["detection"]
    assert [(u.name, u.after) for u in bench.plan_units(args, Path("t"))] == [
        ("s0-ViLD-text", ()), ("s-1-ViLD-text", ()), ("s0-labels", ("s0-ViLD-text",)),
        ("s-1-labels", ("s-1-ViLD-text",)), ("s0-OV-DETR", ("s0-labels",)), ("s-1-OV-DETR", ("s-1-labels",)),
        ("s0-oracle", ()), ("s-1-oracle", ())]
    args.rows, args.seed = ["teacher", "DETR-text"], [0]
    assert [(u.name, u.after) for u in bench.plan_units(args, Path("t"))] == [
        ("s0-ViLD-text", ()), ("s0-teacher", ("s0-ViLD-text",)), ("s0-DETR-text", ())]


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
    assert model.longest_path(units, costs) == (5.0, ["s0-a", "s0-b"])
    assert model.longest_path(units, {**costs, "c": 6.0}) == (6.0, ["s0-c"])
    # list order decides among the ready: c first, then a, and b after a: 4 + 3 + 2 on one process, 7 on two
    assert model.makespan([units[2], units[0], units[1]], costs, 2) == 5.0
    assert model.makespan([units[2], units[1], units[0]], {"a": 3.0, "b": 2.0, "c": 1.0}, 1) == 6.0
    # the tool's own plan: 12 units a seed, each with a cost
    assert len(model.plan(2)) == 24 and all(model.tag(u) in model.COSTS for u in model.plan(2))
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


def test_parallel_bench_units_make_what_one_process_made(quick_bench):
    # --jobs 2 end to end, its units processes of their own: resumed in the one-process run's work dir with the
    # pseudo-labels and the row trained on them forgotten, ViLD-text is loaded, the "labels" unit labels the train
    # images again and the row's unit trains on what it made: the same proposals, labels and weights as one
    # process made. (The other units' rows are the one-process run's: tests above.)
    import torch
    work, _, before = quick_bench
    folder = work / "quick" / "students-s0" / "pseudo-labels"
    made = {name: json.loads((folder / name).read_text()) for name in ("proposals.json", "pseudo_boxes.json")}
    trained = torch.load(folder / "student" / "iter_2.pth", weights_only=False)["state_dict"]
    (folder / "pseudo_boxes.made.json").unlink()
    (folder / "student" / "bench_row.json").unlink()
    r = subprocess.run([sys.executable, "tools/bench_ov.py", "--quick", "--work-dir", str(work), "--resume", "--jobs",
                        "2", "--task", "detection", "--rows", "pseudo-labels", *OVERRIDES], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert re.search(r"s0-ViLD-text: started.*s0-labels: started.*s0-pseudo-labels: started", r.stdout, re.S)
    logs = work / "quick" / "logs"
    assert re.search(r"    labels: made in \d+ s", (logs / "s0-labels.log").read_text())
    row_log = (logs / "s0-pseudo-labels.log").read_text()
    assert re.search(r"    labels: made earlier in this run \(in \d+ s\), reused", row_log)
    assert "    student: training 2 iterations" in row_log and "ViLD-text: training" not in row_log
    assert {name: json.loads((folder / name).read_text()) for name in made} == made
    again = torch.load(folder / "student" / "iter_2.pth", weights_only=False)["state_dict"]
    assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)
    merged = json.loads((work / "quick" / "results-s0.json").read_text())
    rows = {r["name"]: (r["novel"], r["base"], r["note"].split("; labelling")[0]) for r in before["rows"]}
    assert [(r["name"], (r["novel"], r["base"], r["note"].split("; labelling")[0])) for r in merged["rows"]] == [
        (name, rows[name]) for name in ("ViLD-text", "pseudo-labels (ViLD-text on base + teacher's novel boxes)")]
    assert set(merged["units"]) == {"s0-ViLD-text", "s0-labels", "s0-pseudo-labels"}


def test_made_once_makes_a_thing_once_a_run(tmp_path, capsys):
    import torch
    from ovclip.synthetic.bench import bench_run, made_once
    made, record = [], tmp_path / "thing.made.json"

    def make(value):
        def run():
            made.append(value)
            return [value, 1]
        return run
    # outside a bench run: always made, nothing recorded, the key not asked for
    assert made_once("thing", record, lambda: 1 / 0, make("a")) == ["a", 1] and not record.exists()
    threads = torch.get_num_threads()
    try:
        with bench_run("r1"):
            assert made_once("thing", record, lambda: {"k": 1}, make("b")) == ["b", 1]
            assert re.search(r"    thing: made in \d+ s", capsys.readouterr().out)
            assert made_once("thing", record, lambda: {"k": 1}, make("c")) == ["b", 1]  # recorded: not made
            assert "    thing: made earlier in this run (in 0 s), reused" in capsys.readouterr().out
            assert made_once("thing", record, lambda: {"k": 2}, make("d")) == ["d", 1]  # another key
            torch.set_num_threads(threads + 1)  # other sums: made again
            assert made_once("thing", record, lambda: {"k": 2}, make("e")) == ["e", 1]
            # what it made is gone: made again
            assert made_once("thing", record, lambda: {"k": 2}, make("x"), [tmp_path / "gone"]) == ["x", 1]
            assert made_once("thing", record, lambda: {"k": 2}, make("y"), [tmp_path]) == ["x", 1]
        with bench_run("r2"):  # another run
            assert made_once("thing", record, lambda: {"k": 2}, make("f")) == ["f", 1]
            with pytest.raises(ZeroDivisionError):  # a make that fails leaves no record: made by the next call
                made_once("thing", record, lambda: {"k": 3}, lambda: 1 / 0)
            assert not record.exists()
            assert made_once("thing", record, lambda: {"k": 3}, make("g")) == ["g", 1]
        # a unit of a parallel bench makes only what it is there to make; it uses the rest, or says why not
        with bench_run("r2", may_make=["other"]):
            assert made_once("thing", record, lambda: {"k": 3}, make("h")) == ["g", 1]
            for key, outputs, why in (({"k": 4}, [], "made for another model, settings or run"),
                                      ({"k": 3}, [tmp_path / "gone"], "made, but its files are gone")):
                with pytest.raises(RuntimeError, match=f"thing: {why} .*the unit 'thing' made before it"):
                    made_once("thing", record, lambda: key, make("i"), outputs)
            record.unlink()
            with pytest.raises(RuntimeError, match="thing: not made"):
                made_once("thing", record, lambda: {"k": 3}, make("i"))
        with bench_run("r2", may_make=["thing"]):
            assert made_once("thing", record, lambda: {"k": 3}, make("j")) == ["j", 1]
    finally:
        torch.set_num_threads(threads)
    assert made == ["a", "b", "d", "e", "x", "f", "g", "j"]


def test_weights_digest_names_a_models_state():
    import copy

    import torch
    from ovclip.synthetic.bench import weights_digest
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    digest = weights_digest(model)
    assert weights_digest(copy.deepcopy(model)) == digest and len(digest) == 16
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[0].weight[1, 2] = torch.nextafter(changed[0].weight[1, 2], torch.tensor(2.0))  # one ulp
    assert weights_digest(changed) != digest
    changed = copy.deepcopy(model)
    changed[1].running_mean += 1  # a buffer
    assert weights_digest(changed) != digest
    assert weights_digest(copy.deepcopy(model).to(torch.bfloat16)) != digest  # another dtype, hashed as its bytes
    renamed = torch.nn.Sequential(torch.nn.Identity(), *copy.deepcopy(model))
    assert weights_digest(renamed) != digest
