"""Training and testing from config files with mmengine's Runner (what tools/train.py and test.py call)."""
from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, DefaultScope
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from ..io import atomic_json_dump
from ..options import ConfigError, check_arguments, close_hint
from .checkpoint import model_state_dict

# The top-level keys mmengine's Runner.from_cfg reads, plus mmengine's own config bookkeeping.
RUNNER_KEYS = (
    "model", "work_dir", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg",
    "test_cfg", "auto_scale_lr", "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator",
    "default_hooks", "custom_hooks", "data_preprocessor", "load_from", "resume", "launcher", "env_cfg",
    "log_processor", "log_level", "visualizer", "default_scope", "randomness", "experiment_name",
    "model_wrapper_cfg", "task",
)
SAFE_CHECKPOINT_HOOK = "PlainCheckpointHook"
PROJECT_PACKAGES = ("ovclip", "ovd", "ovseg")
ROOT_SUFFIX = "_root"  # top-level config variables that hold a data folder (data_root, lvis_root)
log = logging.getLogger(__name__)


def check_config_keys(cfg: Config) -> None:
    """Reject top-level keys that look like misspelt Runner keys ('train_dataloder'): mmengine would
    silently ignore them. Other helper variables (data_root, vocabulary, ...) are allowed."""
    for key in cfg.keys():
        if key in RUNNER_KEYS or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, RUNNER_KEYS, n=1, cutoff=0.85)
        if close:
            raise ConfigError(f"unknown config key '{key}': did you mean '{close[0]}'?")


class _FileOnly(logging.Filter):
    """Keeps off the console, for the log file only: mmengine's environment, config and hook-order dumps
    (~280 lines before the first progress line), its warning for each frozen parameter when a config has a
    `paramwise_cfg` (one per parameter of a frozen teacher or backbone, 45 for the synthetic OV-DETR: nothing
    is wrong), and the deprecation notices its own CheckpointHook raises on every run."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging API
        msg = record.msg if isinstance(record.msg, str) else ""
        return not (msg.startswith(("Config:\n", "Hooks will be executed", '"FileClient" will be deprecated',
                                    '"HardDiskBackend" is the alias'))
                    or "System environment:" in msg[:300] or msg.endswith(" is skipped since its requires_grad=False"))


class ProjectRunner(Runner):
    """mmengine's Runner whose console leaves out what `_FileOnly` names (mmengine's environment and config dumps,
    its warning per frozen parameter, its own deprecation notices); the log file gets everything."""

    def build_logger(self, *args, **kwargs):  # noqa: D102 - mmengine API
        logger = super().build_logger(*args, **kwargs)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and \
                    not any(isinstance(f, _FileOnly) for f in handler.filters):
                handler.addFilter(_FileOnly())
        files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
        if files:
            logger.info(f"environment and full config: in {files[0]}")
        return logger


def check_option_keys(cfg: Config, cfg_options: dict) -> None:
    """Refuse an override whose top-level key is neither in the config nor a Runner key ('foo=1')."""
    known = [*cfg.keys(), *RUNNER_KEYS]
    for key in cfg_options:
        top = key.split(".")[0]
        if top not in known:
            close = difflib.get_close_matches(top, known, n=1, cutoff=0.6)
            hint = f": did you mean '{close[0]}'?" if close else " (a new top-level key would be ignored)"
            raise ConfigError(f"--cfg-options {key}: unknown config key '{top}'{hint}")


def reroot(cfg: Config, cfg_options: dict) -> dict:
    """Apply `*_root` overrides (data_root=/my/coco/) to every path the config built from the old root
    (data_root + "annotations/..." is evaluated when the file is read, so merging the new value alone would
    change nothing). Returns the other overrides, merged after, so an explicit path still wins."""
    rest = {}
    for key, new in cfg_options.items():
        old = cfg.get(key) if key.endswith(ROOT_SUFFIX) and "." not in key else None
        if not (isinstance(old, str) and old and isinstance(new, str) and new):
            rest[key] = new
            continue
        if old.endswith("/") and not new.endswith("/"):
            new += "/"
        for name in list(cfg.keys()):
            cfg[name] = _replace_prefix(cfg[name], old, new)
    return rest


def _replace_prefix(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, dict):
        for k in list(value.keys()):
            value[k] = _replace_prefix(value[k], old, new)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_replace_prefix(v, old, new) for v in value)
    return value


def check_arguments_of_parts(cfg: Config) -> None:
    """Check the keys and simple value types of every config part built from a project-owned registered
    type (the model, datasets, evaluators, hooks) against its constructor: mmengine would pass a misspelt
    key on, where a **kwargs swallows it, and store '5' where a number belongs."""
    parts = [("model", cfg.get("model"), MODELS)]
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            parts.append((f"{loader}.dataset", cfg[loader].get("dataset"), DATASETS))
            if loader != "train_dataloader" and (cfg[loader].get("dataset") or {}).get("pseudo_annotations"):
                raise ConfigError(f"{loader}.dataset.pseudo_annotations: pseudo-labels are training data; a model "
                                  f"is evaluated on ground truth alone. Remove the key from {loader}")
    for name in ("val_evaluator", "test_evaluator"):
        evaluators = cfg.get(name)
        for i, ev in enumerate(evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]):
            parts.append((name if not isinstance(evaluators, (list, tuple)) else f"{name}[{i}]", ev, METRICS))
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        parts.append((f"custom_hooks[{i}]", hook, HOOKS))
    for section, part, registry in parts:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            continue
        with registry.switch_scope_and_registry(cfg.default_scope) as scoped:
            target = scoped.get(part["type"])
            if target is None:
                raise ConfigError(f"{section}.type: no {registry.name} named '{part['type']}' in scope "
                                  f"'{cfg.default_scope}'{close_hint(part['type'], scoped.module_dict)}")
        if getattr(target, "__module__", "").split(".")[0] in PROJECT_PACKAGES:
            check_arguments(section, target, {k: v for k, v in part.items() if k != "type"})


def load_config(config: "str | Path", cfg_options: Optional[dict] = None, work_dir: Optional[str] = None) -> Config:
    """Read a config (with its `_base_` files), apply overrides and fill in the work dir and the
    checkpoint hook that keeps resume weights_only-safe."""
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = Config.fromfile(str(path))
    # mmengine re-formats the whole config with yapf each time it prints or saves it (the log, the dumped
    # config, every checkpoint's meta): ~0.1 s a time, seconds per CPU run. `fromfile` drops its own
    # format_python_code=False for plain configs, so it is set here; the text stays valid, indented Python.
    object.__setattr__(cfg, "_format_python_code", False)
    if cfg_options:
        check_option_keys(cfg, cfg_options)
        cfg_options = reroot(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    check_config_keys(cfg)
    check_arguments_of_parts(cfg)
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / path.stem)
    if not cfg.get("default_scope"):
        raise ConfigError(f"{path} sets no default_scope: inherit configs/_base_/default_runtime.py, or add "
                          f"default_scope = 'ovd' (detection) or 'ovseg' (segmentation)")
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == SAFE_CHECKPOINT_HOOK for h in hooks):
        hooks.append(dict(type=SAFE_CHECKPOINT_HOOK))
    cfg.custom_hooks = hooks
    return cfg


def drop_training(cfg: Config) -> None:
    """Remove the training parts of a config, so that a test-only Runner neither needs nor builds them."""
    for key in ("train_dataloader", "train_cfg", "optim_wrapper", "param_scheduler"):
        cfg[key] = None


def _set_launcher(cfg: Config, launcher: str) -> None:
    cfg.launcher = launcher
    if launcher == "none" or torch.cuda.is_available():
        return
    # CPU-only machines: mmengine's launcher insists on a GPU (torch.cuda.set_device), so the process
    # group is started here with gloo, and DDP wraps the CPU model without device ids.
    if launcher != "pytorch":
        raise ConfigError(f"launcher '{launcher}' needs GPUs; on a CPU-only machine use torchrun with "
                          f"--launcher pytorch")
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper["device_ids"] = None
    cfg.model_wrapper_cfg = wrapper


def _close_process_group() -> None:
    """Tear down the process group so that no rank aborts at exit while others still talk."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def add_tensorboard(cfg: Config) -> None:
    """Log scalars to TensorBoard too (mmengine's TensorboardVisBackend, beside the local json logs): event
    files under <work_dir>/<timestamp>/vis_data/; view with `tensorboard --logdir <work_dir>`."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("TensorBoard logging needs the tensorboard package: pip install -e \".[tensorboard]\"")
    visualizer = dict(cfg.get("visualizer") or dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")]))
    backends = list(visualizer.get("vis_backends") or [])
    if not any(b.get("type") == "TensorboardVisBackend" for b in backends):
        backends.append(dict(type="TensorboardVisBackend"))
    visualizer["vis_backends"] = backends
    cfg.visualizer = visualizer


def train(config: "str | Path", work_dir: Optional[str] = None, resume: "bool | str" = False,
          cfg_options: Optional[dict] = None, launcher: str = "none", tensorboard: bool = False) -> Runner:
    """Train from a config; `resume=True` continues from the work dir's latest checkpoint (iteration,
    optimizer, schedulers, logs), `resume=PATH` from that checkpoint; `tensorboard` also logs to
    TensorBoard."""
    cfg = load_config(config, cfg_options, work_dir)
    if tensorboard:
        add_tensorboard(cfg)
    _set_launcher(cfg, launcher)
    if resume:
        cfg.resume = True
        cfg.load_from = resume if isinstance(resume, str) else None
    runner = ProjectRunner.from_cfg(cfg)
    try:
        runner.train()
    finally:
        _close_process_group()
    return runner


def test(config: "str | Path", checkpoint: Optional[str] = None, vocabulary: "str | Sequence[str] | None" = None,
         out: Optional[str] = None, work_dir: Optional[str] = None, cfg_options: Optional[dict] = None,
         launcher: str = "none", allow_partial: bool = False) -> dict[str, Any]:
    """Evaluate a checkpoint on the config's test set, optionally with another vocabulary; writes
    `metrics.json` to the work dir and, with `out`, the detections as COCO results json (segmentation:
    a folder of predicted label PNGs). Zero-shot models (no trainable weights) need no checkpoint; a
    checkpoint that does not fit the config's model is refused unless `allow_partial`."""
    cfg = load_config(config, cfg_options, work_dir)
    _set_launcher(cfg, launcher)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    cfg.load_from = None  # the weights are loaded and checked below
    drop_training(cfg)
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    for ev in evaluators:
        ev.setdefault("out_dir", cfg.work_dir)
        if out:
            ev["results_file"] = out
    if vocabulary is not None:
        cfg.model.vocabulary = vocabulary
        cfg.test_dataloader.dataset.vocabulary = vocabulary
        cfg.test_dataloader.dataset.train_classes = "all"
        for ev in evaluators:
            ev["vocabulary"] = vocabulary
    runner = ProjectRunner.from_cfg(cfg)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    try:
        if checkpoint is None:
            from ..demo import require_checkpoint  # the demo's drawing code: not for every engine user
            require_checkpoint(model, config)
        else:
            load_weights(model, checkpoint, config, allow_partial)  # here, as mmengine's loader only warns
    except ConfigError:
        _close_process_group()
        raise
    try:
        metrics = runner.test()
    finally:
        _close_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        atomic_json_dump({"config": str(config), "checkpoint": str(checkpoint), "metrics": metrics},
                         Path(cfg.work_dir) / "metrics.json", indent=1)
        print(json.dumps(metrics, indent=1))
    return metrics


def build_model(config: "str | Path", checkpoint: "str | Path | None" = None,
                cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """The config's model (in the config's registry scope) with a checkpoint's weights, loaded weights_only;
    no checkpoint gives the untrained model (or a zero-shot one, which has nothing to load)."""
    cfg = load_config(config, cfg_options)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_weights(model, checkpoint, config)
    return model


class CheckpointMismatch(ConfigError):
    """A checkpoint's weights do not fit the model its config builds."""


def load_weights(model: torch.nn.Module, checkpoint: "str | Path", config: "str | Path",
                 allow_partial: bool = False) -> None:
    """Load a checkpoint's model weights (weights_only) into `model`, refusing one that does not fit: keys
    the model lacks or the checkpoint lacks, and tensors of another shape, are named (a partly random model
    would otherwise be evaluated). `allow_partial` loads what fits and only warns."""
    state = model_state_dict(checkpoint)
    own = model.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs the model's {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and own[k].shape != v.shape]
    fitting = {k: v for k, v in state.items() if not (k in own and own[k].shape != v.shape)}
    missing, unexpected = model.load_state_dict(fitting, strict=False)
    problems = [(f"{len(mismatched)} of another shape", mismatched), (f"{len(missing)} missing", missing),
                (f"{len(unexpected)} not in the model", unexpected)]
    problems = [(what, keys) for what, keys in problems if keys]
    if not problems:
        return
    detail = "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" for what, keys in problems)
    message = f"checkpoint {checkpoint} does not fit config {config} ({detail})"
    if not allow_partial:
        raise CheckpointMismatch(f"{message}. Use the config the checkpoint was trained with, or allow a partial "
                                 f"load on purpose (tools/test.py --allow-partial)")
    log.warning("%s; loaded the rest (allow_partial)", message)


def config_scope(config: "str | Path") -> str:
    """The registry scope a config's model lives in: 'ovd' (detection) or 'ovseg' (segmentation)."""
    return load_config(config).default_scope
