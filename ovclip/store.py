"""On-disk store of per-image region embeddings: boxes + fp16 embeddings in sharded safetensors files.

Layout of a store folder:
    meta.json                      what made it (teacher, embedding size, scales); checked on reopen
    shards/r{rank}-{seq}.safetensors  one file per flush of one writer; written atomically
    index.json                     image id -> shard, rebuilt from shard headers when stale
    damaged/                       shards a resumed writer found damaged, set aside (never deleted)

Every writer (one per process / torchrun rank) owns its own shard names, so writers never collide; a
killed writer loses only the images it had not flushed yet, and a restarted one skips every image
already in a sound shard. Each shard carries a checksum of its arrays: a reader names a damaged shard,
and a restarted writer checks each shard before trusting it, sets a damaged one aside and redoes its images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .io import atomic_json_dump, atomic_write
from .errors import UserInputError

log = logging.getLogger(__name__)

FORMAT = "ovclip-regions-1"
_SHARD = re.compile(r"^r(\d{3,})-(\d{6,})\.safetensors$")
_SHARD_PREFIX = re.compile(r"^r(\d{3,})-(\d{6,})")  # also matches the names of shards set aside
DAMAGED = "damaged"


class StoreError(UserInputError, RuntimeError):
    """The feature store cannot be used as asked."""


class CorruptShardError(StoreError):
    """A shard file is damaged (truncated, unreadable, or its checksum does not match); `reason` says how."""

    reason = "is damaged"


def _corrupt(path: Path, reason: str) -> CorruptShardError:
    """The error naming a damaged shard and the fix (a plain one-message exception: DataLoader workers
    re-raise it by type and message)."""
    shards = path.parent
    root = shards.parent  # the store folder: path is root/shards/NAME
    error = CorruptShardError(f"shard {path} {reason}; rerun tools/precompute.py with the same config and --out "
                              f"{root}: it sets damaged shards aside in {root / DAMAGED} and recomputes only "
                              f"their images")
    error.reason = reason
    return error


def _checksum(arrays: Iterable[np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read_header(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors also refuses a file shorter or longer than its header says
        raise _corrupt(path, f"is unreadable ({e})") from None
    if meta.get("format") != FORMAT or "image_ids" not in meta or set(shapes) != {"boxes", "embeddings", "offsets"}:
        raise _corrupt(path, f"is not an {FORMAT} shard")
    return {"image_ids": json.loads(meta["image_ids"]), "checksum": meta.get("checksum"),
            "regions": shapes["boxes"][0]}


def verify_shard(path: Path) -> list[str]:
    """Read a whole shard and check its checksum; its image ids, or CorruptShardError naming it."""
    header = _read_header(path)
    try:
        with safe_open(str(path), framework="np") as f:
            arrays = [f.get_tensor(k) for k in ("boxes", "embeddings", "offsets")]
    except Exception as e:
        raise _corrupt(path, f"is unreadable ({e})") from None
    if _checksum(arrays) != header["checksum"]:
        raise _corrupt(path, "fails its checksum (damaged on disk)")
    return header["image_ids"]


class FeatureStore:
    """Read access to a store folder: `store[image_id] -> (boxes (R, 4) float32, embeddings (R, D) float16)`."""

    def __init__(self, root: "str | Path", verify: bool = True):
        self.root = Path(root)
        if not (self.root / "meta.json").is_file():
            raise StoreError(f"{self.root} is not a feature store (no meta.json); make one with tools/precompute.py")
        self.meta = json.loads((self.root / "meta.json").read_text())
        self.verify_on_read = verify
        self._verified: set[str] = set()
        self._index = self._load_index()

    @staticmethod
    def shard_files(root: "str | Path") -> list[Path]:
        """Shard files of a store folder, in name order."""
        shards = Path(root) / "shards"
        return sorted(p for p in shards.glob("*.safetensors") if _SHARD.match(p.name)) if shards.is_dir() else []

    def _load_index(self) -> dict[str, tuple[str, int]]:
        files = self.shard_files(self.root)
        names = [p.name for p in files]
        index_path = self.root / "index.json"
        if index_path.is_file():
            try:
                saved = json.loads(index_path.read_text())
                if saved.get("shards") == names:
                    return {k: tuple(v) for k, v in saved["images"].items()}
            except (json.JSONDecodeError, AttributeError, KeyError, TypeError):
                log.warning("rebuilding damaged index %s", index_path)
        index: dict[str, tuple[str, int]] = {}
        for p in files:
            for pos, image_id in enumerate(_read_header(p)["image_ids"]):
                if image_id in index:
                    log.warning("image %s is in both %s and %s; using the latter", image_id, index[image_id][0], p.name)
                index[image_id] = (p.name, pos)
        try:
            atomic_json_dump({"shards": names, "images": index}, index_path)
        except OSError:  # a read-only store still works, just without the cached index
            pass
        return index

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_id) -> bool:
        return str(image_id) in self._index

    @property
    def image_ids(self) -> list[str]:
        """All stored image ids (as strings)."""
        return list(self._index)

    def verify(self) -> int:
        """Check every shard's checksum; raise CorruptShardError naming the first bad one; return the count."""
        files = self.shard_files(self.root)
        for p in files:
            verify_shard(p)
            self._verified.add(p.name)
        return len(files)

    def __getitem__(self, image_id) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(image_id)
        if key not in self._index:
            raise KeyError(f"image {key} is not in feature store {self.root}")
        shard, pos = self._index[key]
        path = self.root / "shards" / shard
        if self.verify_on_read and shard not in self._verified:
            verify_shard(path)
            self._verified.add(shard)
        try:
            with safe_open(str(path), framework="pt") as f:
                lo, hi = (int(v) for v in f.get_slice("offsets")[pos:pos + 2])
                return f.get_slice("boxes")[lo:hi], f.get_slice("embeddings")[lo:hi]
        except Exception as e:
            raise _corrupt(path, f"is unreadable ({e})") from None

    def get(self, image_id, default=None):
        """`store[image_id]`, or `default` when the image is not stored."""
        return self[image_id] if image_id in self else default


class StoreWriter:
    """Appends images to a store folder as one writer (`rank`), flushing a shard every `shard_size`
    images or `flush_seconds`, whichever comes first. Use as a context manager.

    An image of an earlier run counts as done only once its shard has passed `verify_shard` (checked when
    the image is first asked about, so each writer reads only the shards holding its images); a damaged
    shard is moved to `damaged/` with a warning naming it, and its images are no longer done."""

    def __init__(self, root: "str | Path", meta: dict, rank: int = 0, shard_size: int = 64,
                 flush_seconds: float = 60.0):
        if shard_size < 1:
            raise StoreError("shard_size must be at least 1")
        self.root = Path(root)
        self.rank, self.shard_size, self.flush_seconds = rank, shard_size, flush_seconds
        self.meta = {"format": FORMAT, **meta}
        self._open_meta()
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "shards").glob(f".r{rank:03d}-*.tmp"):
            stale.unlink(missing_ok=True)  # left by a writer killed mid-flush; its images were not finished
        self.damaged: list[str] = []  # names of the shards this writer set aside
        self._shard_of: dict[str, str] = {}  # image id -> the shard holding it (the last one, as FeatureStore)
        self._checked: set[str] = set()
        for p in FeatureStore.shard_files(self.root):
            try:
                ids = _read_header(p)["image_ids"]
            except CorruptShardError as e:
                self._set_aside(p, e.reason, "its images are")
                continue
            self._shard_of.update((image_id, p.name) for image_id in ids)
        self.done: set[str] = set(self._shard_of)
        seqs = [-1] + [int(m.group(2)) for m in map(_SHARD_PREFIX.match, self._shard_names())
                       if m and int(m.group(1)) == rank]
        self._seq = max(seqs) + 1
        self._buffer: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._last_flush = time.monotonic()

    def _shard_names(self) -> list[str]:
        """Names of every shard this store has had: sound ones and those set aside (never reused)."""
        damaged = self.root / DAMAGED
        return [p.name for p in FeatureStore.shard_files(self.root)] + \
            ([p.name for p in damaged.iterdir()] if damaged.is_dir() else [])

    def _set_aside(self, path: Path, reason: str, redone: str) -> None:
        """Move a damaged shard to damaged/ (kept for inspection) and warn, naming it."""
        dest_dir = self.root / DAMAGED
        dest_dir.mkdir(exist_ok=True)
        dest, n = dest_dir / path.name, 0
        while dest.exists():
            n += 1
            dest = dest_dir / f"{path.stem}~{n}{path.suffix}"
        try:
            path.rename(dest)
        except FileNotFoundError:  # another writer (rank) set it aside first
            dest = None
        self.damaged.append(path.name)
        log.warning("feature store %s: shard %s %s; %s; %s computed again", self.root, path.name, reason,
                    f"moved it to {dest}" if dest else "another writer moved it away", redone)

    def _check(self, shard: str) -> None:
        """Verify a shard of an earlier run once; a damaged (or vanished) one stops counting as done."""
        self._checked.add(shard)
        path = self.root / "shards" / shard
        try:
            verify_shard(path)
        except CorruptShardError as e:
            lost = [k for k, s in self._shard_of.items() if s == shard]
            reason = e.reason if path.exists() else "was found damaged by another writer"
            self._set_aside(path, reason, f"its {len(lost)} images are")
            for k in lost:
                del self._shard_of[k]
            self.done.difference_update(lost)

    def _open_meta(self) -> None:
        path = self.root / "meta.json"
        if path.is_file():
            old = json.loads(path.read_text())
            clash = {k: (old.get(k), v) for k, v in self.meta.items() if old.get(k) != v}
            if clash:
                details = "; ".join(f"{k}: store has {a!r}, job has {b!r}" for k, (a, b) in clash.items())
                raise StoreError(f"feature store {self.root} was made with other settings ({details}); "
                                 "write to a new folder or use the same settings")
        else:
            atomic_json_dump(self.meta, path, indent=1)

    def __contains__(self, image_id) -> bool:
        key = str(image_id)
        if any(k == key for k, _, _ in self._buffer):
            return True
        shard = self._shard_of.get(key)
        if shard is not None and shard not in self._checked:
            self._check(shard)
        return key in self.done

    def add(self, image_id, boxes: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Queue one image's regions; flushes a shard when due."""
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu().numpy()
        emb = torch.as_tensor(embeddings).detach().to(torch.float16).cpu().numpy()
        if emb.ndim != 2 or emb.shape[0] != boxes.shape[0] or emb.shape[1] != self.meta["embed_dim"]:
            raise StoreError(f"image {image_id}: expected ({boxes.shape[0]}, {self.meta['embed_dim']}) embeddings, "
                             f"got {tuple(emb.shape)}")
        self._buffer.append((str(image_id), boxes, emb))
        if len(self._buffer) >= self.shard_size or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the queued images as one new shard (atomically)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        ids = [k for k, _, _ in self._buffer]
        boxes = np.concatenate([b for _, b, _ in self._buffer])
        emb = np.concatenate([e for _, _, e in self._buffer])
        offsets = np.cumsum([0] + [len(b) for _, b, _ in self._buffer]).astype(np.int64)
        metadata = {"format": FORMAT, "image_ids": json.dumps(ids), "checksum": _checksum([boxes, emb, offsets])}
        tensors = {"boxes": torch.from_numpy(boxes), "embeddings": torch.from_numpy(emb),
                   "offsets": torch.from_numpy(offsets)}
        path = self.root / "shards" / f"r{self.rank:03d}-{self._seq:06d}.safetensors"
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        self._seq += 1
        self._checked.add(path.name)  # written just now: nothing to verify
        self._shard_of.update((k, path.name) for k in ids)
        self.done.update(ids)
        self._buffer.clear()

    def close(self) -> None:
        """Flush what is queued."""
        self.flush()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        # Flush even when the job fails: images already embedded are finished work.
        self.close()
