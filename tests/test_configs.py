"""Every shipped config builds its test loop (and its train loop where it has one), pointed at small fake
datasets with the config's own layout through `data_root` / `lvis_root` overrides, with a tiny teacher where
real weights would be needed; and config typos are refused at every level the project owns."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovclip.engine import load_config
from ovclip.options import ConfigError
from ovclip.store import StoreWriter
from ovclip.synthetic import make_world
from ovclip.vocabulary import load_vocabulary

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
TOOL_CONFIGS = ("precompute", "pseudo_boxes")  # configs of tools/precompute.py and tools/pseudo_boxes.py
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/*.py")
                 if p.parent.name not in TOOL_CONFIGS and "_base_" not in p.parts)


def _image(path: Path, seed: int, size=(48, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _coco_json(path: Path, vocabulary: str, images: list[str]) -> None:
    """Two boxes per image, one of the vocabulary's first class and one of its last."""
    vocab = load_vocabulary(vocabulary)
    cats = [{"id": int(i), "name": n} for i, n in zip(vocab.ids, vocab.names)]
    anns = []
    for k, name in enumerate(images):
        for j, cat in enumerate((cats[0], cats[-1])):
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": cat["id"], "iscrowd": 0,
                         "bbox": [4.0 + 10 * j, 4.0, 20.0, 16.0], "area": 320.0,
                         "segmentation": [[4.0 + 10 * j, 4.0, 24.0 + 10 * j, 4.0, 24.0 + 10 * j, 20.0, 4.0, 20.0]]})
    data = {"images": [{"id": k + 1, "file_name": n, "height": 48, "width": 64} for k, n in enumerate(images)],
            "annotations": anns, "categories": cats}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _pseudo(path: Path, image_id, category_id: int) -> None:
    """A pseudo-annotation file as tools/pseudo_boxes.py writes it, with one box."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {"pseudo": True}, "images": [], "categories": [], "annotations": [
        {"id": -1, "image_id": image_id, "category_id": category_id, "bbox": [30.0, 20.0, 10.0, 10.0],
         "score": 0.9, "pseudo": True}]}))


def _store(root: Path, ids, boxes_per_image: int = 3, dim: int = 32) -> None:
    with StoreWriter(root, {"embed_dim": dim}) as writer:
        for i in ids:
            writer.add(i, torch.tensor([[4.0, 4.0, 24.0, 20.0]] * boxes_per_image), torch.randn(boxes_per_image, dim))


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Fake COCO, LVIS, ADE20k, VOC and synthetic-world folders laid out as the configs expect."""
    base = tmp_path_factory.mktemp("roots")
    coco, lvis, ade = base / "coco", base / "lvis", base / "ade"
    names = ["000000000001.jpg", "000000000002.jpg"]
    for split in ("train2017", "val2017"):
        for k, n in enumerate(names):
            _image(coco / split / n, k)
    for split in ("train", "val"):
        _coco_json(coco / "annotations" / f"instances_{split}2017.json", "coco", names)
        _coco_json(lvis / f"lvis_v1_{split}.json", "lvis-v1", [f"{split}2017/{n}" for n in names])
    _store(coco / "vild_store", [1, 2])
    _store(lvis / "vild_store", [1, 2])
    _pseudo(coco / "annotations" / "pseudo_boxes_train2017.json", 1, int(load_vocabulary("ov-coco").ids[-1]))
    _pseudo(lvis / "pseudo_boxes_train.json", 1, int(load_vocabulary("lvis-v1").ids[-1]))
    for split in ("training", "validation"):
        for k in range(2):
            _image(ade / "images" / split / f"ADE_{k}.jpg", k)
            label = np.random.default_rng(k).integers(0, 151, (48, 64), dtype=np.uint8)
            (ade / "annotations" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(ade / "annotations" / split / f"ADE_{k}.png")
    voc = base / "voc"
    for k, stem in enumerate(("2007_000001", "2007_000002")):
        _image(voc / "JPEGImages" / f"{stem}.jpg", k)
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        label = np.random.default_rng(k).integers(0, 21, (48, 64), dtype=np.uint8)
        Image.fromarray(label).save(voc / "SegmentationClass" / f"{stem}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("2007_000001\n2007_000002\n")
    world = Path(make_world(base / "world", seed=0, n_train=4, n_val=2, size=64)["root"])
    ids = [im["id"] for im in json.loads((world / "train_base.json").read_text())["images"]]
    _store(world / "store", ids, dim=64)
    _pseudo(world / "pseudo_boxes.json", ids[0], int(load_vocabulary("synthetic-shapes").ids[-1]))
    return {"data_root": {"coco": coco, "lvis": coco, "ade": ade, "voc": voc, "world": world}, "lvis_root": lvis}


def _point_at(cfg_path: str, roots: dict, tmp_path: Path) -> dict:
    """--cfg-options that point a config at the fake data and swap real-weight teachers for tiny ones."""
    cfg = load_config(ROOT / cfg_path)
    options = {}
    root = str(cfg.get("data_root", ""))
    kind = ("world" if "world" in root else "lvis" if "lvis_root" in cfg else "ade" if "ade" in root
            else "voc" if "VOC2012" in root else "coco")
    if root and not root.startswith("examples/"):  # the built-in example ships with the repository
        options["data_root"] = str(roots["data_root"][kind]) + "/"
    if "lvis_root" in cfg:
        options["lvis_root"] = str(roots["lvis_root"]) + "/"
    model = cfg.model
    if isinstance(model.get("teacher"), str):  # a pretrained tag: not available offline
        options["model.teacher"] = "tiny-rn"
    if model.get("backbone_weights"):
        options["model.backbone_weights"] = None
    templates = model.get("templates")
    if isinstance(templates, dict) and templates.get("type") == "learned":
        from ovclip.learned_prompts import PromptContext, save_prompts
        from ovclip.teacher import load_teacher
        teacher = load_teacher(options.get("model.teacher", model.get("teacher")))
        save_prompts(PromptContext(teacher, n_ctx=2), tmp_path / "prompts.safetensors")
        options["model.templates"] = dict(type="learned", file=str(tmp_path / "prompts.safetensors"))
    return options


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_builds_its_loops(config, roots, tmp_path):
    from mmengine.runner import Runner
    from ovclip.engine.runner import drop_training
    cfg = load_config(ROOT / config, _point_at(config, roots, tmp_path), work_dir=str(tmp_path / "work"))
    has_train = cfg.get("train_cfg") is not None
    if not has_train:
        drop_training(cfg)
    assert has_train or cfg.get("test_cfg") is not None
    runner = Runner.from_cfg(cfg)
    if cfg.get("test_cfg") is not None:  # DetPro's prompt configs only train
        assert len(runner.build_test_loop(cfg.test_cfg).dataloader.dataset) > 0
    if cfg.get("val_cfg") is not None:
        assert len(runner.build_val_loop(cfg.val_cfg).dataloader.dataset) > 0
    if has_train:
        assert len(runner.build_train_loop(cfg.train_cfg).dataloader.dataset) > 0


def test_the_console_gets_neither_mmengines_dumps_nor_its_frozen_parameter_warnings(tmp_path, capsys):
    from ovclip.engine.runner import ProjectRunner
    runner = ProjectRunner.__new__(ProjectRunner)  # only what build_logger reads, set by hand
    runner._log_dir, runner._timestamp, runner._experiment_name = str(tmp_path), "run", f"console-{tmp_path.name}"
    logger = runner.build_logger(log_level="INFO")  # what the Runner calls on itself
    messages = ["teacher.model.visual.conv1.weight is skipped since its requires_grad=False",
                "Config:\nmodel = dict()", '"FileClient" will be deprecated in future.',
                '"HardDiskBackend" is the alias of "LocalBackend"', "a warning worth reading"]
    for message in messages:
        logger.warning(message)
    for handler in list(logger.handlers):  # its console is pytest's capture, gone after this test
        logger.removeHandler(handler)
        handler.close()
    console, logged = capsys.readouterr().out, (tmp_path / "run.log").read_text()
    assert "a warning worth reading" in console
    assert not any(word in console for word in ("requires_grad", "Config:", "FileClient", "HardDiskBackend"))
    assert all(m.split("\n")[0] in logged for m in messages)


def test_data_root_reaches_every_path_built_from_it(tmp_path):
    default = load_config(ROOT / "configs/vild/vild_r50_fpn_2x_ov-lvis.py")
    cfg = load_config(ROOT / "configs/vild/vild_r50_fpn_2x_ov-lvis.py",
                      {"data_root": "/d/coco", "lvis_root": "/d/lvis/",
                       "test_dataloader.dataset.ann_file": "/elsewhere/val.json"})
    assert default.train_dataloader.dataset.img_dir == "data/coco/"
    assert cfg.train_dataloader.dataset.img_dir == "/d/coco/"
    assert cfg.train_dataloader.dataset.ann_file == "/d/lvis/lvis_v1_train.json"
    assert cfg.train_dataloader.dataset.feature_store == "/d/lvis/vild_store"
    assert [e.ann_file for e in cfg.test_evaluator] == ["/d/lvis/lvis_v1_val.json"] * 2
    assert cfg.test_dataloader.dataset.ann_file == "/elsewhere/val.json"  # an explicit path still wins
    text = json.dumps(cfg.to_dict())
    assert "data/coco" not in text.replace("/d/coco", "") and "data/lvis" not in text.replace("/d/lvis", "")


@pytest.mark.parametrize("options,match", [
    ({"foo": 1}, r"unknown config key 'foo' \(a new top-level key would be ignored\)"),
    ({"model.templatez": "x"}, r"unknown key 'templatez' in model \(did you mean 'templates'\?\)"),
    ({"model.temperature": "abc"}, r"model.temperature must be a number, not 'abc'"),
    ({"model.with_mask": 1}, r"model.with_mask must be true or false"),
    ({"train_dataloader.dataset.ann_fil": "x"}, r"'ann_fil' in train_dataloader.dataset \(did you mean 'ann_file'"),
    ({"test_evaluator.nme": "x"}, r"'nme' in test_evaluator \(did you mean 'name'"),
    ({"model.type": "ViLDDetectr"}, r"no model named 'ViLDDetectr' in scope 'ovd' \(did you mean 'ViLDDetector'"),
    ({"train_dataloder": {}}, r"did you mean 'train_dataloader'"),
    ({"test_dataloader.dataset.pseudo_annotations": "p.json"},  # the evaluator sees ground truth alone
     r"test_dataloader.dataset.pseudo_annotations: pseudo-labels are training data"),
])
def test_config_typos_refused_with_a_hint(options, match):
    with pytest.raises(ConfigError, match=match):
        load_config(ROOT / "configs/vild/vild_r18_fpn_tiny_shapes-cpu.py", options)


def test_nested_detector_options_checked():
    from ovclip.engine import build_model
    config = ROOT / "configs/vild/vild_r18_fpn_tiny_shapes-cpu.py"
    with pytest.raises(ConfigError, match=r"unknown key 'min_sizee' in model.detector \(did you mean 'min_size'"):
        build_model(config, cfg_options={"model.detector.min_sizee": 5})
    with pytest.raises(ConfigError, match=r"model.detector.box_score_thresh must be a number"):
        build_model(config, cfg_options={"model.detector.box_score_thresh": "high"})
    assert build_model(config, cfg_options={"model.detector.rpn_nms_thresh": 0.6}).detector.rpn.nms_thresh == 0.6


def test_test_tool_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    from ovclip.engine import build_model, test
    from ovclip.engine.runner import CheckpointMismatch
    config = ROOT / "configs/vild/vild_r18_fpn_tiny_shapes-cpu.py"
    state = build_model(config, cfg_options={"model.box_head_dim": 256}).state_dict()
    state["leftover.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    options = {"log_level": "WARNING", "model.detector.box_score_thresh": 0.0}
    with pytest.raises(CheckpointMismatch) as err:
        test(config, str(tmp_path / "other.pth"), work_dir=str(tmp_path / "w"), cfg_options=options)
    msg = str(err.value)
    assert "of another shape: detector.roi_heads.box_head.fc6.weight (256, 12544) vs the model's (1024, 12544)" in msg
    assert "1 not in the model: leftover.weight" in msg and "--allow-partial" in msg
    metrics = test(config, str(tmp_path / "other.pth"), work_dir=str(tmp_path / "w"), cfg_options=options,
                   allow_partial=True)
    assert any(k.endswith("AP50") for k in metrics)
    fitting = build_model(config).state_dict()  # the model's own weights load without a word
    torch.save({"state_dict": fitting}, tmp_path / "own.pth")
    test(config, str(tmp_path / "own.pth"), work_dir=str(tmp_path / "w2"), cfg_options=options)


@pytest.mark.parametrize("tool,args", [
    ("train.py", ["configs/vild/vild_r18_fpn_tiny_shapes-cpu.py", "--cfg-options", "model.templatez=single"]),
    ("test.py", ["configs/vild/vild_r18_fpn_tiny_shapes-cpu.py", "no-such.pth"]),
])
def test_tools_report_a_users_mistake_in_one_line(tool, args, tmp_path, monkeypatch):
    import subprocess
    import sys
    from ovclip.errors import UserInputError
    monkeypatch.chdir(ROOT)
    cmd = [sys.executable, f"tools/{tool}", *args, "--work-dir", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and ("templatez" in errors[0] or "no-such.pth" in errors[0]), r.stderr[-2000:]
    # --debug lets the exception through (checked in this process: a second interpreter costs seconds)
    module = load_tool(tool[:-3])
    with pytest.raises((UserInputError, FileNotFoundError), match="templatez|no-such.pth"):
        module.run_tool(module.main, [*args, "--work-dir", str(tmp_path), "--debug"])


def test_training_logs_to_tensorboard_when_asked(tmp_path):
    from ovclip.engine import train
    train(ROOT / "configs/vild/vild_r18_fpn_tiny_shapes-cpu.py", work_dir=str(tmp_path), tensorboard=True,
          cfg_options={"train_cfg.max_iters": 2, "train_cfg.val_interval": 100, "default_hooks.logger.interval": 1,
                       "log_level": "WARNING"})
    events = list(tmp_path.glob("*/vis_data/events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logged = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert "loss" in logged and "lr" in logged
