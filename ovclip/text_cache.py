"""The text-embedding cache: class embeddings by key, stacked in memory and in append-only files on disk.

On disk a cache (one per teacher weights x templates) is a folder of segments. A segment is `<stem>.npy`, a
float32 (N, D) array, beside `<stem>.json`, the N class keys in row order; it is never changed once
written. A writer adds its new classes as a new segment (array first, keys last, each renamed into place),
so concurrent writers never touch the same file, and a reader sees a segment whole or not at all. A lookup
parses the keys of the segments it has not seen yet, then reads only the rows it needs from a memory-mapped
array: a hit costs the same whatever else the cache holds. Past `MAX_SEGMENTS` segments a writer merges
them into one (written before the old ones are removed, so every key stays readable throughout; two
writers merging at once only leave a duplicate, which costs nothing).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .io import atomic_write

log = logging.getLogger(__name__)

MAX_SEGMENTS = 16


class EmbeddingTable:
    """Rows of a (N, D) embedding table by key, in memory: appended in chunks, stacked when read."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self._chunks: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.index)

    # Whole-list operations (map, zip, set algebra) rather than Python loops: 21k keys in a few ms.
    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys not in the table, each once, in first-seen order."""
        if all(map(self.index.__contains__, keys)):
            return []
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def add(self, keys: Sequence[str], rows: torch.Tensor) -> None:
        """Append rows (keys already present, or repeated, keep their first row)."""
        start = len(self.index)
        if not (self.index.keys().isdisjoint(keys) and len(set(keys)) == len(keys)):
            first = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))  # key -> its first position
            new = sorted(i for k, i in first.items() if k not in self.index)
            keys, rows = [keys[i] for i in new], rows[new]
        if len(keys):
            self.index.update(zip(keys, range(start, start + len(keys))))
            self._chunks.append(rows.float().clone())

    def gather(self, keys: Sequence[str]) -> torch.Tensor:
        """The (len(keys), D) rows of these keys, all of which must be present."""
        if len(self._chunks) > 1:
            self._chunks = [torch.cat(self._chunks)]
        return self._chunks[0].index_select(0, torch.tensor(list(map(self.index.__getitem__, keys)), dtype=torch.long))


class SegmentStore:
    """One cache folder on disk (see the module docstring); remembers the key index of each segment read."""

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder)
        self._indexes: dict[str, dict[str, int]] = {}  # segment stem -> key -> row (segments never change)

    def _stems(self) -> list[str]:
        try:
            return sorted(p.name[:-5] for p in os.scandir(self.folder) if p.name.endswith(".json")
                          and not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _index(self, stem: str) -> Optional[dict[str, int]]:
        """The segment's key -> row, or None where it vanished (merged by another writer) or is damaged."""
        if stem not in self._indexes:
            try:
                keys = json.loads((self.folder / f"{stem}.json").read_text(encoding="utf-8"))
                if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                    raise ValueError("the keys file is not a list of strings")
            except FileNotFoundError:
                return None
            except (OSError, ValueError) as e:  # a damaged cache is only a lost speed-up: drop the segment
                self._drop_damaged(stem, e)
                return None
            self._indexes[stem] = dict(zip(keys, range(len(keys))))
        return self._indexes[stem]

    def _rows(self, stem: str, rows: np.ndarray, expected: int) -> Optional[np.ndarray]:
        try:
            array = np.load(self.folder / f"{stem}.npy", mmap_mode="r")
            if array.ndim != 2 or array.shape[0] != expected or array.dtype != np.float32:
                raise ValueError(f"array of shape {array.shape} and type {array.dtype} for {expected} keys")
            out = np.array(array[rows])  # a copy: the map is closed when `array` goes
            del array
            return out
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self._drop_damaged(stem, e)
            return None

    def _drop_damaged(self, stem: str, error: Exception) -> None:
        log.warning("ignoring a damaged text-embedding cache segment %s (%s); its classes will be encoded again",
                    self.folder / stem, error)
        self._indexes.pop(stem, None)
        self._remove(stem)

    def _remove(self, stem: str) -> None:
        for suffix in (".json", ".npy"):  # keys first: a reader never finds keys without their array
            try:
                (self.folder / f"{stem}{suffix}").unlink()
            except OSError:  # gone already (another writer merged it), or mapped by a reader on Windows
                pass

    def lookup(self, keys: Sequence[str]) -> tuple[list[str], Optional[torch.Tensor]]:
        """The keys found on disk and their (K, D) rows (None if none is found)."""
        wanted = set(keys)
        found_keys: list[str] = []
        found_rows: list[np.ndarray] = []
        for stem in reversed(self._stems()):  # newest first: a merged segment holds what older ones do
            if not wanted:
                break
            index = self._index(stem)
            if not index:
                continue
            here = list(wanted.intersection(index))
            if not here:
                continue
            rows = self._rows(stem, np.fromiter(map(index.__getitem__, here), np.int64, len(here)), len(index))
            if rows is None:
                continue
            found_keys += here
            found_rows.append(rows)
            wanted.difference_update(here)
        if not found_rows:
            return [], None
        return found_keys, torch.from_numpy(np.concatenate(found_rows))

    def append(self, keys: Sequence[str], rows: torch.Tensor) -> None:
        """Write these rows as a new segment, then merge the folder's segments if there are too many."""
        self._write(list(keys), rows.detach().float().cpu().numpy())
        stems = self._stems()
        if len(stems) > MAX_SEGMENTS:
            self._merge(stems)

    def _write(self, keys: list[str], array: np.ndarray) -> str:
        stem = f"{time.time_ns():016x}-{os.getpid()}-{secrets.token_hex(4)}"  # sorts by time

        def save(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=np.float32))
        atomic_write(self.folder / f"{stem}.npy", save)
        atomic_write(self.folder / f"{stem}.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(keys, ensure_ascii=False), encoding="utf-8"))
        self._indexes[stem] = dict(zip(keys, range(len(keys))))
        return stem

    def _merge(self, stems: list[str]) -> None:
        keys, rows = self.lookup(sorted({k for s in stems for k in (self._index(s) or {})}))
        if rows is None:
            return
        self._write(keys, rows.numpy())
        for stem in stems:
            self._remove(stem)
            self._indexes.pop(stem, None)
        log.info("merged %d text-embedding cache segments (%d classes) in %s", len(stems), len(keys), self.folder)
