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


def balanced_orders(n: int) -> list[list[int]]:
    """n orders of `range(n)` (n even) in which each item comes first once and follows each other
    item exactly once (a Williams design): whatever one side leaves behind on a busy machine (a
    process still finishing its last request) falls on every other side equally.
    """
    if n % 2:
        raise ValueError("a balanced order needs an even number of sides")
    first = [0]
    for step in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        first.append((step + 1) // 2 if step % 2 else n - step // 2)
    return [[(i + shift) % n for i in first] for shift in range(n)]
