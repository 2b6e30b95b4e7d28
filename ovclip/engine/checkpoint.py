"""Checkpoints that load with `torch.load(weights_only=True)`, resume included.

mmengine saves its MessageHub as pickled `HistoryBuffer` objects, whose statistics methods pickle
as `getattr(HistoryBuffer, 'mean')`. Since torch 2.6 defaults to weights_only loading, such a
checkpoint can only be resumed by allowing arbitrary pickles (or `getattr`) into the unpickler.
Instead, `PlainCheckpointHook` writes those buffers as plain tensors and lists, and turns them back
after loading; mmengine's loader for local files is replaced by a weights_only one.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader

from ..io import atomic_write
from ..errors import UserInputError

_BUFFER_TAG = "__history_buffer__"
_ARRAY_TAG = "__ndarray__"


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint is missing, corrupt or holds objects that cannot be loaded safely."""


def to_plain(obj: Any) -> Any:
    """Replace HistoryBuffers and numpy values by tensors / Python values, recursively."""
    if isinstance(obj, HistoryBuffer):
        return {_BUFFER_TAG: True, "log": torch.from_numpy(np.asarray(obj._log_history, dtype=np.float64)),
                "count": torch.from_numpy(np.asarray(obj._count_history, dtype=np.float64)),
                "max_length": obj.max_length}
    if isinstance(obj, np.ndarray):
        return {_ARRAY_TAG: torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of `to_plain`."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG) is True:
            return HistoryBuffer(obj["log"].numpy().tolist(), obj["count"].numpy().tolist(), obj["max_length"])
        if set(obj) == {_ARRAY_TAG}:
            return obj[_ARRAY_TAG].numpy()
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_plain(v) for v in obj)
    return obj


def load_checkpoint_file(path: "str | os.PathLike", map_location: Any = "cpu") -> dict:
    """torch.load with weights_only=True; clear errors for a missing, corrupt or unsafe file."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as e:
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{path} holds pickled Python objects that cannot be loaded safely (weights_only=True). "
                f"If you trust the file, re-save its weights: ckpt = torch.load(path, weights_only=False); "
                f"torch.save({{'state_dict': ckpt['state_dict']}}, new_path)") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {text.splitlines()[0]}") from None
    except (EOFError, OSError, ValueError) as e:  # truncated or not a torch file at all
        raise CheckpointError(f"cannot read checkpoint {path} ({e}); it may be truncated: use an earlier one") \
            from None


def model_state_dict(path: "str | os.PathLike") -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint (an mmengine checkpoint or a bare state dict)."""
    ckpt = load_checkpoint_file(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no 'state_dict' of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_from_local_weights_only(filename: str, map_location: Any) -> dict:
    """mmengine's loader for local paths, made weights_only (registered when ovclip.engine is imported)."""
    return load_checkpoint_file(filename, map_location)


# Registered in mmengine's root registry, so that configs of every scope (ovd, ovseg) find it.
@HOOKS.register_module(force=True)
class PlainCheckpointHook(Hook):
    """Saves checkpoints as tensors and plain data only, so that resume works with weights_only loading."""

    priority = "VERY_LOW"  # run after every other hook has added its part to the checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102 - mmengine hook
        for key in list(checkpoint):
            if key != "state_dict":
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102 - mmengine hook
        for key in list(checkpoint):
            if key != "state_dict":
                checkpoint[key] = from_plain(checkpoint[key])


@HOOKS.register_module(force=True)
class SafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook (same options), except that a job killed while saving keeps its last
    finished checkpoint. mmengine deletes the oldest checkpoint beyond `max_keep_ckpts` before writing the
    new one, in place, and then rewrites `last_checkpoint` in place: a kill in between leaves a torn file
    and, with max_keep_ckpts=1, nothing to resume from. Here the new checkpoint is written under a
    temporary name and renamed, `last_checkpoint` is replaced atomically, and only then is the oldest
    one deleted. Non-local backends fall back to mmengine's behaviour."""

    def _save_checkpoint_with_step(self, runner, step, meta):  # noqa: D102 - mmengine hook
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        stale = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        name = self.filename_tmpl.format(step)
        self.last_ckpt = os.path.join(self.out_dir, name)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(self.out_dir, name + ".tmp", self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        os.replace(self.last_ckpt + ".tmp", self.last_ckpt)
        atomic_write(os.path.join(runner.work_dir, "last_checkpoint"),
                     lambda tmp: Path(tmp).write_text(self.last_ckpt, encoding="utf-8"))
        if stale is not None:
            old = Path(self.out_dir) / self.filename_tmpl.format(stale)
            old.unlink(missing_ok=True)
