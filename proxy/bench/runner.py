"""A full run: start the simulator (with --simulate) and the proxy, run the phases, assemble the report.

With --database postgresql://…, the scale-out phases (`scaleout`) follow, on servers of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import lmstudio

from proxy.bench import micro
from proxy.bench.checks import checks
from proxy.bench.clients import Clients
from proxy.bench.errors import BenchError
from proxy.bench.phases.memory import memory
from proxy.bench.phases.relay import relay
from proxy.bench.phases.saturation import saturation
from proxy.bench.phases.stops import cancel, disconnect
from proxy.bench.phases.ttft import ttft
from proxy.bench.phases.warmup import describe, warm_up
from proxy.bench.processes import Child, free_port
from proxy.bench.scaleout import run_scaleout
from proxy.bench.settings import MEMORY_STREAMS_LMSTUDIO, STOP_TOKENS_PER_SECOND
from proxy.bench.stats import per_token_us


def run_full(args: argparse.Namespace) -> dict[str, Any]:
    """The report of a whole run; every child is stopped and the temporary directory removed however it ends."""
    simulate = not args.lmstudio
    workdir = Path(tempfile.mkdtemp(prefix="lmstudio-proxy-bench-"))
    children: list[Child] = []
    try:
        # First, while nothing else of ours runs: these time this process alone.
        print("bench: micro-benchmarks", file=sys.stderr, flush=True)
        micro_figures = micro.measure()
        sim_url: str | None = None
        if simulate:
            sim_port = free_port()
            sim = Child("simulator", workdir / "simulator.log")
            children.append(sim)
            speed = ["--tokens-per-second", "0", "--load-seconds", "0", "--prompt-seconds", "0"]
            sim.start([sys.executable, "-m", "proxy", "simulate", "--port", str(sim_port), *speed])
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim.wait_ready(f"{sim_url}/lmstudio-greeting")
            lm_host = f"127.0.0.1:{sim_port}"
        else:
            lm_host = str(args.lmstudio)
        config = workdir / "config.toml"
        config.write_text('[logging]\nlevel = "warning"\n')
        proxy_port = free_port()
        proxy = Child("proxy", workdir / "proxy.log")
        children.append(proxy)
        files = ["--database", str(workdir / "bench.sqlite3"), "--config", str(config)]
        proxy.start([sys.executable, "-m", "proxy", "serve", "--lmstudio", lm_host, "--port", str(proxy_port), *files])
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        floor_port = free_port()
        floor = Child("floor server", workdir / "floor.log")
        children.append(floor)
        floor.start([sys.executable, "-m", "proxy.bench.floor", str(floor_port)])
        floor_url = f"http://127.0.0.1:{floor_port}"
        bare_port = free_port()
        bare = Child("bare relay", workdir / "bare.log")
        children.append(bare)
        bare.start([sys.executable, "-m", "proxy.bench.bare", str(bare_port), lm_host])
        bare_url = f"http://127.0.0.1:{bare_port}"
        floor.wait_ready(f"{floor_url}/")
        bare.wait_ready(f"{bare_url}/")
        proxy.wait_ready(f"{proxy_url}/health")
        try:
            report = asyncio.run(_measure(args, lm_host, proxy, proxy_url, sim_url, floor_url, bare, bare_url))
            proxy.check_running()
            proxy.stop()  # the scale-out phases start servers of their own
            children.remove(proxy)
            scaleout: dict[str, Any] = {"replicas": None, "workers": None}
            if args.database:
                scaleout = run_scaleout(args, lm_host, sim_url, workdir, children)
            report.update(scaleout)
        except (lmstudio.LMStudioError, httpx.HTTPError, OSError) as exc:
            raise BenchError(f"{type(exc).__name__}: {exc}") from exc
        for child in children:
            child.check_running()
    except BenchError as exc:
        for child in children:
            if tail := child.log_tail():
                exc.add_note(f"--- the {child.name}'s last output:\n{tail}")
        raise
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report["micro"] = micro_figures
    report["checks"] = checks(report)
    return report


async def _measure(
    args: argparse.Namespace,
    lm_host: str,
    proxy: Child,
    proxy_url: str,
    sim_url: str | None,
    floor_url: str,
    bare: Child,
    bare_url: str,
) -> dict[str, Any]:
    streams: tuple[int, ...] = args.streams
    async with Clients.open(lm_host, proxy_url, sim_url, args.model, sys.stderr) as c:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        await warm_up(c, streams, args.tokens)
        memory_figures = await memory(c, proxy, max(streams) if sim_url else min(max(streams), MEMORY_STREAMS_LMSTUDIO))
        ttft_figures = await ttft(c, proxy, proxy_url, floor_url, bare, bare_url, args.repeat)
        bare.stop()  # (idle from here on; stopped, it cannot touch the later phases)
        relay_rows = [await relay(c, proxy, count, args.tokens, args.relay_seconds) for count in streams]
        # Stops are timed at a real model's pace: at full speed the simulator outruns any
        # client by seconds of buffered tokens, and a stop would measure that backlog.
        await c.sim_settings(STOP_TOKENS_PER_SECOND)
        cancel_figures = await cancel(c, proxy_url, args.repeat)
        disconnect_figures = await disconnect(c, proxy_url, args.repeat) if sim_url else None
        # Needs the simulator's pace control: a real LM Studio would run 256 predictions at its own speed.
        saturation_figures = await saturation(c, proxy_url, args.saturation) if sim_url and args.saturation else None
        return {
            "setup": {
                "lmstudio": "simulator at full speed" if sim_url else lm_host,
                "model": c.model_key,
                "cpus": os.cpu_count(),
                "load_average_before": round(load_before, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
                "seconds": round(time.perf_counter() - started, 1),
                "warm_up": describe(streams),
                "tokens_per_stream": args.tokens,
                "relay_seconds": args.relay_seconds,
                "repeat": args.repeat,
            },
            "ttft": ttft_figures,
            "relay": relay_rows,
            "cancel": cancel_figures,
            "disconnect": disconnect_figures,
            "saturation": saturation_figures,
            "proxy_process": _proxy_process(relay_rows, memory_figures),
        }


def _proxy_process(relay_rows: list[dict[str, Any]], memory_figures: dict[str, Any]) -> dict[str, Any]:
    """CPU per token over the relay rows the proxy completed (the direct side's over the same rows), and memory."""
    relayed = [r for r in relay_rows if r["proxy"] is not None]
    cpu = sum(r["proxy_cpu_seconds"] for r in relayed)
    tokens = sum(r["proxy"]["tokens"] for r in relayed)
    direct_cpu = sum(r["direct"]["client_cpu_seconds"] for r in relayed)
    direct_tokens = sum(r["direct"]["tokens"] for r in relayed)
    proxy_us, direct_us = per_token_us(cpu, tokens), per_token_us(direct_cpu, direct_tokens)
    m = memory_figures
    per_stream = (m["active_bytes"] - m["idle_bytes"]) / m["streams"]
    return {
        "cpu_seconds": round(cpu, 3),
        "tokens_relayed": tokens,
        "cpu_us_per_token": proxy_us,
        "direct_client_cpu_seconds": round(direct_cpu, 3),
        "direct_client_cpu_us_per_token": direct_us,
        "own_cpu_us_per_token": None if proxy_us is None or direct_us is None else round(proxy_us - direct_us, 2),
        "rss_idle_mb": round(m["idle_bytes"] / 2**20, 1),
        "rss_active_mb": round(m["active_bytes"] / 2**20, 1),
        "active_streams": m["streams"],
        "rss_per_stream_kb": round(per_stream / 1024, 1),
    }
