"""Text embeddings of a vocabulary: prompt ensembles, batched, cached on disk."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import torch

from .io import atomic_torch_save
from .prompts import average_embeddings, format_prompts, get_templates
from .teacher import Teacher
from .vocabulary import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where ovclip caches text embeddings: $OVCLIP_CACHE or ~/.cache/ovclip."""
    return Path(os.environ.get("OVCLIP_CACHE", Path.home() / ".cache" / "ovclip"))


def _cache_file(cache_dir: Path, teacher: Teacher, templates: Sequence[str]) -> Path:
    key = hashlib.blake2b("\n".join(templates).encode(), digest_size=8).hexdigest()
    return cache_dir / "text" / f"{teacher.fingerprint}-{key}.pt"


def _read_cache(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, dict):
            return data
    except Exception as e:  # a damaged cache is only a lost speed-up
        log.warning("ignoring unreadable text-embedding cache %s (%s); it will be rewritten", path, e)
    return {}


def text_embeddings(teacher: Teacher, vocabulary: "Vocabulary | str | Sequence[str]",
                    templates: "str | Sequence[str]" = "vild", cache_dir: "str | Path | None | bool" = None,
                    batch_size: int = 256) -> torch.Tensor:
    """Unit-length (C, D) class embeddings: each class averages its templates x synonyms prompts.

    Embeddings are cached per (teacher weights, templates, class names); a class already in the cache
    costs no text-encoder pass. `cache_dir=False` disables the cache.
    """
    vocab = load_vocabulary(vocabulary)
    temps = get_templates(templates)
    keys = ["|".join(s) for s in vocab.synonyms]
    path = None
    cache: dict[str, torch.Tensor] = {}
    if cache_dir is not False:
        path = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), teacher, temps)
        cache = _read_cache(path)
    missing = [i for i, k in enumerate(keys) if k not in cache]
    if missing:
        prompts: list[str] = []
        groups: list[int] = []
        for i in missing:
            for name in vocab.synonyms[i]:
                prompts.extend(format_prompts(temps, name))
            groups.append(len(vocab.synonyms[i]) * len(temps))
        log.info("encoding %d prompts for %d classes", len(prompts), len(missing))
        fresh = average_embeddings(teacher.encode_text(prompts, batch_size=batch_size).cpu(), groups)
        for i, e in zip(missing, fresh):
            cache[keys[i]] = e.clone()
        if path is not None:
            # Re-read before writing so that a concurrent writer's classes are kept.
            merged = {**_read_cache(path), **{keys[i]: cache[keys[i]] for i in missing}}
            atomic_torch_save(merged, path)
    return torch.stack([cache[k] for k in keys]).float()
