"""ViLD through mmengine: training from config, resume after a kill, test / demo tools, the Python API."""
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from ovclip.options import ConfigError
from ovd import Detector
from ovd.engine import CheckpointError, load_checkpoint_file, load_config, model_state_dict
from ovd.models.detector import DistillConfigError
from ovd.registry import HOOKS
from tests.killing import write_killed_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "vild" / "vild_r18_fpn_tiny_shapes-cpu.py")
# 20 iterations of training (the `trained` fixture) leave the base classes' scores near 1e-5, the text
# head's background taking the rest: keep every box for the tests of the tools' plumbing
LOW_SCORES = "model.detector.box_score_thresh=0.0"


def runner_for(tmp_path, name, validate=False, **options):
    """The tiny CPU config as a Runner config writing into tmp_path (quiet, uniquely named)."""
    opts = {"experiment_name": f"{name}-{tmp_path.name}", "log_level": "WARNING", **options}
    cfg = load_config(CONFIG, opts, work_dir=str(tmp_path / name))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        ds = cfg[key].dataset
        ds.ann_file, ds.img_dir, ds.vocabulary = (str(ROOT / p) for p in (ds.ann_file, ds.img_dir, ds.vocabulary))
    for key in ("val_evaluator", "test_evaluator"):
        cfg[key].ann_file, cfg[key].vocabulary = str(ROOT / cfg[key].ann_file), str(ROOT / cfg[key].vocabulary)
    cfg.model.vocabulary = str(ROOT / cfg.model.vocabulary)
    if not validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """20 iterations of the tiny config with online distillation: (runner, work dir)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = runner_for(tmp, "run", validate=True, **{"train_cfg.max_iters": 20, "default_hooks.logger.interval": 1})
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, Path(cfg.work_dir)


def test_training_from_config_lowers_the_loss_and_distills_online(trained):
    runner, work_dir = trained
    loss = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(loss) == 20 and np.isfinite(loss).all()
    assert loss[-5:].mean() < 0.5 * loss[:5].mean(), loss.round(2).tolist()
    image_loss = runner.message_hub.get_scalar("train/loss_image").data[0]
    assert (image_loss > 0).all()
    assert {"iter_10.pth", "iter_20.pth"} <= {p.name for p in work_dir.iterdir()}
    # The checkpoint is tensors and plain data only: it loads with weights_only=True.
    ckpt = load_checkpoint_file(work_dir / "iter_20.pth")
    assert ckpt["meta"]["iter"] == 20 and "optimizer" in ckpt and "message_hub" in ckpt
    assert not any(k.startswith("teacher") for k in ckpt["state_dict"])


def test_store_distillation_needs_a_store_and_uses_it(tmp_path):
    cfg = runner_for(tmp_path, "nostore", **{"model.distill.source": "store", "train_cfg.max_iters": 1})
    with pytest.raises(DistillConfigError, match="feature_store"):
        Runner.from_cfg(cfg).train()
    store = tmp_path / "store"
    subprocess.run([sys.executable, "tools/precompute.py", "configs/precompute/example_tiny.py", "--out", str(store),
                    "--no-progress"], cwd=ROOT, check=True, capture_output=True)
    cfg = runner_for(tmp_path, "store", **{"model.distill.source": "store", "train_cfg.max_iters": 2,
                                           "default_hooks.logger.interval": 1})
    cfg.train_dataloader.dataset.feature_store = str(store)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert (runner.message_hub.get_scalar("train/loss_image").data[0] > 0).all()


@HOOKS.register_module(name="RecordResumeForTest", force=True)
class _RecordResume(Hook):
    """Keeps what the runner holds when training (re)starts."""

    seen: dict = {}

    def before_train(self, runner):
        # state_dict() holds the live buffers, which later steps change in place: copy them now.
        _RecordResume.seen = copy.deepcopy({"iter": runner.iter, "optimizer": runner.optim_wrapper.state_dict()})


def test_resume_after_kill_continues_from_the_saved_iteration_and_optimizer_state(tmp_path):
    work = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The job kills itself (SIGKILL: no cleanup at all) when iteration 10 starts, after the checkpoint of
    # iteration 8: where it stops does not depend on how fast this machine is.
    write_killed_config(tmp_path, CONFIG, 9)
    cmd = [sys.executable, "tools/train.py", str(tmp_path / "killed.py"), "--work-dir", str(work), "--cfg-options",
           "train_cfg.max_iters=200", "default_hooks.checkpoint.interval=4",
           "default_hooks.checkpoint.max_keep_ckpts=5", "log_level=WARNING"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**env, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    marker = work / "last_checkpoint"
    saved_name = Path(marker.read_text().strip()).name
    saved = load_checkpoint_file(work / saved_name)
    cfg = runner_for(tmp_path, "killed", **{"train_cfg.max_iters": saved["meta"]["iter"] + 2})
    cfg.resume = True
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="RecordResumeForTest")]
    runner = Runner.from_cfg(cfg)
    runner.train()
    seen = _RecordResume.seen
    assert seen["iter"] == saved["meta"]["iter"] == 8 and runner.iter == seen["iter"] + 2
    state, ref = seen["optimizer"]["state"], saved["optimizer"]["state"]
    assert state.keys() == ref.keys() and len(state) > 10
    assert all(torch.equal(state[k]["momentum_buffer"].cpu(), ref[k]["momentum_buffer"]) for k in ref)
    assert seen["optimizer"]["param_groups"][0]["lr"] == saved["optimizer"]["param_groups"][0]["lr"]


def test_test_tool_writes_metrics_and_results_with_another_vocabulary(trained, tmp_path):
    _, work_dir = trained
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, "tools/test.py", CONFIG, str(work_dir / "iter_20.pth"), "--vocab",
                        "square, circle", "--out", str(out), "--work-dir", str(tmp_path / "test"),
                        "--cfg-options", LOW_SCORES],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())["metrics"]
    assert {"det/AP50", "det/AP", "det/images"} <= set(metrics) and metrics["det/images"] == 4
    assert "| AP50 |" in r.stdout
    results = json.loads(out.read_text())
    assert results and {e["category_id"] for e in results} <= {1, 2}
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}


def test_demo_writes_an_annotated_image_and_json_per_input(trained, tmp_path):
    _, work_dir = trained
    images = [str(ROOT / "examples/shapes/images/shapes_00.png"), str(ROOT / "examples/shapes/images/shapes_01.png")]
    r = subprocess.run([sys.executable, "tools/demo.py", CONFIG, str(work_dir / "iter_20.pth"), *images,
                        "--vocab", "circle, triangle|three-sided shape, star", "--out-dir", str(tmp_path / "demo"),
                        "--score-thr", "0.0", "--cfg-options", LOW_SCORES], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for stem in ("shapes_00", "shapes_01"):
        record = json.loads((tmp_path / "demo" / f"{stem}.json").read_text())
        assert record["vocabulary"] == ["circle", "triangle", "star"] and record["detections"]
        assert {d["name"] for d in record["detections"]} <= {"circle", "triangle", "star"}
        from PIL import Image
        with Image.open(tmp_path / "demo" / f"{stem}_det.png") as im:  # 128 pixels drawn 4x, legend beside
            assert im.height >= 512 and im.width > 512
    r = subprocess.run([sys.executable, "tools/demo.py", CONFIG, str(work_dir / "iter_20.pth"), "missing.png",
                        "--vocab", "circle", "--out-dir", str(tmp_path / "demo2")], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 1 and "image file not found: missing.png" in r.stdout


def test_python_api_predicts_any_vocabulary_without_touching_weights(trained):
    _, work_dir = trained
    det = Detector.from_config(CONFIG, work_dir / "iter_20.pth", cfg_options={"model.detector.box_score_thresh": 0.0})
    before = {k: v.clone() for k, v in det.model.state_dict().items()}
    image = ROOT / "examples/shapes/images/shapes_02.png"
    out = det.predict(image, "hexagon, circle|disc", score_thr=0.0)
    assert len(out) > 0 and set(out.names) <= {"hexagon", "circle"} and out.labels.max() < 2
    assert out.boxes.shape == (len(out), 4) and (out.scores[:-1] >= out.scores[1:]).all()
    assert det.vocabulary.names == ["hexagon", "circle"]
    after = det.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert out.to_list()[0].keys() == {"box", "score", "label", "name"}


def test_misspelt_config_key_and_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="'train_dataloder': did you mean 'train_dataloader'"):
        load_config(CONFIG, {"train_dataloder": {"batch_size": 1}})
    with pytest.raises(DistillConfigError, match=r"unknown key\(s\) \['regions'\] in model.distill"):
        Detector.from_config(CONFIG, cfg_options={"model.distill.regions": 3})
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Path("x")}, evil)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        model_state_dict(evil)
    truncated = tmp_path / "cut.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut.pth"):
        model_state_dict(truncated)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        model_state_dict(tmp_path / "none.pth")


@pytest.mark.parametrize("name, with_mask, vocab", [("vild_r50_fpn_1x_ov-coco.py", False, "ov-coco"),
                                                    ("vild_r50_fpn_2x_ov-lvis.py", True, "ov-lvis")])
def test_paper_configs_resolve_to_the_paper_settings_and_build(name, with_mask, vocab):
    cfg = load_config(ROOT / "configs" / "vild" / name)
    m = cfg.model
    assert (m.templates, m.temperature, m.distill.num_regions, tuple(m.distill.scales)) == ("vild", 0.01, 300,
                                                                                           (1.0, 1.5))
    assert m.with_mask == with_mask and m.vocabulary == vocab and cfg.optim_wrapper.clip_grad.max_norm > 0
    assert cfg.train_dataloader.dataset.train_classes == "base"
    assert any(h["type"] == "PlainCheckpointHook" for h in cfg.custom_hooks)
    # The real teacher (ViT-B-32/openai) needs a download; the structure is checked with the tiny one.
    det = Detector.from_config(ROOT / "configs" / "vild" / name,
                               cfg_options={"model.teacher": "tiny-vit", "model.backbone_weights": None,
                                            "model.templates": "single"}, allow_untrained=True)
    assert det.model.detector.roi_heads.has_mask() == with_mask
    assert len(det.vocabulary) == (65 if vocab == "ov-coco" else 1203)
    assert int(det.model.detector.predictor.base_mask.sum()) == (48 if vocab == "ov-coco" else 866)


def test_torchrun_ddp_training_on_cpu(tmp_path):
    work = tmp_path / "ddp"
    r = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "tools/train.py", CONFIG, "--launcher",
                        "pytorch",
                        "--work-dir", str(work), "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                        "default_hooks.checkpoint.interval=2"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    log = next(work.glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log and "Iter(train) [2/2]" in log
    ckpt = load_checkpoint_file(work / "iter_2.pth")
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # saved unwrapped, loads anywhere


def test_rpn_proposals_dump_resumes_and_feeds_the_region_store(trained, tmp_path):
    from ovclip.coco import load_proposals
    from ovclip.precompute import run_precompute
    from ovclip.store import FeatureStore
    from ovd.proposals import dump_proposals
    _, work_dir = trained
    out = tmp_path / "proposals.json"
    cfg = runner_for(tmp_path, "cfg")
    cfg.dump(str(tmp_path / "cfg.py"))  # the same config with absolute data paths
    partial = Path(f"{out}.partial.jsonl")
    partial.write_text(json.dumps({"image_id": 2, "proposals": [[1, 2, 30, 40, 0.9]]}) + '\n{"image_id": 3, "pro')
    stats = dump_proposals(str(tmp_path / "cfg.py"), str(work_dir / "iter_20.pth"), str(out), max_per_image=20,
                           progress=False)
    assert stats["resumed"] == 1 and stats["images"] == 3 and not partial.exists()
    props = load_proposals(out, max_per_image=20)
    assert set(props) == {1, 2, 3, 4} and len(props[1]) == 20 and props[2].tolist() == [[1, 2, 31, 42]]
    assert (props[1][:, 2:] <= 128).all() and (props[1][:, :2] >= 0).all()
    run_precompute({"teacher": {"spec": "tiny-vit"},
                    "dataset": {"ann_file": str(ROOT / "examples/shapes/annotations.json"),
                                "img_dir": str(ROOT / "examples/shapes/images"), "proposals": str(out)}},
                   str(tmp_path / "store"), progress=False)
    boxes, emb = FeatureStore(tmp_path / "store")[1]
    assert len(boxes) == 20 and emb.shape[0] == 20


def test_a_kill_while_saving_keeps_the_last_finished_checkpoint(tmp_path):
    """mmengine's CheckpointHook deletes the old checkpoint before writing the new one in place: a kill
    mid-save with max_keep_ckpts=1 left nothing to resume from. SafeCheckpointHook (the configs' default)
    keeps it."""
    cfg = runner_for(tmp_path, "safe", **{"train_cfg.max_iters": 6, "default_hooks.checkpoint.interval": 2,
                                          "default_hooks.checkpoint.max_keep_ckpts": 1})
    assert cfg.default_hooks.checkpoint.type == "SafeCheckpointHook"
    runner = Runner.from_cfg(cfg)
    work, save = Path(cfg.work_dir), runner.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die_at_6(out_dir, filename, *args, **kwargs):
        if runner.iter + 1 == 6:  # the process dies halfway through writing iter 6
            Path(out_dir, filename).write_bytes(b"PK\x03\x04 torn")
            raise Killed
        return save(out_dir, filename, *args, **kwargs)

    runner.save_checkpoint = save_then_die_at_6
    with pytest.raises(Killed):
        runner.train()
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_4.pth"]  # iter_2 removed after iter_4 saved
    assert Path((work / "last_checkpoint").read_text()).name == "iter_4.pth"
    saved = load_checkpoint_file(work / "iter_4.pth")
    assert saved["meta"]["iter"] == 4 and saved["message_hub"]["runtime_info"]["keep_ckpt_ids"] == [4]
    cfg = runner_for(tmp_path, "safe", **{"train_cfg.max_iters": 6, "default_hooks.checkpoint.interval": 2,
                                          "default_hooks.checkpoint.max_keep_ckpts": 1})
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 6 and sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_6.pth"]
    assert Path((work / "last_checkpoint").read_text()).name == "iter_6.pth"


def test_training_on_pseudo_annotations_logs_them_and_tests_on_ground_truth_alone(tmp_path):
    ann = json.loads((ROOT / "examples/shapes/annotations.json").read_text())
    novel = 3  # the example vocabulary's novel class (triangle)
    pseudo = tmp_path / "pseudo.json"
    pseudo.write_text(json.dumps({"info": {"pseudo": True}, "images": [], "categories": ann["categories"],
                                  "annotations": [{"id": -1 - k, "image_id": im["id"], "category_id": novel,
                                                   "bbox": [60, 60, 30, 30], "score": 0.9, "pseudo": True}
                                                  for k, im in enumerate(ann["images"])]}))
    cfg = runner_for(tmp_path, "pseudo", **{"train_cfg.max_iters": 2, "model.gt_classes": "all", "log_level": "INFO",
                                            "model.distill.source": "none",
                                            "train_dataloader.dataset.pseudo_annotations": [str(pseudo)]})
    runner = Runner.from_cfg(cfg)
    runner.train()
    train_set, test_set = runner.train_dataloader.dataset, runner.test_dataloader.dataset
    assert train_set.stats["pseudo_annotations"] == len(ann["images"])
    assert "weights" in train_set[0]["data_samples"] and "weights" not in test_set[0]["data_samples"]
    assert "pseudo_annotations" not in test_set.stats
    assert sum(len(r.labels) for r in test_set.records) == len(ann["annotations"])
    log = next(Path(cfg.work_dir).glob("*/*.log")).read_text()
    assert f"{len(ann['images'])} pseudo-annotations from" in log and "'triangle': 4" in log
