"""Contenders timed side by side, in turns, in one process: speed that can serve as evidence.

Runs timed separately meet a shared machine at different moments (one config's wall time varied up to 3x
from run to run); contenders timed in turns within one process meet the same moments. Each round times every
contender once, in an order rotated from round to round so that none always runs first, after untimed warm-up
rounds (allocations, kernel choice). A comparison is the median over rounds of the per-round log ratio:
paired by round, so that a slow moment of the machine cancels.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any


def alternate(contenders: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each contender in each of `repeats` rounds, timed in turns after `warmup` untimed rounds."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                seconds[name].append(elapsed)
    return seconds


def median_log_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of log(numerator / denominator), paired by round."""
    return statistics.median(math.log(a / b) for a, b in zip(numerator, denominator, strict=True))
