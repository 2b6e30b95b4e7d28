"""The engine is shared with ovseg and lives in `ovclip.engine`; these names stay importable from here."""
from ovclip.engine import (CheckpointError, PlainCheckpointHook, build_model, load_checkpoint_file, load_config,
                           model_state_dict, test, train)

__all__ = ["CheckpointError", "PlainCheckpointHook", "load_checkpoint_file", "model_state_dict", "build_model",
           "load_config", "test", "train"]
