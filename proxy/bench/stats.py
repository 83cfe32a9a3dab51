"""Percentiles, millisecond summaries and CPU per token: the arithmetic behind the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating between the closest ranks (as numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50 and p99 of intervals given in seconds, in milliseconds, with the sample count."""
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p99_ms": round(percentile(seconds, 99) * 1000, 3),
        "samples": len(seconds),
    }


def per_token_us(cpu_seconds: float, tokens: int) -> float | None:
    """CPU microseconds per token; None when no token was counted."""
    return round(cpu_seconds / tokens * 1e6, 2) if tokens else None
