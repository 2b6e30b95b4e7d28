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

from .prompts import average_embeddings, format_prompts, get_templates
from .teacher import Teacher
from .text_cache import EmbeddingTable, SegmentStore
from .vocabulary import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

# This process's copy of each cache it used (cache folder -> table): a vocabulary used again in one run (a
# demo switching back, a second model) costs neither an encoder pass nor a file read, even where the cache
# folder cannot be written.
_MEMO: dict[str, tuple[EmbeddingTable, Optional[SegmentStore]]] = {}


def default_cache_dir() -> Path:
    """Where ovclip caches text embeddings: $OVCLIP_CACHE or ~/.cache/ovclip."""
    return Path(os.environ.get("OVCLIP_CACHE", Path.home() / ".cache" / "ovclip"))


def _cache_folder(cache_dir: Path, teacher: Teacher, templates: Sequence[str]) -> Path:
    key = hashlib.blake2b("\n".join(templates).encode(), digest_size=8).hexdigest()
    return cache_dir / "text" / f"{teacher.fingerprint}-{key}"


def _open_cache(folder: Path) -> tuple[EmbeddingTable, SegmentStore]:
    if str(folder) not in _MEMO:
        store = SegmentStore(folder)
        _import_legacy(folder.parent / f"{folder.name}.pt", store)
        _MEMO[str(folder)] = (EmbeddingTable(), store)
    return _MEMO[str(folder)]


def _import_legacy(path: Path, store: SegmentStore) -> None:
    """Move a cache written by ovclip <= 0.1 (one pickled dict of tensors per file) into the segment store."""
    if not path.is_file():
        return
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, dict) and data:
            store.append(list(data), torch.stack(list(data.values())))
        path.unlink()
    except Exception as e:  # unreadable or unwritable: only a lost speed-up
        log.warning("could not import the old text-embedding cache %s (%s)", path, e)


def _save(store: SegmentStore, keys: list[str], rows: torch.Tensor) -> None:
    try:
        store.append(keys, rows)
    except OSError as e:  # unwritable or full: the embeddings stay in this process's memory
        log.warning("could not write the text-embedding cache %s (%s); later runs will encode these classes "
                    "again (set OVCLIP_CACHE to a writable folder)", store.folder, e)


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
    keys = list(map("|".join, vocab.synonyms))
    if cache_dir is False:
        table, store = EmbeddingTable(), None
    else:
        table, store = _open_cache(_cache_folder(Path(cache_dir) if cache_dir else default_cache_dir(), teacher, temps))
    missing = table.missing(keys)
    if missing and store is not None:
        found, rows = store.lookup(missing)
        if found:
            table.add(found, rows)
        missing = table.missing(keys)
    if missing:
        names = {k: s for k, s in zip(keys, vocab.synonyms)}
        prompts = [[p for name in names[k] for p in format_prompts(temps, name)] for k in missing]
        log.info("encoding %d prompts for %d classes", sum(map(len, prompts)), len(missing))
        fresh = encode_classes(teacher, prompts, batch_size, progress)
        table.add(missing, fresh)
        if store is not None:
            _save(store, missing, fresh)
    return table.gather(keys)
