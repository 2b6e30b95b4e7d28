"""Loading a frozen open_clip model as the teacher: architecture + pretrained tag, local checkpoint,
local open_clip folder, or a JSON model config (tiny random models for tests)."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from .errors import UserInputError

_PACKAGED_CONFIGS = "ovclip.model_configs"
# The tag that asks for random (seeded) weights on purpose: 'ViT-B-32/random', {"config": ..., "pretrained": "random"}.
RANDOM_TAG = "random"
# Packaged model configs that are random test models by design (their names say so); any other architecture or
# model config needs weights or the random tag, so that a forgotten tag never trains or labels with noise.
_RANDOM_BY_DESIGN = "tiny-"


class TeacherError(UserInputError, RuntimeError):
    """The teacher could not be loaded from the given spec."""


class TeacherWeightsUnavailable(TeacherError):
    """Pretrained weights are neither cached nor downloadable (offline)."""


RESIZE_MODES = ("shortest", "squash", "longest")  # open_clip's
INTERPOLATIONS = ("bilinear", "bicubic")  # the kernels of open_clip's evaluation preprocess


@dataclass
class Teacher:
    """A frozen CLIP model with its preprocessing and tokenizer."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    spec: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    # how its preprocess makes an image square (open_clip's preprocess_cfg): "shortest" (the shorter side to the
    # input size, then the centre square: CLIP's), "squash" (resized whole) or "longest" (padded)
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"  # and with which kernel ("bicubic" or "bilinear")
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def visual(self) -> torch.nn.Module:
        """The image tower."""
        return self.model.visual

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding."""
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") \
            and isinstance(self.model.text_projection, torch.Tensor) else int(self.visual.output_dim)

    @property
    def image_size(self) -> int:
        """Side of the square input the image tower was trained on."""
        size = self.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the image tower."""
        return next(self.visual.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """A hash of the text tower's weights: the identity used by the text-embedding cache."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            for name, t in self.model.state_dict().items():
                if name.startswith("visual.") or name == "logit_scale":
                    continue
                h.update(name.encode())
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def to(self, device: "torch.device | str") -> "Teacher":
        """Move the model to `device` (in place) and return the teacher."""
        device = torch.device(device)
        if self.device != device:
            self.model.to(device)
            self.device = device
        return self

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Map float images in [0, 1] of shape (N, 3, H, W) to the teacher's input statistics."""
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings of already-normalised images (N, 3, S, S) -> (N, D) float32."""
        return self.model.encode_image(images.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unnormalised embeddings of prompts -> (N, D) float32, in batches."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens).float())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)


def image_trunk(teacher: Teacher) -> torch.nn.Module:
    """A trainable float copy of a ModifiedResNet (CLIP RN) teacher's image tower, its attention pool
    replaced by an identity (no unused parameters under DDP): children stem convolutions, layer1..layer4.
    Where no other pretrained backbone can be loaded, the teacher is the one network that already knows
    the classes' looks; the teacher's own tower stays frozen."""
    if not isinstance(teacher.visual, ModifiedResNet):
        raise TeacherError(f"a backbone copied from the teacher needs a ModifiedResNet (CLIP RN) image tower, "
                           f"not {type(teacher.visual).__name__}")
    visual = copy.deepcopy(teacher.visual).float().requires_grad_(True)
    visual.attnpool = torch.nn.Identity()
    return visual


def packaged_model_configs() -> list[str]:
    """Names of the JSON model configs shipped with ovclip (tiny models for tests and examples)."""
    return sorted(p.name[:-5] for p in resources.files(_PACKAGED_CONFIGS).iterdir() if p.name.endswith(".json"))


def _read_json_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TeacherError(f"cannot read model config '{path}': {e}") from None
    cfg = cfg.get("model_cfg", cfg)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise TeacherError(f"model config '{path}' lacks {missing}; see open_clip's model_configs/*.json")
    return cfg


def model_from_config(cfg: dict, seed: int) -> torch.nn.Module:
    """A randomly initialised (seeded) open_clip CLIP / CustomTextCLIP from a model config dict."""
    cfg = json.loads(json.dumps(cfg))  # deep copy: open_clip mutates nested dicts
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    cfg.pop("preprocess_cfg", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return (CustomTextCLIP if custom else CLIP)(**cfg)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers, decided in seconds rather than after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(pretrained_cfg: dict, cache_dir: str | None) -> str | None:
    """The local file of a pretrained tag if open_clip already downloaded it."""
    hub = pretrained_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = pretrained_cfg.get("url", "")
    if url:
        target = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(target):
            return target
    return None


def _offline_message(arch: str, tag: str) -> str:
    return (f"teacher weights '{arch}/{tag}' are not in the local cache and the model hub cannot be "
            f"reached (offline, or HF_HUB_OFFLINE=1). Either run once with network access:\n"
            f"    python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{tag}')\"\n"
            f"(this fills ~/.cache/huggingface, which you may copy to this machine), or download the "
            f"checkpoint file yourself and pass its path: '{arch}/path/to/open_clip_model.safetensors'.")


def _parse_spec(spec: "str | dict") -> dict:
    """Normalise every accepted spelling of a teacher to a dict of arch / pretrained / config / local_dir."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"arch", "pretrained", "config", "local_dir", "seed"}
        if unknown:
            raise TeacherError(f"unknown teacher keys {sorted(unknown)}; use arch, pretrained, config, local_dir, seed")
        return dict(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise TeacherError("teacher spec must be a non-empty string such as 'ViT-B-32/openai'")
    spec = spec.strip()
    if spec.startswith("local-dir:"):
        return {"local_dir": spec[len("local-dir:"):]}
    if spec.startswith("hf-hub:"):
        return {"arch": spec}
    if spec.endswith(".json"):
        return {"config": spec}
    if spec in packaged_model_configs():
        return {"config": spec}
    if os.path.isdir(spec):
        return {"local_dir": spec}
    if os.path.isfile(spec):
        raise TeacherError(f"'{spec}' is a file; say which architecture it holds: 'ARCH/{spec}' "
                           f"(e.g. 'ViT-B-32/{spec}'), or give a folder with open_clip_config.json")
    arch, _, pretrained = spec.partition("/")
    return {"arch": arch, "pretrained": pretrained or None}


def _check_weights_named(parts: dict, spec: "str | dict") -> None:
    """Refuse a spec that names an architecture or model config but no weights: it would silently give a
    random teacher. Random weights must be asked for with the 'random' tag (the tiny test models excepted)."""
    if parts.get("pretrained") or parts.get("local_dir") or str(parts.get("arch", "")).startswith("hf-hub:"):
        return
    config = parts.get("config")
    if config is not None and config in packaged_model_configs() and config.startswith(_RANDOM_BY_DESIGN):
        return
    if config is not None:
        _resolve_config_path(config)  # a missing file is the first thing to say
        raise TeacherError(f"teacher model config '{config}' names no weights: give them as "
                           f"{{'config': '{config}', 'pretrained': 'path/to/weights.safetensors'}}, or "
                           f"'pretrained': '{RANDOM_TAG}' for random weights on purpose (tests)")
    arch = parts["arch"]
    tags = open_clip.list_pretrained_tags_by_model(arch) if arch in open_clip.list_models() else []
    example = f"'{arch}/{tags[0]}'" if tags else f"'{arch}/TAG'"
    more = ", ..." if len(tags) > 5 else ""
    raise TeacherError(f"teacher '{spec}' names no weights, which would give a random teacher: add a pretrained "
                       f"tag ({example}; tags: {', '.join(tags[:5])}{more}), a checkpoint ('{arch}/path/to/weights.safetensors'), or "
                       f"'{arch}/{RANDOM_TAG}' for random weights on purpose (tests)")


def _resolve_config_path(config: str) -> Path:
    if config in packaged_model_configs():
        return Path(str(resources.files(_PACKAGED_CONFIGS).joinpath(config + ".json")))
    path = Path(config)
    if not path.is_file():
        raise TeacherError(f"model config '{config}' not found; packaged configs: {packaged_model_configs()}")
    return path


def load_teacher(spec: "str | dict", device: "str | torch.device" = "cpu", precision: str = "fp32",
                 cache_dir: str | None = None) -> Teacher:
    """Load a frozen CLIP teacher.

    `spec` is one of: 'ARCH/TAG' ('ViT-B-32/openai'), 'ARCH/path/to/checkpoint', 'hf-hub:org/repo',
    'local-dir:/folder' or a folder with open_clip_config.json, a JSON model config path or the name of
    a packaged one ('tiny-vit'; random weights, seeded), or a dict with keys arch / pretrained / config /
    local_dir / seed. A spec without weights ('ViT-B-32', a model config without 'pretrained') is refused,
    except the packaged tiny test models: the tag 'random' ('ViT-B-32/random') asks for random weights.
    """
    parts = _parse_spec(spec)
    _check_weights_named(parts, spec)
    if parts.get("pretrained") == RANDOM_TAG:
        parts["pretrained"] = None
    device = torch.device(device)
    if precision not in ("fp32", "fp16", "bf16"):
        raise TeacherError(f"precision must be fp32, fp16 or bf16, not '{precision}'")
    name = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)
    mean, std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    if parts.get("config"):
        path = _resolve_config_path(parts["config"])
        cfg = _read_json_config(path)
        model = model_from_config(cfg, int(parts.get("seed", 0)))
        if parts.get("pretrained"):
            _load_state(model, parts["pretrained"])
        pp = json.loads(path.read_text()).get("preprocess_cfg", {})
        mean, std = tuple(pp.get("mean", mean)), tuple(pp.get("std", std))
        resize_mode, interpolation = _resize_cfg(pp, path)
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False, mean=mean, std=std,
                                               resize_mode=resize_mode, interpolation=interpolation)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg["text_cfg"].get("context_length", 77))
    elif parts.get("local_dir"):
        folder = parts["local_dir"]
        if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            raise TeacherError(f"teacher folder '{folder}' has no open_clip_config.json")
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        mean, std = _preprocess_stats(model, mean, std)
        resize_mode, interpolation = _resize_cfg(getattr(model.visual, "preprocess_cfg", None) or {}, name)
    else:
        arch, pretrained = parts.get("arch"), parts.get("pretrained")
        kwargs: dict[str, Any] = {"cache_dir": cache_dir}
        if not arch.startswith("hf-hub:"):
            if arch not in open_clip.list_models():
                raise TeacherError(f"unknown open_clip architecture '{arch}' in teacher spec '{name}'; "
                                   f"choose from open_clip.list_models(), e.g. ViT-B-32, RN50, ViT-B-16")
            tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
            if pretrained and not tag_cfg and not os.path.isfile(pretrained):
                tags = open_clip.list_pretrained_tags_by_model(arch)
                raise TeacherError(f"'{pretrained}' is neither a pretrained tag of {arch} nor a file; tags: {tags}")
            if tag_cfg:
                cached = _cached_weights(tag_cfg, cache_dir)
                if cached is not None:
                    # Load the cached file directly so that no network request is made at all.
                    kwargs.update(force_preprocess_cfg={k: tag_cfg[k] for k in ("mean", "std", "interpolation",
                                                                                 "resize_mode") if k in tag_cfg},
                                  force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
                    pretrained = cached
                elif not _hub_reachable():
                    raise TeacherWeightsUnavailable(_offline_message(arch, pretrained))
        elif not _hub_reachable():
            raise TeacherWeightsUnavailable(f"'{arch}' needs the model hub, which cannot be reached")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, **kwargs)
        except (RuntimeError, OSError, ValueError) as e:
            raise TeacherError(f"could not load teacher '{name}': {e}") from e
        tokenizer = open_clip.get_tokenizer(arch)
        mean, std = _preprocess_stats(model, mean, std)
        resize_mode, interpolation = _resize_cfg(getattr(model.visual, "preprocess_cfg", None) or {}, name)

    model = model.to(device).eval().requires_grad_(False)
    if precision != "fp32":
        model = model.to(torch.float16 if precision == "fp16" else torch.bfloat16)
    return Teacher(model, preprocess, tokenizer, name, tuple(mean), tuple(std), device, resize_mode, interpolation)


def _preprocess_stats(model: torch.nn.Module, mean, std):
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))


def _resize_cfg(cfg: dict, source: Any) -> tuple[str, str]:
    """How a preprocess config makes an image square, and with which kernel (CLIP's when it says nothing)."""
    resize_mode, interpolation = cfg.get("resize_mode") or "shortest", cfg.get("interpolation") or "bicubic"
    if resize_mode not in RESIZE_MODES or interpolation not in INTERPOLATIONS:
        raise TeacherError(f"{source}: preprocess_cfg's resize_mode must be one of {RESIZE_MODES} and its "
                           f"interpolation one of {INTERPOLATIONS}, not {resize_mode!r} / {interpolation!r}")
    return resize_mode, interpolation


def _load_state(model: torch.nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise TeacherError(f"teacher checkpoint '{path}' does not exist")
    try:
        open_clip.load_checkpoint(model, path, weights_only=True)
    except Exception as e:  # corrupt files raise many different errors
        raise TeacherError(f"cannot load teacher checkpoint '{path}': {e}") from e


def vision_kind(teacher: Teacher) -> str:
    """'vit' or 'resnet': which dense-embedding path the image tower supports."""
    if isinstance(teacher.visual, VisionTransformer):
        return "vit"
    if isinstance(teacher.visual, ModifiedResNet):
        return "resnet"
    raise TeacherError(f"dense embeddings need an open_clip VisionTransformer or ModifiedResNet image tower, "
                       f"not {type(teacher.visual).__name__} (teacher '{teacher.spec}')")

