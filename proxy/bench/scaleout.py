"""Scale-out on PostgreSQL (`--database postgresql://…`): replicas and `serve --workers N`, as child processes.

Three servers on the one database, started after the other phases have stopped their proxy: replicas
A and B (one process each) and W (`serve --workers N`). The cross-replica cancel streams on A and
cancels on B (and, for comparison, on A); the workers' relay runs the same batches on A (one process)
and on W. Every replica runs with `[cancel] quick_edit_seconds = 0`: each cancel keeps its partial
text, so the store check compares the exact text the client saw (a quick_edit only deletes the thread).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from proxy.bench.clients import Clients
from proxy.bench.phases.replicas import cross_replica_cancel
from proxy.bench.phases.workers import workers_relay
from proxy.bench.processes import Child, free_port
from proxy.bench.settings import STOP_TOKENS_PER_SECOND


def run_scaleout(
    args: argparse.Namespace, lm_host: str, sim_url: str | None, workdir: Path, children: list[Child]
) -> dict[str, Any]:
    """The report's "replicas" and "workers" sections; the servers go into `children` (the caller stops them)."""
    config = workdir / "replicas.toml"
    config.write_text('[logging]\nlevel = "warning"\n\n[cancel]\nquick_edit_seconds = 0\n')
    urls: dict[str, str] = {}
    for name, extra in (("A", []), ("B", []), ("W", ["--workers", str(args.workers)])):
        port = free_port()
        child = Child(f"replica {name}" if name != "W" else f"server with {args.workers} workers",
                      workdir / f"replica-{name}.log")  # fmt: skip
        children.append(child)
        child.start([sys.executable, "-m", "proxy", "serve", "--lmstudio", lm_host, "--port", str(port),
                     "--database", args.database, "--config", str(config), *extra])  # fmt: skip
        urls[name] = f"http://127.0.0.1:{port}"
        # One at a time: the first migrates the database, the others find it ready.
        child.wait_ready(f"{urls[name]}/health")
    return asyncio.run(_measure(args, lm_host, sim_url, urls))


async def _measure(args: argparse.Namespace, lm_host: str, sim_url: str | None, urls: dict[str, str]) -> dict[str, Any]:
    async with Clients.open(lm_host, urls["A"], sim_url, args.model, sys.stderr) as c:
        await c.sim_settings(STOP_TOKENS_PER_SECOND)  # as in the cancel phase: at a real model's pace
        try:
            replicas = await cross_replica_cancel(c, urls["A"], urls["B"], args.repeat)
        finally:
            await c.sim_settings(0.0)
        workers = await workers_relay(c, urls["A"], urls["W"], args.workers, args.workers_streams, args.tokens)
    return {"replicas": replicas, "workers": workers}
