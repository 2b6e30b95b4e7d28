"""Which implementation computes COCO and LVIS AP: faster-coco-eval (the default: a C++ core, numpy only,
the same numbers as the references: all 12 COCO statistics, and LVIS AP / APr / APc / APf with its
`lvis_style`) or the reference pycocotools / lvis-api, kept as a fallback (`backend="reference"`).
Imported when an evaluator is built, so that importing the evaluators costs nothing."""
from __future__ import annotations

from typing import Any

BACKENDS = ("faster", "reference")


def check_backend(backend: str) -> str:
    """'faster' or 'reference'; anything else is refused by name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not '{backend}'")
    return backend


def coco_api(backend: str) -> tuple[Any, Any]:
    """(COCO, COCOeval) classes of the backend, with pycocotools' interface."""
    if check_backend(backend) == "faster":
        from faster_coco_eval import COCO, COCOeval_faster
        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval


def quiet(evaluator: Any) -> Any:
    """A faster-coco-eval evaluator that prints nothing (pycocotools' are silenced by redirecting stdout)."""
    if hasattr(evaluator, "print_function"):
        evaluator.print_function = lambda *args, **kwargs: None
    return evaluator
