"""One run embeds each vocabulary once: a training run with validation, and a demo switching vocabularies,
run the text encoder once per vocabulary (the model, its heads and its evaluation share one embedding)."""
from pathlib import Path

import pytest
from mmengine.runner import Runner

import ovclip.classifier
from ovclip.teacher import Teacher
from ovd import Detector
from ovd.engine import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "vild" / "vild_r18_fpn_tiny_shapes-cpu.py")
IMAGE = str(ROOT / "examples" / "shapes" / "images" / "shapes_00.png")


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts of text_embeddings calls and of text-encoder passes (prompts per pass)."""
    calls = {"text_embeddings": 0, "encoder": []}
    real_encode, real_embed = Teacher.encode_text, ovclip.classifier.text_embeddings

    def encode(self, texts, batch_size=256):
        calls["encoder"].append(len(texts))
        return real_encode(self, texts, batch_size)

    def embed(*args, **kwargs):
        calls["text_embeddings"] += 1
        return real_embed(*args, **kwargs)
    monkeypatch.setattr(Teacher, "encode_text", encode)
    monkeypatch.setattr(ovclip.classifier, "text_embeddings", embed)
    return calls


def test_training_with_validation_embeds_the_vocabulary_once(tmp_path, encoder_calls):
    cfg = load_config(CONFIG, {"train_cfg.max_iters": 2, "train_cfg.val_interval": 2, "log_level": "WARNING",
                               "experiment_name": f"once-{tmp_path.name}"}, work_dir=str(tmp_path))
    for key in ("train_dataloader", "val_dataloader"):
        ds = cfg[key].dataset
        ds.ann_file, ds.img_dir, ds.vocabulary = (str(ROOT / p) for p in (ds.ann_file, ds.img_dir, ds.vocabulary))
    cfg.val_evaluator.ann_file, cfg.val_evaluator.vocabulary = (str(ROOT / p) for p in (
        cfg.val_evaluator.ann_file, cfg.val_evaluator.vocabulary))
    cfg.model.vocabulary = str(ROOT / cfg.model.vocabulary)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert "val/det/AP50_novel" in runner.message_hub.log_scalars  # the validation ran, novel classes too
    # 3 classes, circle with a synonym, one template: 4 prompts in one pass, for training and validation
    assert encoder_calls == {"text_embeddings": 1, "encoder": [4]}


def test_demo_switching_vocabularies_encodes_each_once(monkeypatch, encoder_calls):
    monkeypatch.chdir(ROOT)  # the config names its files relative to the repository
    detector = Detector.from_config(CONFIG, allow_untrained=True)
    for vocabulary in ("circle, square", "triangle", "circle, square", "triangle", "circle, square"):
        names = detector.predict(IMAGE, vocabulary=vocabulary).names
        assert set(names) <= set(vocabulary.split(", "))
    assert encoder_calls["encoder"] == [2, 1]
