"""mmsegmentation on `mmcv-lite`: a stand-in `mmcv.ops` so that mmseg imports without mmcv's compiled ops.

Why it exists: mmsegmentation 1.x imports `mmcv.ops` at module level in a few places
(`mmseg/utils/mask_classification.py`, `mmseg/models/utils/point_sample.py`, the SAN head: `point_sample`;
`mmseg/models/losses/focal_loss.py`: `sigmoid_focal_loss`). `mmcv-lite` (a pure wheel, no compiler) ships
`mmcv/ops/*.py` but not the compiled `mmcv._ext` they load, so `import mmseg.models` fails on its first
line that touches `mmcv.ops`, although nearly every segmentor (DeepLabV3(+), FCN, PSPNet, UPerNet, SegFormer,
Segmenter, SETR, DPT, Swin, PointRend, ...) needs no compiled op at all.

What it provides (`install()`, called by `import_mmseg()` before mmseg is imported): when mmcv's real ops
load (a full `mmcv` install), nothing changes. Otherwise `sys.modules["mmcv.ops"]` becomes a module whose
`point_sample` and `bilinear_grid_sample` are mmcv's own pure-Python functions (loaded from
`mmcv/ops/point_sample.py`, which needs no compiled code), and whose every other name is a placeholder that
imports fine and raises `MissingOpError` (naming the op and the fix) when it is called or instantiated:
a config that needs CrissCrossAttention (CCNet), PSAMask (PSANet) or mmcv's CUDA focal loss fails with
that message instead of an import error from deep inside mmseg.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Any

from ovclip.errors import UserInputError

# mmcv's own pure-Python ops (mmcv/ops/point_sample.py), served as they are
PURE_PYTHON_OPS = ("point_sample", "bilinear_grid_sample")


class MissingOpError(UserInputError, RuntimeError):
    """An mmcv op that needs mmcv's compiled extension was used, with only `mmcv-lite` installed."""


def _missing(name: str) -> type:
    """A placeholder for the compiled op `name`: importable, raises MissingOpError when called / built."""
    message = (f"mmcv.ops.{name} needs mmcv's compiled extension, which the pure `mmcv-lite` wheel this library "
               f"installs does not have. Choose a model without it (every mmseg segmentor but CCNet / PSANet "
               f"and mmcv's CUDA focal loss works on mmcv-lite), or install the full mmcv with its compiled ops "
               f"(`pip install -U openmim && mim install 'mmcv>=2.0.1,<2.2.0'`) in place of mmcv-lite.")

    class Missing:
        __name__ = __qualname__ = name

        def __init__(self, *args: Any, **kwargs: Any):
            raise MissingOpError(message)

    return Missing


class _StandInOps(types.ModuleType):
    """`mmcv.ops` without the compiled extension: pure-Python ops as mmcv wrote them, placeholders for
    the rest."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _missing(name)
        setattr(self, name, value)
        return value


def real_ops_available() -> bool:
    """Whether mmcv's own `mmcv.ops` (with its compiled extension) imports."""
    current = sys.modules.get("mmcv.ops")
    if current is not None:
        return not getattr(current, "__ovseg_stand_in__", False)
    try:
        importlib.import_module("mmcv.ops")
        return True
    except ImportError:
        for key in [k for k in sys.modules if k == "mmcv.ops" or k.startswith("mmcv.ops.")]:
            del sys.modules[key]  # half-imported modules of the failed attempt
        return False


def install() -> bool:
    """Make `import mmcv.ops` work on mmcv-lite (see the module doc). Returns True when the stand-in is in
    place (now or from an earlier call), False when mmcv's real ops are installed and used as they are."""
    if real_ops_available():
        return False
    if getattr(sys.modules.get("mmcv.ops"), "__ovseg_stand_in__", False):
        return True
    import mmcv
    spec = importlib.util.find_spec("mmcv")
    ops_dir = Path(spec.submodule_search_locations[0]) / "ops"
    module = _StandInOps("mmcv.ops", "mmcv.ops stand-in (ovseg.mmseg_compat): pure-Python ops of mmcv-lite")
    module.__path__ = [str(ops_dir)]  # submodules (mmcv.ops.point_sample) still load from mmcv's files
    module.__ovseg_stand_in__ = True
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    pure = importlib.import_module("mmcv.ops.point_sample")
    for name in PURE_PYTHON_OPS:
        setattr(module, name, getattr(pure, name))
    return True


def import_mmseg(*parts: str) -> types.ModuleType:
    """`mmseg` with its `parts` imported (registered): "models", "datasets", "evaluation" (all three by
    default), the stand-in ops installed first when needed; a clear error when mmsegmentation is not
    installed."""
    try:
        importlib.import_module("mmseg")
    except ImportError as e:
        raise ImportError(f"mmsegmentation is not installed ({e}): pip install 'mmsegmentation==1.2.2' "
                          f"'mmcv-lite==2.1.0' (or reinstall this library, which depends on them)") from None
    install()
    with warnings.catch_warnings():  # mmcv-lite's own notice that its compiled deformable attention is absent
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        for part in parts or ("models", "datasets", "evaluation"):
            importlib.import_module(f"mmseg.{part}")
    return sys.modules["mmseg"]
