"""Timing helpers the benchmark scripts share: interleaved runs after a warm-up, medians with their spread."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of `repeats` calls of each function, taken in turn (a, b, a, b, ...) after one warm-up
    call of each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    return statistics.median(interleaved_times({"fn": fn}, repeats)["fn"])


def spread(values: list[float]) -> str:
    """'median [min - max]' of positive values, to 3 significant digits."""
    return f"{statistics.median(values):.3g} [{min(values):.3g} - {max(values):.3g}]"
