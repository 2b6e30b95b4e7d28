"""Option checking shared by the library's config-driven parts: one error type for a bad config key and
one helper that fills in a model's option dict, refusing keys it does not know."""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Iterable, Optional

from .errors import UserInputError


class ConfigError(UserInputError, ValueError):
    """A config has an unknown, missing or invalid key."""


def with_defaults(section: str, given: Optional[dict], defaults: dict, error: type = ConfigError) -> dict:
    """A model's option dict (e.g. `model.distill`) filled in with its defaults; a key that is not among
    them raises `error` naming the section and the allowed keys, instead of being ignored."""
    unknown = set(given or {}) - set(defaults)
    if unknown:
        raise error(f"unknown key(s) {sorted(unknown)} in model.{section}; allowed: {sorted(defaults)}")
    return {**defaults, **(given or {})}


def resolve_sections(cfg: dict, defaults: dict, required: Iterable[tuple[str, str]] = (),
                     error: type = ConfigError) -> dict:
    """A sectioned tool config (e.g. precompute's teacher / dataset / ...) with each section's defaults filled
    in; an unknown section or key is refused with the closest allowed name, a missing required
    (section, key) is named."""
    out: dict = {}
    check_keys("the config", [s for s in cfg if not s.startswith("_")], defaults, error)
    for section, section_defaults in defaults.items():
        given = dict(cfg.get(section) or {})
        check_keys(f"config section '{section}'", given, section_defaults, error)
        out[section] = {**section_defaults, **given}
    for section, key in required:
        if out[section][key] is None:
            raise error(f"config needs {section}.{key}")
    return out


def close_hint(key: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(section: str, given: Iterable[str], allowed: Iterable[str], error: type = ConfigError) -> None:
    """Refuse keys of `section` that are not `allowed`, naming the closest allowed key."""
    allowed = sorted(set(allowed))
    for key in given:
        if key not in allowed:
            raise error(f"unknown key '{key}' in {section}{close_hint(key, allowed)}; allowed: {', '.join(allowed)}")


# Annotations (as strings under `from __future__ import annotations`) whose values can be checked simply.
_SIMPLE_TYPES = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,), "None": (type(None),),
                 "tuple": (tuple, list)}
_TYPE_WORDS = {int: "a number", float: "a number", bool: "true or false", str: "a string", type(None): "None",
               tuple: "a list", list: "a list"}


def _expected_types(param: inspect.Parameter) -> Optional[tuple]:
    """The types a parameter accepts if its annotation (or, lacking one, its bool / number default) says so
    simply; None when it cannot be told."""
    note = param.annotation
    if note is not inspect.Parameter.empty:
        text = note if isinstance(note, str) else getattr(note, "__name__", str(note))
        text = text.strip()
        if text.startswith("Optional[") and text.endswith("]"):
            text = text[len("Optional["):-1] + " | None"
        parts = [t.strip() for t in text.strip("'\"").split("|")]
        if all(t in _SIMPLE_TYPES for t in parts):
            return tuple(tp for t in parts for tp in _SIMPLE_TYPES[t])
        return None
    default = param.default
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float)):
        return (int, float)
    return None


def check_arguments(section: str, target: Callable, given: dict, error: type = ConfigError,
                    extra: Iterable[str] = ()) -> None:
    """Refuse arguments `target` does not take (unless it takes **kwargs; `extra` names more accepted keys),
    and values whose type contradicts a simple annotation or a bool / number default (a number given as
    text, 'abc' for a float), naming `section`."""
    named, open_ended = {}, True
    # A class whose __init__ passes **kwargs on to its base: follow the chain of bases that do the same.
    chain = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    for function in chain:
        params = inspect.signature(function).parameters
        for k, p in params.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self":
                named.setdefault(k, p)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            open_ended = False
            break
    if not open_ended:
        check_keys(section, given, [*named, *extra], error)
    for key, value in given.items():
        if key not in named:
            continue
        types = _expected_types(named[key])
        if types is None or isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
            continue
        wanted = " or ".join(sorted({_TYPE_WORDS[t] for t in types}))
        raise error(f"{section}.{key} must be {wanted}, not {value!r} ({type(value).__name__})")

