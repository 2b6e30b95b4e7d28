"""Training / testing from config files with mmengine, and checkpoints that load with weights_only=True."""
from .checkpoint import CheckpointError, PlainCheckpointHook, load_checkpoint_file, model_state_dict
from .runner import build_model, config_scope, load_config, test, train

__all__ = ["CheckpointError", "PlainCheckpointHook", "load_checkpoint_file", "model_state_dict", "build_model",
           "config_scope", "load_config", "test", "train"]
