"""`lmstudio-proxy bench`: the proxy's overhead, measured side by side with direct use of the lmstudio SDK.

Design decisions (read why before changing them):
- Three processes. This one runs every client: the lmstudio SDK for "direct", httpx (HTTP + SSE) for
  "proxy". The proxy runs as `python -m proxy serve` (real uvicorn, real SQLite in a temporary
  directory) so that /proc/PID gives its CPU time and RSS alone; with --simulate the simulator runs as
  `python -m proxy simulate` at full speed. Every child is terminated and the temporary directory
  removed however the run ends (errors and Ctrl-C included).
- Direct and proxied samples alternate (TTFT) or run back to back (throughput): a change in the
  machine's load then hits both sides.
- Intervals are `time.perf_counter()` in this process; `time.time()` is used only to meet the
  simulator's unix timestamps (`cancel_received_at` in `GET /simulator/predictions`).
- `clients` is the one module besides the bridge that imports `lmstudio`: measuring the SDK without
  the proxy is its point.
- Micro-benchmarks (`micro`) time the proxy's per-request and per-frame code in this process and
  the command line's import time; `--micro` runs only them, in seconds, with no simulator.
- Targets are shown beside the figures for information; the exit status is 0 whenever the run completed.
- This module imports only `options` (argparse): the command line imports it to build its parser,
  and the measuring modules pull in httpx and lmstudio.

Modules: `options` (flags), `runner` (processes and phases → report), `processes` (children),
`clients` (one stream each way), `raw_client` (HTTP without httpx), `streams` (samples, waits),
`phases/` (warmup, memory, ttft, relay, stops, saturation; with --database, replicas and workers,
run by `scaleout`), `micro`, `stats`, `checks` (targets), `report` (tables).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from proxy.bench.errors import BenchError
from proxy.bench.options import add_arguments

__all__ = ["BenchError", "add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """Measure and print (tables, or JSON with --json); 0 once the run completed, 1 if it could not."""
    report: dict[str, Any]
    try:
        if args.micro:
            from proxy.bench import micro
            from proxy.bench.checks import checks

            report = {"micro": micro.measure()}
            report["checks"] = checks(report)
        else:
            from proxy.bench.runner import run_full

            report = run_full(args)
    except BenchError as exc:
        print(f"lmstudio-proxy bench: {exc}", *getattr(exc, "__notes__", []), sep="\n", file=sys.stderr, flush=True)
        return 1
    if args.json:
        text = json.dumps(report, indent=2)
    else:
        from proxy.bench.report import render, render_micro

        text = render_micro(report) if args.micro else render(report)
    print(text, flush=True)
    return 0
