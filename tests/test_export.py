import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from ovclip.deploy import DeployError, OnnxDetector  # noqa: E402
from ovclip.export import clip_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py"
CKPT = ROOT / "model_zoo/synthetic/vild_teacher-rn_synthetic.pth"
DEMO = ROOT / "model_zoo/synthetic/demo.png"
VOCABULARIES = ["diamond, triangle, hexagon, circle, star",
                "circle, square|box, star, cat, dog, car, tree, heart, moon, arrow, ring, cross, bus"]


@pytest.fixture(scope="module")
def detector():
    from ovd import Detector
    return Detector.from_config(CONFIG, CKPT)


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    from ovd.export import export_detector
    out = tmp_path_factory.mktemp("onnx")
    export_detector(detector.model, out)
    return out


def test_tokenizer_gives_the_teachers_ids(tiny_vit):
    tok = clip_tokenizer(tiny_vit)
    texts = ["a photo of a cat.", "Traffic  Cone", "it's the dog's ball!", "7 dwarfs", "crème brûlée", "",
             "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 4, "ice_cream (scoop)", "THE CAT'LL"]
    ours = np.array([e.ids for e in tok.encode_batch(texts)])
    assert np.array_equal(ours, tiny_vit.tokenizer(texts).numpy())


def test_exported_detector_matches_torch_for_any_vocabulary(detector, exported):
    onnx = OnnxDetector(exported)
    assert onnx.vocabulary == detector.vocabulary
    for vocabulary in VOCABULARIES:
        a, b = detector.predict(DEMO, vocabulary), onnx.predict(DEMO, vocabulary)
        assert len(a) > 10 and a.names == b.names
        assert np.array_equal(a.labels.numpy(), b.labels)
        assert np.abs(a.scores.numpy() - b.scores).max() < 1e-5
        assert np.abs(a.boxes.numpy() - b.boxes).max() < 1e-3
        # the exported text encoder + tokenizer + templates give the teacher's class embeddings
        assert np.abs(detector.model.text.embeddings().numpy() - onnx.text_embeddings()).max() < 1e-5
    assert len(onnx.predict(np.asarray(Image.open(DEMO).convert("RGB")), score_thr=0.3)) > 0


@pytest.mark.parametrize("mode", ["text", "image"])
def test_every_inference_mode_exports(detector, mode, tmp_path):
    from ovd.export import export_detector
    heads = detector.model.detector.roi_heads
    heads.inference_mode = mode
    try:
        export_detector(detector.model, tmp_path)
        a = detector.predict(DEMO, VOCABULARIES[0])
    finally:
        heads.inference_mode = "ensemble"
    b = OnnxDetector(tmp_path).predict(DEMO, VOCABULARIES[0])
    assert a.names == b.names and np.abs(a.scores.numpy() - b.scores).max() < 1e-5
    assert heads.pre_nms_top_n == 1000, "the model is left as it was"


def test_bad_text_embedding_inputs_are_refused(exported):
    onnx = OnnxDetector(exported)
    image = np.zeros((3, 64, 64), np.float32)
    with pytest.raises(DeployError, match="needs the vocabulary's text embeddings"):
        onnx.run(image, None)
    with pytest.raises(DeployError, match=r"must be \(C > 0, 64\)"):
        onnx.run(image, np.zeros((3, 32), np.float32))
    with pytest.raises(DeployError, match="one entry per class"):
        onnx.run(image, np.ones((3, 64), np.float32), np.ones(2, bool))
    with pytest.raises(DeployError, match="no manifest.json"):
        OnnxDetector(exported / "nowhere")


def test_the_runtime_imports_no_torch(exported):
    code = (f"import sys; from ovclip.deploy import OnnxDetector; "
            f"d = OnnxDetector({str(exported)!r}); print(len(d.predict({str(DEMO)!r}, 'star, circle')), "
            f"'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 0 and out[1] == "False"


def test_export_tool_and_onnx_demo(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import demo as demo_tool
        import export as tool
    finally:
        sys.path.pop(0)
    assert tool.run_tool(tool.main, [str(CONFIG), str(CKPT), "--out", str(tmp_path / "m")]) == 0
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {"model.onnx", "text_encoder.onnx", "tokenizer.json",
                                                            "manifest.json"}
    common = [str(DEMO), "--vocab", VOCABULARIES[0], "--score-thr", "0.2"]
    assert demo_tool.run_tool(demo_tool.main, [str(CONFIG), str(CKPT), *common, "--out-dir", str(tmp_path / "t")]) == 0
    assert demo_tool.run_tool(demo_tool.main, ["--onnx", str(tmp_path / "m"), *common, "--out-dir",
                                               str(tmp_path / "o")]) == 0
    torch_json, onnx_json = (json.loads((tmp_path / d / "demo.json").read_text()) for d in ("t", "o"))
    assert (tmp_path / "o" / "demo_det.png").is_file() and len(onnx_json["detections"]) > 0
    assert [(d["name"], d["score"]) for d in torch_json["detections"]] == \
        [(d["name"], d["score"]) for d in onnx_json["detections"]]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        demo_tool.main([str(CONFIG), str(DEMO), "--vocab", "a", "--out-dir", "x"])
    assert "give CONFIG CHECKPOINT IMAGE" in capsys.readouterr().err


def test_the_runtime_decodes_images_as_the_torch_api(tmp_path):
    from ovclip.deploy import image_array
    from ovclip.io import ImageReadError, read_image, to_unit_float
    values = np.array([[0, 257, 257 * 100], [257 * 200, 65535, 128]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # 16 bits: scaled, not clipped white by PIL
    expected = to_unit_float(read_image(tmp_path / "g16.png")).numpy()
    np.testing.assert_array_equal(image_array(tmp_path / "g16.png"), expected)
    np.testing.assert_array_equal(image_array(Image.open(tmp_path / "g16.png")), expected)
    with pytest.raises(ImageReadError, match="image file not found"):
        image_array(tmp_path / "missing.png")


def test_detpro_learned_prompts_export(tmp_path):
    import torch
    from ovclip.learned_prompts import PromptContext, save_prompts
    from ovclip.teacher import load_teacher
    from ovd import Detector
    from ovd.export import export_detector
    torch.manual_seed(0)
    context = PromptContext(load_teacher({"config": str(ROOT / "model_zoo/synthetic/teacher.json"),
                                          "pretrained": str(ROOT / "model_zoo/synthetic/teacher.safetensors")}),
                            n_ctx=4, bins=2, init_std=0.5)
    save_prompts(context, tmp_path / "prompts.safetensors")
    detector = Detector.from_config(CONFIG, CKPT, cfg_options={
        "model.templates": {"_delete_": True, "type": "learned", "file": str(tmp_path / "prompts.safetensors")}})
    export_detector(detector.model, tmp_path / "m")
    onnx = OnnxDetector(tmp_path / "m")
    assert onnx.manifest["text_encoder"]["prompt_format"] == "X X X X {}." and onnx.text.learned
    vocabulary = "star|five-pointed star, circle|disc|round, triangle, hexagon"
    a, b = detector.predict(DEMO, vocabulary), onnx.predict(DEMO, vocabulary)
    assert np.abs(detector.model.text.embeddings().numpy() - onnx.text_embeddings()).max() < 1e-5
    assert a.names == b.names and np.abs(a.scores.numpy() - b.scores).max() < 1e-5


def test_a_mask_head_exports_its_masks(tmp_path):
    import torch
    from ovd import Detector
    from ovd.export import export_detector
    torch.manual_seed(0)
    detector = Detector.from_config(CONFIG, None, cfg_options={"model.with_mask": True}, allow_untrained=True)
    export_detector(detector.model, tmp_path)
    onnx = OnnxDetector(tmp_path)
    assert onnx.manifest["model"]["outputs"] == ["boxes", "scores", "labels", "masks"]
    a, b = detector.predict(DEMO, VOCABULARIES[1]), onnx.predict(DEMO, VOCABULARIES[1])
    assert len(a) > 10 and b.masks.shape == (len(a), 128, 128) and np.array_equal(a.labels.numpy(), b.labels)
    assert np.abs(a.masks.numpy() - b.masks).max() < 1e-4 and np.abs(a.scores.numpy() - b.scores).max() < 1e-5
