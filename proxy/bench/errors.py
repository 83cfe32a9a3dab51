"""BenchError: the benchmark could not run, or one of its measurements could not be taken."""

from __future__ import annotations


class BenchError(Exception):
    """The benchmark could not run (a process did not start, a request failed); the message says why."""
