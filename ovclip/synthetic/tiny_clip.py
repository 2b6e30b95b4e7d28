"""Training a tiny CLIP on the synthetic world's captioned images: the teacher of the CPU benchmark.

open_clip's CLIP class from a JSON config, open_clip's tokenizer and ClipLoss; a few minutes on 2 CPU
cores. The result loads with `load_teacher({"config": ..., "pretrained": ...})` like any teacher.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.loss import ClipLoss
from open_clip.tokenizer import SimpleTokenizer
from safetensors.torch import save_file

from ..io import atomic_json_dump, atomic_write
from ..regions import region_embeddings
from .world import CAPTION_SETS, NOVEL_SHAPES, SHAPES, caption_sample, scene
from ..teacher import Teacher, model_from_config, load_teacher
from ..text import text_embeddings

log = logging.getLogger(__name__)

CONFIG_NAME = "synthetic-rn"
TRAINING_FILE = "training.json"  # beside a trained teacher: how it was trained (its caption set among them)


def teacher_config() -> dict:
    """The packaged JSON config of the synthetic-world teacher (a 64-pixel ViT and a small text tower)."""
    return json.loads(resources.files("ovclip.model_configs").joinpath(CONFIG_NAME + ".json").read_text())


def caption_pool(n: int, seed: int, size: int, captions: str = "default"
                 ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """n captioned single-object images: uint8 (n, 3, size, size), captions written from the templates of
    the caption set `captions` (world.CAPTION_SETS), class positions."""
    if captions not in CAPTION_SETS:
        raise ValueError(f"unknown caption set {captions!r}: choose one of {sorted(CAPTION_SETS)}")
    templates = CAPTION_SETS[captions]
    rng = np.random.default_rng(seed)
    images, texts, labels = [], [], []
    for i in range(n):
        img, cap, lab = caption_sample(rng, size, label=i % len(SHAPES), templates=templates)
        images.append(img)
        texts.append(cap)
        labels.append(lab)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), texts, torch.tensor(labels)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


# the teacher's training crops are squashed to its input (world.caption_sample: aspect ignored, bilinear): so is
# its preprocess (open_clip's preprocess_cfg keys; and the crops of a class bank made with it)
SQUASHED = {"resize_mode": "squash", "interpolation": "bilinear"}


def train_tiny_clip(out_dir: "str | Path", seed: int = 0, steps: int = 1200, batch_size: int = 128,
                    pool_size: int = 16000, lr: float = 1e-3, log_every: int = 100, captions: str = "default"
                    ) -> dict[str, Any]:
    """Train the teacher on captions of the caption set `captions` (world.CAPTION_SETS) and write
    `teacher.json` (model + preprocess config), `teacher.safetensors` (fp16) and `training.json` (these
    arguments) to out_dir. Returns the loss history and timing."""
    cfg = teacher_config()
    size = cfg["vision_cfg"]["image_size"]
    torch.manual_seed(seed)
    model = model_from_config(cfg, seed)
    tokenizer = SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    images, texts, _ = caption_pool(pool_size, seed, size, captions)
    tokens = tokenizer(texts)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 20)
    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(seed)
    history, t0 = [], time.perf_counter()
    model.train()
    for step in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        img = _normalise(images[idx])
        if torch.rand((), generator=gen) < 0.5:  # shapes are the same mirrored; colours and captions too
            img = img.flip(-1)
        image_features = F.normalize(model.encode_image(img), dim=-1)
        text_features = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        history.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            log.info("teacher step %d/%d loss %.3f (%.0f s)", step + 1, steps, np.mean(history[-log_every:]),
                     time.perf_counter() - t0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "teacher.safetensors", lambda tmp: save_file(state, tmp))
    preprocess_cfg = {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD), **SQUASHED}
    atomic_json_dump({**cfg, "preprocess_cfg": preprocess_cfg}, out / "teacher.json", indent=1)
    atomic_json_dump({"captions": captions, "seed": seed, "steps": steps, "batch_size": batch_size,
                      "pool_size": pool_size, "lr": lr}, out / TRAINING_FILE, indent=1)
    return {"loss": history, "seconds": time.perf_counter() - t0}


def teacher_captions(folder: "str | Path") -> str:
    """The caption set the teacher in `folder` was trained on ("default" when it says nothing: the shipped
    model_zoo/synthetic teacher predates the choice)."""
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text()).get("captions", "default") if path.is_file() else "default"


def teacher_spec(folder: "str | Path") -> dict:
    """The `load_teacher` spec of a teacher written by `train_tiny_clip`."""
    folder = Path(folder)
    return {"config": str(folder / "teacher.json"), "pretrained": str(folder / "teacher.safetensors")}


def zero_shot_accuracy(teacher: Teacher, seed: int = 12345, n_images: int = 150, size: int = 128,
                       templates: "str | Sequence[str]" = "single") -> dict[str, float]:
    """Accuracy of the teacher classifying crops (1x and 1.5x, as in ViLD) of the objects of held-out
    detection images over all classes; also split into base and novel classes."""
    rng = np.random.default_rng(seed)
    text = text_embeddings(teacher, list(SHAPES), templates, cache_dir=False)
    correct: dict[str, list[bool]] = {"base": [], "novel": []}
    for _ in range(n_images):
        img, objects = scene(rng, size)
        if not objects:
            continue
        r = region_embeddings(teacher, torch.from_numpy(img).permute(2, 0, 1), [o.box for o in objects])
        pred = (r.embeddings @ text.T).argmax(1)
        for o, p in zip(objects, pred.tolist()):
            correct["novel" if SHAPES[o.label] in NOVEL_SHAPES else "base"].append(p == o.label)
    every = correct["base"] + correct["novel"]
    return {"accuracy": 100 * float(np.mean(every)), "base": 100 * float(np.mean(correct["base"])),
            "novel": 100 * float(np.mean(correct["novel"])), "crops": len(every)}


def load_synthetic_teacher(folder: "str | Path", device: str = "cpu") -> Optional[Teacher]:
    """The teacher in `folder`, or None if it has not been trained there yet. Its preprocess squashes (SQUASHED),
    also when its teacher.json predates saying so."""
    spec = teacher_spec(folder)
    if not (Path(spec["config"]).is_file() and Path(spec["pretrained"]).is_file()):
        return None
    return replace(load_teacher(spec, device=device), **SQUASHED)
