"""The demo (tools/demo.py, ovd.demo, ovseg.demo): untrained models refused, folders and same-stem inputs,
readable pictures with a legend, the note on toy teachers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovclip.demo import MIN_SHORT_SIDE, readable, teacher_note, toy_teacher
from ovclip.options import ConfigError
from ovclip.synthetic import scene
from ovd import Detector
from ovd.demo import place_tag, run_demo
from ovseg.api import Segmenter
from ovseg.demo import run_segmentation_demo

from .conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "model_zoo" / "synthetic"
VILD = str(ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py")
VILD_CKPT = str(ZOO / "vild_teacher-rn_synthetic.pth")
MASKCLIP = str(ROOT / "configs/maskclip/maskclip_synthetic-cpu.py")
MASKCLIP_PLUS = str(ROOT / "configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py")
VOCAB = "diamond, triangle, hexagon, circle, star"


def _scene_png(path: Path, seed: int, size: int = 128) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image, _ = scene(np.random.default_rng(seed), size)
    Image.fromarray(image).save(path)
    return str(path)


def test_trainable_models_without_checkpoint_are_refused_zero_shot_maskclip_is_not(tmp_path, capsys):
    wording = "trainable weights: give the checkpoint trained from this config"
    with pytest.raises(ConfigError, match=wording):
        Detector.from_config(VILD)
    with pytest.raises(ConfigError, match=wording):
        Segmenter.from_config(MASKCLIP_PLUS)
    assert Segmenter.from_config(MASKCLIP_PLUS, allow_untrained=True).model.training is False
    assert len(Segmenter.from_config(MASKCLIP).vocabulary) == 12
    tool = load_tool("demo")
    rc = tool.run_tool(tool.main, [VILD, "none", str(ZOO / "demo.png"), "--vocab", VOCAB, "--out-dir", str(tmp_path)])
    assert rc == 2 and wording in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_folders_and_inputs_sharing_a_stem_get_distinct_outputs(tmp_path, capsys):
    a, b = _scene_png(tmp_path / "a" / "x.png", 1), _scene_png(tmp_path / "b" / "x.png", 2)
    shutil.copy(ZOO / "demo.png", tmp_path / "b" / "demo.png")
    (tmp_path / "b" / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    failed = run_demo(VILD, VILD_CKPT, [str(tmp_path / "a"), str(tmp_path / "b")], VOCAB, str(out), 0.1)
    assert failed == []
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "demo_det.png", "x.json", "x_1.json", "x_1_det.png",
                                                     "x_det.png"]
    assert json.loads((out / "x.json").read_text())["image"] == a
    assert json.loads((out / "x_1.json").read_text())["image"] == b
    assert '"images": 3, "failed": 0' in capsys.readouterr().out


def test_detection_picture_is_readable_and_the_json_keeps_image_pixels(tmp_path, capsys):
    image = ZOO / "demo.png"
    run_demo(VILD, VILD_CKPT, [str(image), str(image)], VOCAB, str(tmp_path), 0.1)
    printed = capsys.readouterr().out
    assert printed.count("note: the teacher is the synthetic shapes world's tiny CLIP") == 1
    assert "a real CLIP tag alone is not enough" in printed and "tools/train.py" in printed
    with Image.open(tmp_path / "demo_det.png") as im:
        picture = np.asarray(im.convert("RGB"))
    assert picture.shape[0] == MIN_SHORT_SIDE and picture.shape[1] > MIN_SHORT_SIDE + 100  # 4x, legend beside
    legend = picture[:, MIN_SHORT_SIDE:]
    assert (legend < 128).any(axis=2).sum() > 500  # text and swatches, not a blank panel
    expected = Detector.from_config(VILD, VILD_CKPT).predict(image, VOCAB, score_thr=0.1)
    detections = json.loads((tmp_path / "demo.json").read_text())["detections"]
    assert len(detections) == len(expected) > 2
    boxes = np.array([d["box"] for d in detections])
    assert np.allclose(boxes, expected.boxes.numpy(), atol=0.01) and boxes.max() <= 128
    assert json.loads((tmp_path / "demo_1.json").read_text())["image"] == str(image)


def test_box_numbers_never_overlap_even_for_ten_identical_boxes():
    placed = []
    for _ in range(10):
        placed.append(place_tag((40.0, 40.0, 200.0, 200.0), (20, 16), (512, 512), placed))
    for i, p in enumerate(placed):
        assert 0 <= p[0] and p[2] <= 512 and 0 <= p[1] and p[3] <= 512
        for q in placed[:i]:
            assert min(p[2], q[2]) <= max(p[0], q[0]) or min(p[3], q[3]) <= max(p[1], q[1]), (p, q)


def test_segmentation_demo_zero_shot_is_readable_and_says_a_real_tag_is_enough(tmp_path, capsys):
    image = _scene_png(tmp_path / "img" / "small.png", 3, size=64)
    failed = run_segmentation_demo(MASKCLIP, None, [str(tmp_path / "img")], "star, circle, heart", str(tmp_path / "o"))
    assert failed == []
    printed = capsys.readouterr().out
    assert printed.count("note:") == 1 and "a real CLIP tag is all it needs" in printed
    assert "--cfg-options model.teacher=ViT-B-16/openai" in printed
    with Image.open(tmp_path / "o" / "small_seg.png") as im:
        assert im.height == MIN_SHORT_SIDE and im.width > MIN_SHORT_SIDE
    with Image.open(tmp_path / "o" / "small_labels.png") as im:
        assert im.size == (64, 64)
    assert json.loads((tmp_path / "o" / "small.json").read_text())["image"] == image


def test_toy_teachers_are_told_from_real_ones():
    synthetic = {"config": str(ZOO / "teacher.json"), "pretrained": str(ZOO / "teacher.safetensors")}
    assert toy_teacher(synthetic) == "synthetic"
    assert toy_teacher("tiny-vit") == toy_teacher("ViT-B-32/random") == "random"
    assert toy_teacher("ViT-B-16/openai") is toy_teacher("RN50/weights.pt") is toy_teacher("local-dir:/m") is None
    assert teacher_note("ViT-B-32/openai", zero_shot=True, real_config="c.py") is None
    assert "configs/x.py" in teacher_note(synthetic, zero_shot=False, real_config="configs/x.py")


def test_small_pictures_grow_by_a_whole_factor_large_ones_stay():
    small, scale = readable(Image.new("RGB", (200, 100)))
    assert (small.size, scale) == ((1200, 600), 6)
    large = Image.new("RGB", (800, 600))
    assert readable(large) == (large, 1)
