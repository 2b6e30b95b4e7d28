"""mmengine child registries for one package scope (`ovd`, `ovseg`).

Configs with `default_scope = SCOPE` find the package's classes in its children, and everything else
(loops, optimizers, schedulers, samplers, hooks) in mmengine's root registries.
"""
from __future__ import annotations

from types import SimpleNamespace

from mmengine import registry as mm
from mmengine.registry import Registry

# Registries that get a child in every scope, so that mmengine finds a node of the scope in every
# tree it searches (it warns otherwise) and falls back to its own classes.
_ROOTS = {
    "MODELS": mm.MODELS, "DATASETS": mm.DATASETS, "FUNCTIONS": mm.FUNCTIONS, "METRICS": mm.METRICS,
    "HOOKS": mm.HOOKS, "LOOPS": mm.LOOPS, "DATA_SAMPLERS": mm.DATA_SAMPLERS, "OPTIMIZERS": mm.OPTIMIZERS,
    "OPTIM_WRAPPERS": mm.OPTIM_WRAPPERS, "OPTIM_WRAPPER_CONSTRUCTORS": mm.OPTIM_WRAPPER_CONSTRUCTORS,
    "PARAM_SCHEDULERS": mm.PARAM_SCHEDULERS, "EVALUATOR": mm.EVALUATOR, "LOG_PROCESSORS": mm.LOG_PROCESSORS,
    "VISUALIZERS": mm.VISUALIZERS, "VISBACKENDS": mm.VISBACKENDS, "MODEL_WRAPPERS": mm.MODEL_WRAPPERS,
    "WEIGHT_INITIALIZERS": mm.WEIGHT_INITIALIZERS,
}


def scope_registries(scope: str, locations: dict[str, list[str]]) -> SimpleNamespace:
    """A child of every mmengine root registry for `scope`; `locations` names, per registry, the modules
    that mmengine imports to fill it (e.g. {"MODELS": ["ovseg.models"]})."""
    unknown = set(locations) - set(_ROOTS)
    if unknown:
        raise KeyError(f"no mmengine registry named {sorted(unknown)}; known: {sorted(_ROOTS)}")
    return SimpleNamespace(**{name: Registry(root.name, parent=root, scope=scope, locations=locations.get(name, []))
                              for name, root in _ROOTS.items()})
