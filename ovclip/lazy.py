"""Package attributes imported when first used (PEP 562), for packages whose light parts (evaluators,
vocabularies) must load without their model code."""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable, Sequence


def lazy_attributes(package: str, names: Sequence[str], module: str = "api") -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: each of `names` comes from `package.module`, imported the
    first time one is asked for, then kept in the package's namespace; any other name is an AttributeError."""
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__
