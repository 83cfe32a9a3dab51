"""`lmstudio-proxy bench`: the command runs end to end and prints every figure (no timed assertions)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy import bench
from proxy.bench.checks import checks
from proxy.bench.errors import BenchError
from proxy.bench.options import postgresql_url, seconds, stream_counts
from proxy.bench.stats import balanced_orders, percentile

MICRO_FIGURES = (
    "request parse, decode_create (µs)",
    "SSE frame encode (µs)",
    "import proxy.cli above interpreter start (s)",
)
SMALL = [
    "--simulate", "--streams", "1,2", "--tokens", "50", "--repeat", "3", "--saturation", "8", "--relay-seconds", "1",
]  # fmt: skip


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


def _children() -> list[int]:
    """Live processes whose parent is this one (the bench's subprocesses, if any were left behind)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bench's temporary directory goes under tmp_path, so a test can see it was removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_bench_prints_every_figure(private_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(SMALL) == 0
    out, err = capsys.readouterr()
    for figure in (
        "Time to first token",
        "p50",
        "p99",
        "overhead",
        "Relay throughput",
        "direct tok/s",
        "proxy tok/s",
        "proxy/direct",
        "cancel sent -> LM Studio receives cancel",
        "cancel sent -> cancel answered",
        "cancel sent -> response.cancelled",
        "SSE closed -> LM Studio receives cancel",
        "CPU per relayed token",
        "RSS idle",
        "RSS per active stream",
        "3 samples each way",
        "raw client",
        "httpx's own cost",
        "the machine's floor (the two hops any proxy adds",
        "the overhead above it: p50",
        "raw client, bare relay",
        "the bare relay (the proxy's server and SDK doing nothing else",
        "the proxy's overhead above it: p50",
        "CPU per request (3 samples each): the proxy",
        "warm-up:",
        "direct CPU µs/tok",
        "own µs/tok",
        "client µs/tok",
        "direct client CPU/token",
        "Saturation (8 streams at 40 tokens/s each; 2 of them cancelled",
        "store matches the cancel's body: 2 of 2 cancelled streams ✓",
        "proxy's own share",
        "Micro-benchmarks",
        "request parse: wire.decode_create",
        "SSE frame: sse.frame",
        "import proxy.cli, above the bare interpreter",
        "relay with N workers need PostgreSQL: run with --database postgresql://",  # skipped, saying why
    ):
        assert figure in out, f"{figure!r} missing from:\n{out}"
    relay_rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in relay_rows] == ["1", "2"], out
    assert "✓" in out or "✗" in out
    assert "the proxy's own part (its X-Proxy-Overhead-Ms" in out
    assert "bench: " in err  # progress goes to stderr, the tables to stdout
    assert list(private_tmp.iterdir()) == []
    assert _children() == []


def test_bench_json(private_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([*SMALL, "--streams", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ttft"]["direct"]["samples"] == report["ttft"]["proxy"]["samples"] == 3
    assert set(report["ttft"]["overhead"]) == set(report["ttft"]["overhead_raw_client"]) == {"p50_ms", "p99_ms"}
    assert report["ttft"]["proxy_raw_client"]["samples"] == 3
    own = report["ttft"]["proxy_own"]  # the proxy's X-Proxy-Overhead-Ms, inside what the client waited
    assert own["samples"] == 3 and 0 <= own["p50_ms"] <= report["ttft"]["proxy_raw_client"]["p50_ms"]
    floor = report["ttft"]["floor"]  # the do-nothing server, after the direct side's p50 of idle wait
    assert floor["samples"] == 3 and floor["p50_ms"] > 0 and floor["idle_ms"] == report["ttft"]["direct"]["p50_ms"]
    assert report["ttft"]["overhead_above_floor"] == {
        k: round(report["ttft"]["overhead_raw_client"][k] - floor[k], 3) for k in ("p50_ms", "p99_ms")
    }
    t = report["ttft"]  # the bare relay: sampled as often as the others; the two differences add up
    assert t["bare_relay"]["samples"] == 3 and t["bare_relay"]["p50_ms"] > 0
    assert t["overhead_bare_relay"] == {k: round(t["bare_relay"][k] - t["direct"][k], 3) for k in ("p50_ms", "p99_ms")}
    assert t["overhead_above_bare_relay"] == {
        k: round(t["overhead_raw_client"][k] - t["overhead_bare_relay"][k], 3) for k in ("p50_ms", "p99_ms")
    }
    assert all(cpu > 0 for cpu in t["cpu_ms_per_request"].values()), t["cpu_ms_per_request"]
    static = report["ttft"]["static_get"]
    assert static["httpx"]["samples"] == static["raw_client"]["samples"] == 3
    assert static["httpx"]["p50_ms"] > 0 and static["raw_client"]["p50_ms"] > 0
    [relay] = report["relay"]
    assert relay["streams"] == 2 and relay["proxy_error"] is None
    # --relay-seconds 1: each side streamed at least that long, over at least four batches a side.
    assert report["setup"]["relay_seconds"] == 1.0
    assert min(relay["direct"]["seconds"], relay["proxy"]["seconds"]) >= 1.0 and relay["rounds"] >= 4
    assert len(relay["round_ratios"]) == relay["rounds"]
    assert relay["direct"]["tokens"] == relay["proxy"]["tokens"] > 0
    for key in ("to_lmstudio", "answered", "cancelled_event"):
        assert report["cancel"][key]["samples"] == 3
    assert report["disconnect"]["to_lmstudio"]["samples"] == 3
    assert relay["direct"]["client_cpu_us_per_token"] > 0 and relay["proxy"]["client_cpu_us_per_token"] > 0
    saturation = report["saturation"]
    assert saturation["streams"] == 8 and saturation["cancels"] == 2 == saturation["store_matches"]
    assert saturation["answered"]["samples"] == saturation["to_lmstudio"]["samples"] == 2
    assert saturation["mismatches"] == []
    assert relay["proxy_own_cpu_us_per_token"] == round(
        relay["proxy_cpu_us_per_token"] - relay["direct"]["client_cpu_us_per_token"], 2
    )
    process = report["proxy_process"]
    assert process["cpu_us_per_token"] > 0 and process["rss_idle_mb"] > 0
    assert "rss_per_stream_kb" in process
    # One relay row: the run's figures are that row's (summed from its CPU seconds, rounded to the ms).
    assert process["direct_client_cpu_us_per_token"] == pytest.approx(
        relay["direct"]["client_cpu_us_per_token"], rel=0.01
    )
    assert process["own_cpu_us_per_token"] == round(
        process["cpu_us_per_token"] - process["direct_client_cpu_us_per_token"], 2
    )
    _check_micro(report["micro"])
    assert {c["figure"] for c in report["checks"]} >= {
        "TTFT overhead p50 (ms)",
        "TTFT overhead p99 (ms)",
        "TTFT overhead p50 with httpx (ms)",
        "RSS per active stream (KB)",
        "proxy's own CPU per token (µs)",
        "saturation: cancel answered p99 (ms)",
        "saturation: store matches every cancel",
        *MICRO_FIGURES,
    }
    assert all(isinstance(c["ok"], bool) for c in report["checks"])


def test_bench_unreachable_lmstudio_fails_cleanly(
    private_tmp: Path, free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--lmstudio", f"127.0.0.1:{free_port()}", "--repeat", "1", "--streams", "1"]) == 1
    assert "lmstudio-proxy bench:" in capsys.readouterr().err
    assert list(private_tmp.iterdir()) == []
    assert _children() == []


def _check_micro(micro: dict[str, Any]) -> None:
    for name in ("decode_create", "sse_frame"):
        figure = micro[name]
        assert 0 < figure["best_us"] <= figure["us_per_call"], figure
        assert figure["calls"] >= 1 and figure["repeats"] == 7
    assert micro["decode_create"]["body_bytes"] > 100  # a realistic body, not a stub
    assert micro["sse_frame"]["frame_bytes"] > 50
    imports = micro["import_cli"]
    assert imports["interpreter_seconds"] > 0 and imports["seconds"] > 0, imports  # no ordering: timings are noisy
    difference = imports["seconds"] - imports["interpreter_seconds"]
    assert imports["above_interpreter_seconds"] == pytest.approx(difference, abs=2e-4)  # each is rounded


def test_bench_micro_alone(private_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--micro needs no simulator: no child process stays behind, no temporary directory."""
    assert _run(["--micro"]) == 0
    out = capsys.readouterr().out
    assert "Micro-benchmarks" in out
    assert "Relay throughput" not in out
    for label, unit in (
        ("request parse: wire.decode_create", "µs"),
        ("SSE frame: sse.frame", "µs"),
        ("import proxy.cli, above the bare interpreter", "s"),
    ):
        assert re.search(rf"^{re.escape(label)}.*\s\d+\.\d+ {unit}\s.*[✓✗]$", out, re.MULTILINE), out
    assert re.search(r"import proxy.cli: \d+\.\d+ s; python -c pass: \d+\.\d+ s", out), out
    assert list(private_tmp.iterdir()) == []
    assert _children() == []


def test_bench_micro_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--micro", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"micro", "checks"}
    _check_micro(report["micro"])
    assert {c["figure"] for c in report["checks"]} == set(MICRO_FIGURES)


def test_micro_excludes_other_targets() -> None:
    """--micro and --lmstudio/--simulate are exclusive: a micro run never starts a child."""
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--micro", "--simulate"])


@pytest.mark.parametrize("text", ["0", "1,x", ""])
def test_streams_option_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        stream_counts(text)


@pytest.mark.parametrize("text", ["0", "-1", "x", "nan", "inf"])
def test_relay_seconds_option_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0


@pytest.mark.parametrize(("scale", "ok"), [(0.5, True), (2.0, False)])
def test_micro_checks_compare_with_the_targets(scale: float, ok: bool) -> None:
    """Half of each target passes, twice each target fails (the ✓/✗ printed beside the figures)."""
    report = {
        "micro": {
            "decode_create": {"us_per_call": 5.0 * scale},
            "sse_frame": {"us_per_call": 0.5 * scale},
            "import_cli": {"above_interpreter_seconds": 0.3 * scale},
        }
    }
    results = checks(report)
    assert [c["figure"] for c in results] == list(MICRO_FIGURES)
    assert [c["ok"] for c in results] == [ok, ok, ok]


@pytest.mark.parametrize(("scale", "ok"), [(0.5, True), (2.0, False)])
def test_first_token_checks_cover_each_of_the_issues_targets(scale: float, ok: bool) -> None:
    """The minimal client's p50 and p99 and httpx's p50, each against its own target."""
    report = {
        "ttft": {
            "overhead_raw_client": {"p50_ms": 0.5 * scale, "p99_ms": 3.0 * scale},
            "overhead": {"p50_ms": 3.0 * scale, "p99_ms": 100.0},  # httpx's p99 has no target
        }
    }
    assert {c["figure"]: c["ok"] for c in checks(report)} == {
        "TTFT overhead p50 (ms)": ok,
        "TTFT overhead p99 (ms)": ok,
        "TTFT overhead p50 with httpx (ms)": ok,
    }


def test_bench_scaleout_on_postgresql(private_tmp: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--database postgresql://: two replicas and `serve --workers 2` on it; every cancel's store matches."""
    argv = [*SMALL, "--streams", "1", "--database", postgres_url, "--workers", "2", "--workers-streams", "1,3"]
    assert _run([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    replicas = report["replicas"]
    assert replicas["error"] is None and replicas["samples"] == 3
    for route in ("cross", "same"):
        for key in ("to_lmstudio", "answered"):
            assert replicas[route][key]["samples"] == 3, (route, key)
    assert replicas["cancels"] == 6 == replicas["store_matches"] and replicas["mismatches"] == []
    assert replicas["modes"] == {"keep_partial": 6}  # the replicas' config: the store check compares text
    workers = report["workers"]
    assert workers["workers"] == 2 and [row["streams"] for row in workers["rows"]] == [1, 3]
    for row in workers["rows"]:
        assert row["error"] is None and row["rounds"] >= 1
        # The same batches on both sides: every stream ran to its end, all its tokens counted.
        assert row["one"]["tokens"] == row["workers"]["tokens"] == row["rounds"] * row["streams"] * 50
        assert row["ratio"] == round(row["workers"]["tokens_per_second"] / row["one"]["tokens_per_second"], 3)
    assert list(private_tmp.iterdir()) == []
    assert _children() == []
    # The tables: one small run (a cancel each way) is enough to see every line.
    assert _run([*SMALL, "--streams", "1", "--repeat", "1", "--database", postgres_url, "--workers-streams", "2"]) == 0
    out = capsys.readouterr().out
    for line in (
        "Cross-replica cancel",
        "cancel to B (other replica): sent -> LM Studio receives cancel",
        "cancel to B (other replica): sent -> cancel answered",
        "cancel to A (stream's replica): sent -> LM Studio receives cancel",
        "store matches the cancel's body: 2 of 2 cancels ✓",
        "Relay with 2 workers against one process",
        "workers/one",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "need PostgreSQL" not in out


@pytest.mark.parametrize("text", ["bench.sqlite3", "sqlite:///x", "http://127.0.0.1:5432/db"])
def test_database_option_takes_only_postgresql(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        postgresql_url(text)


def test_the_bare_relay_streams_the_simulators_text(
    simulator: Any, free_port: Callable[[], int], tmp_path: Path
) -> None:
    """The bench's bare relay (`proxy.bench.bare`) in its own process: LM Studio's text, as deltas, then [DONE]."""
    import asyncio

    from proxy.bench.processes import Child
    from proxy.bench.raw_client import RawClient
    from proxy.simulator.textgen import answer_tokens
    from proxy.sse import parse

    port = free_port()
    relay = Child("bare relay", tmp_path / "bare.log")
    relay.start([sys.executable, "-m", "proxy.bench.bare", str(port), simulator.host_port])
    prompt = "Say hello. [tokens=6]"
    body = {"inputs": [{"role": "user", "content": prompt}], "stream": True, "model": "simulated-llm", "max_tokens": 6}

    async def stream() -> tuple[float, bytes]:
        client = RawClient(f"http://127.0.0.1:{port}")
        try:
            first = await client.ttft(body, own_header=False)  # no X-Proxy-Overhead-Ms: none asked for
            with pytest.raises(BenchError, match="X-Proxy-Overhead-Ms"):  # the proxy's answers must carry it
                await client.ttft(body)
            reader, writer = await client._connection()
            writer.write(client._create_request(body))
            received = b""
            while not received.endswith(b"\r\n0\r\n\r\n"):
                chunk = await reader.read(65536)
                assert chunk, f"the bare relay closed the connection mid-answer: {received[-300:]!r}"
                received += chunk
            return first.seconds, received
        finally:
            await client.aclose()

    try:
        relay.wait_ready(f"http://127.0.0.1:{port}/")
        seconds, received = asyncio.run(stream())
    finally:
        relay.stop()
    assert seconds > 0
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    events = parse(b"".join(chunked.split(b"\r\n")[1::2]))  # the chunks' data, without their sizes
    assert events[-1] == "[DONE]"
    deltas = [e["delta"] for e in events[:-1] if isinstance(e, dict) and e["event"] == "response.content_delta"]
    assert "".join(deltas) == "".join(itertools.islice(answer_tokens(prompt), 6))


@pytest.mark.parametrize("n", [2, 4, 6, 8])
def test_balanced_orders_put_each_side_after_each_other_once(n: int) -> None:
    """The TTFT phase's orders: each side first once, and after each other side exactly once."""
    orders = balanced_orders(n)
    assert len(orders) == n and all(sorted(order) == list(range(n)) for order in orders)
    assert sorted(order[0] for order in orders) == list(range(n))
    pairs = [(a, b) for order in orders for a, b in itertools.pairwise(order)]
    assert sorted(pairs) == [(a, b) for a in range(n) for b in range(n) if a != b]


def test_balanced_orders_need_an_even_count() -> None:
    with pytest.raises(ValueError, match="even"):
        balanced_orders(3)
