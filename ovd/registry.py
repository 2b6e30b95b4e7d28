"""mmengine registries of the `ovd` scope: configs with `default_scope = "ovd"` find our classes here."""
from ovclip.engine.registry import scope_registries

_R = scope_registries("ovd", {"MODELS": ["ovd.models"], "DATASETS": ["ovd.data"], "FUNCTIONS": ["ovd.data"],
                              "HOOKS": ["ovd.models"],
                              "METRICS": ["ovd.evaluation.metrics"]})
MODELS, DATASETS, FUNCTIONS, METRICS, HOOKS = _R.MODELS, _R.DATASETS, _R.FUNCTIONS, _R.METRICS, _R.HOOKS
