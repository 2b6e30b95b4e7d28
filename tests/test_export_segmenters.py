"""Segmenters exported to ONNX (ovseg.export) and run by onnxruntime (ovclip.deploy.OnnxSegmenter), and the
resizing both share (ovclip.resize)."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovclip.geometry import short_side_size
from ovclip.resize import bilinear_weights, traced_short_side_size

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "model_zoo/synthetic/demo.png"
MASKCLIP = ROOT / "configs/maskclip/maskclip_synthetic-cpu.py"
VOCABULARIES = ["star, circle, triangle",
                "circle, square|box, star, cat, dog, car, tree, heart, moon, arrow, ring, cross, bus"]
SLIDE = {"model.inference": dict(mode="slide", crop_size=64, stride=48, short_side=100)}
SIZES = [(100, 130, 64, 80), (200, 90, 144, 64), (37, 300, 64, 512), (20, 30, 64, 96), (7, 7, 7, 7),
         (480, 640, 224, 299), (5, 9, 1, 1), (64, 64, 65, 127), (33, 17, 512, 3)]


@pytest.mark.parametrize("antialias", [False, True])
def test_the_traced_resize_matrices_are_torchs_resize(antialias):
    g = torch.Generator().manual_seed(0)
    for h, w, oh, ow in SIZES:
        x = torch.rand(3, h, w, generator=g)
        ref = F.interpolate(x[None], size=(oh, ow), mode="bilinear", align_corners=False, antialias=antialias)[0]
        ours = bilinear_weights(h, oh, antialias) @ x @ bilinear_weights(w, ow, antialias).T
        assert (ref - ours).abs().max() < 2e-5, (h, w, oh, ow)  # torch's fused multiply-adds: 1 ulp of a position


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_sizes_follow_the_python_arithmetic():
    def sizes(x):
        h, w = traced_short_side_size(x.shape[-2], x.shape[-1], 224, 16)
        return torch.stack([h, w])
    with torch.no_grad():
        traced = torch.jit.trace(sizes, torch.zeros(1, 50, 70), check_trace=False)
    for h, w in [(50, 70), (480, 640), (333, 500), (7, 1000), (224, 224), (225, 100), (1000, 1001)]:
        assert tuple(traced(torch.zeros(1, h, w)).tolist()) == short_side_size(h, w, 224, 16), (h, w)


pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")

from ovclip.deploy import DeployError, OnnxSegmenter, load_exported  # noqa: E402
from ovseg.export import export_segmenter  # noqa: E402


def exported(config, tmp_path, cfg_options=None):
    from ovseg import Segmenter
    segmenter = Segmenter.from_config(config, None, cfg_options=cfg_options, allow_untrained=True)
    export_segmenter(segmenter.model, tmp_path)
    return segmenter, load_exported(tmp_path)


def assert_same(segmenter, onnx, vocabulary):
    a, b = segmenter.predict(DEMO, vocabulary), onnx.predict(DEMO, vocabulary)
    assert a.names == b.names and b.labels.shape == (128, 128)
    assert np.array_equal(a.labels.numpy(), b.labels)
    assert np.abs(a.scores.numpy() - b.scores).max() < 1e-4
    assert a.areas() == b.areas()


def test_exported_maskclip_matches_torch_for_any_vocabulary(tmp_path):
    segmenter, onnx = exported(MASKCLIP, tmp_path)
    assert isinstance(onnx, OnnxSegmenter) and onnx.vocabulary == segmenter.vocabulary
    for vocabulary in VOCABULARIES:
        assert_same(segmenter, onnx, vocabulary)
        assert len(segmenter.predict(DEMO).areas()) > 1
        assert np.abs(segmenter.model.text.embeddings().numpy() - onnx.text_embeddings()).max() < 1e-5
    image = np.zeros((3, 40, 40), np.float32)
    with pytest.raises(DeployError, match=r"must be \(C > 0, 64\)"):
        onnx.window_logits(image, np.zeros((3, 32), np.float32))
    with pytest.raises(DeployError, match="needs the vocabulary's text embeddings"):
        onnx.window_logits(image, None)


def test_a_vit_teacher_with_sliding_windows_and_both_refinements_exports(tmp_path):
    options = {**SLIDE, "model.teacher": "tiny-vit", "model.key_smoothing": 0.5, "model.prompt_denoising": 0.5}
    segmenter, onnx = exported(MASKCLIP, tmp_path, options)
    assert onnx.manifest["model"]["probabilities"] == "scores"
    assert_same(segmenter, onnx, VOCABULARIES[1])


@pytest.mark.parametrize("config,options", [
    ("configs/maskclip_plus/maskclip-plus_teacher-rn_synthetic-cpu.py", SLIDE),
    ("configs/maskprop/maskprop_mnv3_synthetic-cpu.py", {"model.use_teacher": False})])
def test_trained_segmenters_export(config, options, tmp_path):
    segmenter, onnx = exported(ROOT / config, tmp_path, options)
    assert_same(segmenter, onnx, VOCABULARIES[1])


def test_what_cannot_export_says_why(tmp_path):
    from ovclip.export import ExportError
    from ovseg import Segmenter
    model = Segmenter.from_config(ROOT / "configs/maskprop/maskprop_mnv3_synthetic-cpu.py", allow_untrained=True).model
    with pytest.raises(ExportError, match="model.use_teacher=False"):
        export_segmenter(model, tmp_path)
    with pytest.raises(DeployError, match="holds a detector, not a segmenter"):
        (tmp_path / "manifest.json").write_text('{"format": "ovclip-onnx", "kind": "detector"}')
        OnnxSegmenter(tmp_path)


def test_export_tool_and_onnx_demo_for_a_segmenter(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import demo as demo_tool
        import export as tool
    finally:
        sys.path.pop(0)
    assert tool.run_tool(tool.main, [str(MASKCLIP), "none", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "resize.onnx").is_file()
    common = [str(DEMO), "--vocab", VOCABULARIES[0]]
    assert demo_tool.run_tool(demo_tool.main, [str(MASKCLIP), "none", *common, "--out-dir", str(tmp_path / "t")]) == 0
    assert demo_tool.run_tool(demo_tool.main, ["--onnx", str(tmp_path / "m"), *common, "--out-dir",
                                               str(tmp_path / "o")]) == 0
    for name in ("demo.json", "demo_labels.png"):
        assert (tmp_path / "t" / name).read_bytes() == (tmp_path / "o" / name).read_bytes()
    import subprocess  # the runtime alone, in a fresh process: no torch
    code = (f"import sys; from ovclip.deploy import OnnxSegmenter; s = OnnxSegmenter({str(tmp_path / 'm')!r}); "
            f"print(len(s.predict({str(DEMO)!r}, 'star, circle').areas()), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 0 and out[1] == "False"
