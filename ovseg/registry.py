"""mmengine registries of the `ovseg` scope: configs with `default_scope = "ovseg"` find our classes here."""
from ovclip.engine.registry import scope_registries

_R = scope_registries("ovseg", {"MODELS": ["ovseg.models"], "DATASETS": ["ovseg.data", "ovseg.mmseg_data"],
                                "FUNCTIONS": ["ovseg.data"], "METRICS": ["ovseg.evaluation"]})
MODELS, DATASETS, FUNCTIONS, METRICS = _R.MODELS, _R.DATASETS, _R.FUNCTIONS, _R.METRICS
