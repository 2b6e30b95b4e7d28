import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ovclip.teacher import TeacherError, TeacherWeightsUnavailable, load_teacher, packaged_model_configs


def test_packaged_tiny_models_load_and_encode(tiny_vit, tiny_rn):
    assert {"tiny-vit", "tiny-rn"} <= set(packaged_model_configs())
    for t in (tiny_vit, tiny_rn):
        assert t.embed_dim == 32
        assert t.encode_text(["a photo of a cat.", "a dog"]).shape == (2, 32)
        x = torch.zeros(3, 3, t.image_size, t.image_size)
        assert t.encode_images(x).shape == (3, 32)
        assert not any(p.requires_grad for p in t.model.parameters())


def test_random_json_teacher_is_seeded():
    a, b = load_teacher("tiny-vit"), load_teacher("tiny-vit")
    c = load_teacher({"config": "tiny-vit", "seed": 1})
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_offline_without_weights_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    start = time.monotonic()
    with pytest.raises(TeacherWeightsUnavailable) as err:
        load_teacher("ViT-B-32/openai")
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "ViT-B-32/openai" in msg and "open_clip.create_model('ViT-B-32', pretrained='openai')" in msg
    assert "path/to/open_clip_model.safetensors" in msg


@pytest.mark.parametrize("spec,match", [
    ("NoSuchNet/openai", "unknown open_clip architecture 'NoSuchNet'"),
    ("ViT-B-32/no-such-tag", "neither a pretrained tag"),
    ({"config": "tiny-vit", "weights": "x"}, "unknown teacher keys"),
    ("", "non-empty"),
    ("missing-config.json", "not found"),
])
def test_bad_specs(spec, match):
    with pytest.raises(TeacherError, match=match):
        load_teacher(spec)


@pytest.mark.parametrize("spec,match", [
    ("ViT-B-32", r"teacher 'ViT-B-32' names no weights.*'ViT-B-32/openai'.*'ViT-B-32/random'"),
    ({"arch": "RN50"}, r"names no weights.*'RN50/openai'"),
    ({"config": "synthetic-rn"}, r"model config 'synthetic-rn' names no weights.*'pretrained': 'random'"),
])
def test_spec_without_weights_refused_not_random(spec, match):
    with pytest.raises(TeacherError, match=match):
        load_teacher(spec)


def test_random_weights_only_when_asked(tmp_path):
    a = load_teacher({"config": "tiny-vit", "pretrained": "random"})
    assert a.fingerprint == load_teacher("tiny-vit").fingerprint  # the tiny test models are random by design
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"model_cfg": json.loads(
        __import__("importlib").resources.files("ovclip.model_configs").joinpath("tiny-rn.json").read_text())}))
    with pytest.raises(TeacherError, match="own.json' names no weights"):
        load_teacher({"config": str(own)})
    assert load_teacher({"config": str(own), "pretrained": "random"}).embed_dim == 32


def test_local_checkpoint_roundtrip(tmp_path, tiny_vit):
    ckpt = tmp_path / "teacher.pt"
    torch.save(tiny_vit.model.state_dict(), ckpt)
    other = load_teacher({"config": "tiny-vit", "seed": 5, "pretrained": str(ckpt)})
    tokens = ["a red star"]
    assert torch.allclose(other.encode_text(tokens), tiny_vit.encode_text(tokens))
    with pytest.raises(TeacherError, match="is a file; say which architecture"):
        load_teacher(str(ckpt))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherError, match="cannot load teacher checkpoint"):
        load_teacher({"config": "tiny-vit", "pretrained": str(bad)})


def test_open_clip_local_dir(tmp_path, tiny_vit):
    from importlib import resources
    model_cfg = json.loads(resources.files("ovclip.model_configs").joinpath("tiny-vit.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.save(tiny_vit.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    t = load_teacher(str(tmp_path))
    assert torch.allclose(t.encode_text(["a cat"]), tiny_vit.encode_text(["a cat"]), atol=1e-6)


def test_the_resize_mode_comes_from_the_preprocess_config(tmp_path, tiny_vit):
    """How the teacher's preprocess makes an image square (open_clip's resize_mode), from a JSON config's or an
    open_clip folder's preprocess_cfg; CLIP's "shortest" when it says nothing. The synthetic world's teacher
    squashes, as its training crops were made."""
    from importlib import resources

    from PIL import Image
    model_cfg = json.loads(resources.files("ovclip.model_configs").joinpath("tiny-vit.json").read_text())
    (tmp_path / "squash.json").write_text(json.dumps({**model_cfg, "preprocess_cfg": {
        "resize_mode": "squash", "interpolation": "bilinear"}}))
    squash = load_teacher({"config": str(tmp_path / "squash.json"), "pretrained": "random"})
    assert (tiny_vit.resize_mode, tiny_vit.interpolation) == ("shortest", "bicubic")
    assert (squash.resize_mode, squash.interpolation) == ("squash", "bilinear")
    (tmp_path / "bad.json").write_text(json.dumps({**model_cfg, "preprocess_cfg": {"resize_mode": "crop"}}))
    with pytest.raises(TeacherError, match="resize_mode must be one of"):
        load_teacher({"config": str(tmp_path / "bad.json"), "pretrained": "random"})
    pixels = np.zeros((20, 80, 3), np.uint8)  # a 4:1 image whose middle half is white
    pixels[:, 20:60] = 255
    image = Image.fromarray(pixels)
    assert squash.preprocess(image)[:, :, 0].mean() < tiny_vit.preprocess(image)[:, :, 0].mean() - 1  # outside
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": {"resize_mode": "squash"}}))
    torch.save(tiny_vit.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    assert load_teacher(str(folder)).resize_mode == "squash"
    synthetic = Path(__file__).resolve().parents[1] / "model_zoo/synthetic"
    assert load_teacher({"config": str(synthetic / "teacher.json"), "pretrained": "random"}).resize_mode == "squash"


def test_cached_tag_weights_are_found_without_network(tmp_path):
    from ovclip.teacher import _cached_weights
    import open_clip
    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    repo = cfg["hf_hub"].rstrip("/")
    folder = tmp_path / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snap = folder / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    assert _cached_weights(cfg, str(tmp_path)) is None
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    assert _cached_weights(cfg, str(tmp_path)) == str(snap / "open_clip_model.safetensors")
