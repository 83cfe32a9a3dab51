"""The `lmstudio-proxy simulate` command: run the LM Studio simulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from proxy.simulator.models import DEFAULT_MODELS, ModelSpec, load_model_file
from proxy.simulator.server import Simulator

DEFAULT_PORT = 41343  # the first port the lmstudio SDKs probe when given no host


def _model(text: str) -> ModelSpec:
    try:
        return ModelSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ", ".join(
        s.key
        + (
            ""
            if s.loaded and not s.reasoning
            else ":" + ",".join(o for o, on in (("downloaded", not s.loaded), ("reasoning", s.reasoning)) if on)
        )
        for s in DEFAULT_MODELS
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0 = any)")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        type=_model,
        metavar="KEY[:OPTS]",
        help=(
            "a simulated model; OPTS is a comma list of `downloaded` (not loaded until asked), "
            "`reasoning` (emits <think>…</think>), `embedding` (an embedding model), `vision` (accepts "
            f"images), `tools` (trained for tool use); repeatable (default: {defaults})"
        ),
    )
    parser.add_argument(
        "--models-file",
        metavar="PATH",
        help="a TOML or JSON model list (see the README) to mirror your own LM Studio; --model adds to it",
    )
    parser.add_argument("--tokens-per-second", type=_non_negative, default=50.0, help="0 = as fast as possible")
    parser.add_argument("--load-seconds", type=_non_negative, default=1.0, help="simulated model load time")
    parser.add_argument("--prompt-seconds", type=_non_negative, default=0.05, help="simulated prompt processing")


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    # uvicorn re-raises a SIGTERM after its graceful shutdown: a stop, not a crash (exit 0).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    models = list(args.models or [])
    if getattr(args, "models_file", None):
        try:
            models = load_model_file(args.models_file) + models
        except (OSError, ValueError) as exc:
            print(f"lmstudio-proxy simulate: {exc}", file=sys.stderr)
            return 2
    simulator = Simulator(
        host=args.host,
        port=args.port,
        models=models or None,
        tokens_per_second=args.tokens_per_second,
        load_seconds=args.load_seconds,
        prompt_seconds=args.prompt_seconds,
    )

    def banner() -> None:
        keys = ", ".join(m["key"] + ("" if m["loaded"] else " (not loaded)") for m in simulator.models())
        print(f"LM Studio simulator listening on {simulator.base_url} (models: {keys})", flush=True)

    try:
        asyncio.run(simulator.serve(on_ready=banner))
    except OSError as exc:  # typically: the port is taken
        print(f"lmstudio-proxy simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
