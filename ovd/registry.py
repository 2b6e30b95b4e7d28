"""mmengine registries of the `ovd` scope. Configs with `default_scope = "ovd"` find our classes here,
and everything else (loops, optimizers, schedulers, samplers, hooks) in mmengine's parents."""
from mmengine import registry as mm
from mmengine.registry import Registry

MODELS = Registry("model", parent=mm.MODELS, scope="ovd", locations=["ovd.models"])
DATASETS = Registry("dataset", parent=mm.DATASETS, scope="ovd", locations=["ovd.data"])
FUNCTIONS = Registry("function", parent=mm.FUNCTIONS, scope="ovd", locations=["ovd.data"])
METRICS = Registry("metric", parent=mm.METRICS, scope="ovd", locations=["ovd.evaluation"])
HOOKS = Registry("hook", parent=mm.HOOKS, scope="ovd", locations=["ovd.engine"])

# Children with nothing of ours in them, so that mmengine finds an "ovd" node in every registry tree
# it searches (it warns otherwise) and falls back to its own classes.
LOOPS = Registry("loop", parent=mm.LOOPS, scope="ovd")
DATA_SAMPLERS = Registry("data sampler", parent=mm.DATA_SAMPLERS, scope="ovd")
OPTIMIZERS = Registry("optimizer", parent=mm.OPTIMIZERS, scope="ovd")
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=mm.OPTIM_WRAPPERS, scope="ovd")
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=mm.OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope="ovd")
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=mm.PARAM_SCHEDULERS, scope="ovd")
EVALUATOR = Registry("evaluator", parent=mm.EVALUATOR, scope="ovd")
LOG_PROCESSORS = Registry("log_processor", parent=mm.LOG_PROCESSORS, scope="ovd")
VISUALIZERS = Registry("visualizer", parent=mm.VISUALIZERS, scope="ovd")
VISBACKENDS = Registry("vis_backend", parent=mm.VISBACKENDS, scope="ovd")
MODEL_WRAPPERS = Registry("model_wrapper", parent=mm.MODEL_WRAPPERS, scope="ovd")
WEIGHT_INITIALIZERS = Registry("weight initializer", parent=mm.WEIGHT_INITIALIZERS, scope="ovd")
