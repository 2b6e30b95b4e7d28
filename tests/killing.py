"""A training job that kills itself (SIGKILL: no cleanup at all) when an iteration starts: where it stops
does not depend on how fast the machine is. Shared by the kill-and-resume tests."""
from pathlib import Path


def write_killed_config(folder: Path, base_config: str, iteration: int) -> Path:
    """Write `kill_hook.py` and `killed.py` (the base config plus the hook) into `folder`, which must be on
    the job's PYTHONPATH; returns the config's path."""
    (folder / "kill_hook.py").write_text(
        "import os, signal\nfrom mmengine.hooks import Hook\nfrom mmengine.registry import HOOKS\n\n\n"
        "@HOOKS.register_module()\nclass KillAtIteration(Hook):\n"
        "    def before_train_iter(self, runner, batch_idx, data_batch=None):\n"
        f"        if runner.iter == {iteration}:\n            os.kill(os.getpid(), signal.SIGKILL)\n")
    config = folder / "killed.py"
    config.write_text(f"_base_ = [{str(base_config)!r}]\ncustom_imports = dict(imports=['kill_hook'])\n"
                      f"custom_hooks = [dict(type='PlainCheckpointHook'), dict(type='KillAtIteration')]\n")
    return config
