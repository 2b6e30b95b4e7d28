"""Option checking shared by the library's config-driven parts: one error type for a bad config key and
one helper that fills in a model's option dict, refusing keys it does not know."""
from __future__ import annotations

from typing import Optional


class ConfigError(ValueError):
    """A config has an unknown, missing or invalid key."""


def with_defaults(section: str, given: Optional[dict], defaults: dict, error: type = ConfigError) -> dict:
    """A model's option dict (e.g. `model.distill`) filled in with its defaults; a key that is not among
    them raises `error` naming the section and the allowed keys, instead of being ignored."""
    unknown = set(given or {}) - set(defaults)
    if unknown:
        raise error(f"unknown key(s) {sorted(unknown)} in model.{section}; allowed: {sorted(defaults)}")
    return {**defaults, **(given or {})}
