"""Percentiles of one run and the median/min/max summary across runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (NaN when empty).

    Nearest rank never interpolates below an observed value, so a p99 is a latency some
    call really had.
    """
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Spread:
    """The median of several runs with the smallest and largest value seen."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        """The spread of the finite values (``None``: not measured), or ``None`` if none are."""
        finite = sorted(value for value in values if value is not None and math.isfinite(value))
        if not finite:
            return None
        return cls(statistics.median(finite), finite[0], finite[-1], len(finite))


@dataclass(frozen=True)
class Ratio:
    """``target / baseline``, exact or, when a side timed out, a bound on the true ratio.

    ``kind`` is ``=``, ``>=`` (the true ratio is at least ``value``) or ``<=``.
    """

    value: float
    kind: str = "="

    @classmethod
    def of(
        cls,
        value: Spread | None,
        baseline: Spread | None,
        *,
        value_at_least: bool = False,
        baseline_at_least: bool = False,
    ) -> Ratio:
        """The ratio of medians; ``*_at_least``: that side is a lower bound (a timeout)."""
        if value_at_least and baseline_at_least:
            return cls(math.nan)
        kind = ">=" if value_at_least else "<=" if baseline_at_least else "="
        return cls(ratio(value, baseline), kind)

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "-"
        shown = "inf" if math.isinf(self.value) else f"{self.value:.2f}x"
        return shown if self.kind == "=" else f"{self.kind} {shown}"


def ratio(value: Spread | None, baseline: Spread | None) -> float:
    """``value / baseline`` of the medians: NaN when either is missing or both are zero.

    A baseline of zero (say, it sustained no fleet size at all) gives infinity.
    """
    if value is None or baseline is None or value.median == baseline.median == 0:
        return math.nan
    if baseline.median == 0:
        return math.inf
    return value.median / baseline.median
