"""The `bench` subcommand's options (argparse only: the command line imports this module)."""

from __future__ import annotations

import argparse

from proxy.bench.settings import MIN_RELAY_ROUNDS, RELAY_SECONDS

DEFAULT_STREAMS = (1, 8, 32, 128)
DEFAULT_TOKENS = 500  # per stream, in the throughput runs
DEFAULT_REPEAT = 100  # TTFT pairs, cancels and disconnects
DEFAULT_WORKERS = 2  # `serve --workers N` against one process, in the scale-out relay
DEFAULT_WORKERS_STREAMS = (32, 128)  # concurrent streams in the scale-out relay
DEFAULT_SATURATION = 256  # streams in the saturation phase


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def stream_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"stream counts must be >= 1, got {text!r}")
    return counts


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def postgresql_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            f"expected a postgresql:// URL, got {text!r} (the other phases always use a temporary SQLite file)"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--simulate", action="store_true", help="run against the built-in simulator at full speed (the default)"
    )
    where.add_argument("--lmstudio", metavar="HOST:PORT", help="run against this LM Studio")
    where.add_argument(
        "--micro",
        action="store_true",
        help="only the micro-benchmarks (request parsing, SSE framing, import time): no simulator, a few seconds",
    )
    parser.add_argument(
        "--streams",
        type=stream_counts,
        default=DEFAULT_STREAMS,
        metavar="N,N,...",
        help=f"concurrent streams for the throughput runs (default: {','.join(map(str, DEFAULT_STREAMS))})",
    )
    parser.add_argument(
        "--tokens", type=positive, default=DEFAULT_TOKENS, help="tokens per throughput stream (default: %(default)s)"
    )
    parser.add_argument(
        "--relay-seconds",
        type=seconds,
        default=RELAY_SECONDS,
        metavar="S",
        help="each throughput level alternates direct and proxy batches until each side has streamed S seconds "
        f"(and run at least {MIN_RELAY_ROUNDS} batches; default: %(default)g)",
    )
    parser.add_argument(
        "--repeat",
        type=positive,
        default=DEFAULT_REPEAT,
        help="samples for TTFT (each side), cancel and disconnect (default: %(default)s)",
    )
    parser.add_argument(
        "--saturation",
        type=count,
        default=DEFAULT_SATURATION,
        metavar="N",
        help="streams in the saturation phase (simulator only; each at 40 tokens/s, a quarter cancelled; "
        "0 skips it; default: %(default)s)",
    )
    parser.add_argument(
        "--model", metavar="KEY", help="model key (default: simulated-llm, or LM Studio's first loaded)"
    )
    parser.add_argument(
        "--database",
        type=postgresql_url,
        metavar="postgresql://...",
        help="also measure scale-out on this PostgreSQL database (a scratch one: the bench's threads stay in it): "
        "a cancel sent to another replica than the stream's, and relay with --workers N against one process",
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="with --database: `serve --workers N` against one process (default: %(default)s)",
    )
    parser.add_argument(
        "--workers-streams",
        type=stream_counts,
        default=DEFAULT_WORKERS_STREAMS,
        metavar="N,N,...",
        help="with --database: concurrent streams for the workers' relay "
        f"(default: {','.join(map(str, DEFAULT_WORKERS_STREAMS))})",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
