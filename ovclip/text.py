"""Text embeddings of a vocabulary: prompt ensembles, batched, cached on disk and in memory, with progress."""
from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from .io import atomic_torch_save
from .prompts import average_embeddings, format_prompts, get_templates
from .teacher import Teacher
from .vocabulary import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

# This process's copy of each cache file it used (cache file -> class key -> embedding): a vocabulary used
# again in one run (a demo switching back, a second model) costs neither an encoder pass nor a file read,
# even where the cache file cannot be written.
_MEMO: dict[str, dict[str, torch.Tensor]] = {}


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


def _write_cache(path: Path, fresh: dict[str, torch.Tensor]) -> None:
    # Re-read before writing so that a concurrent writer's classes are kept.
    try:
        atomic_torch_save({**_read_cache(path), **fresh}, path)
    except (OSError, RuntimeError) as e:  # unwritable or full (torch.save's RuntimeError): keep the embeddings
        log.warning("could not write the text-embedding cache %s (%s); later runs will encode these classes "
                    "again (set OVCLIP_CACHE to a writable folder)", path, e)


def encode_classes(teacher: Teacher, prompts: Sequence[Sequence[str]], batch_size: int = 256,
                   progress: Optional[bool] = None) -> torch.Tensor:
    """Unit (C, D) embeddings of C classes, each the average of its prompts, encoded in batches of
    `batch_size` prompts. `progress`: a bar of classes done on stderr; None shows it when the work takes
    more than one batch, in the first process of a torchrun job only, unless TQDM_DISABLE=1; False never."""
    flat = list(itertools.chain.from_iterable(prompts))
    ends = list(itertools.accumulate(len(p) for p in prompts))
    if progress is None:
        progress = len(flat) > batch_size and os.environ.get("RANK", "0") == "0" and \
            os.environ.get("TQDM_DISABLE", "").lower() in ("", "0", "false")
    out = []
    with tqdm(total=len(prompts), desc="text embeddings", unit="class", disable=not progress) as bar:
        for start in range(0, len(flat), batch_size):
            out.append(teacher.encode_text(flat[start:start + batch_size], batch_size=batch_size).cpu())
            bar.update(bisect.bisect_right(ends, start + batch_size) - bar.n)
    encoded = torch.cat(out) if out else torch.zeros(0, teacher.embed_dim)
    return average_embeddings(encoded, [len(p) for p in prompts])


def text_embeddings(teacher: Teacher, vocabulary: "Vocabulary | str | Sequence[str]",
                    templates: "str | Sequence[str]" = "vild", cache_dir: "str | Path | None | bool" = None,
                    batch_size: int = 256, progress: Optional[bool] = None) -> torch.Tensor:
    """Unit-length (C, D) class embeddings: each class averages its templates x synonyms prompts.

    Embeddings are cached per (teacher weights, templates, class names), on disk and in this process's
    memory; a class already in the cache costs no text-encoder pass. `cache_dir=False` disables both.
    The classes that miss the cache show a progress bar when they need more than one encoder batch
    (`encode_classes`; `progress=False` or TQDM_DISABLE=1 hides it, `progress=True` always shows it).
    """
    vocab = load_vocabulary(vocabulary)
    temps = get_templates(templates)
    keys = ["|".join(s) for s in vocab.synonyms]
    path = None
    cache: dict[str, torch.Tensor] = {}
    if cache_dir is not False:
        path = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), teacher, temps)
        cache = _MEMO.setdefault(str(path), {})
        if any(k not in cache for k in keys):
            cache.update(_read_cache(path))
    missing = [i for i, k in enumerate(keys) if k not in cache]
    if missing:
        prompts = [[p for name in vocab.synonyms[i] for p in format_prompts(temps, name)] for i in missing]
        log.info("encoding %d prompts for %d classes", sum(map(len, prompts)), len(missing))
        fresh = encode_classes(teacher, prompts, batch_size, progress)
        cache.update((keys[i], e.clone()) for i, e in zip(missing, fresh))
        if path is not None:
            _write_cache(path, {keys[i]: cache[keys[i]] for i in missing})
    return torch.stack([cache[k] for k in keys]).float()
