"""The `lmstudio-proxy` command: serve, simulate, check, models, bench.

Importing this module imports argparse and nothing heavy: a subcommand's module is imported
only once the command line has named it, and only that one. The web app and the `lmstudio`
SDK take about a second to import; `--help`, `--version` and `bench --micro` need neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy.errors import ConfigError

Run = Callable[[argparse.Namespace], int]

COMMANDS = {
    "simulate": "run the LM Studio simulator standalone",
    "serve": "run the proxy",
    "check": "show which LM Studio and config the proxy would use, and any problem",
    "models": "list the models LM Studio has, and the configured aliases",
    "bench": "measure the proxy against direct lmstudio SDK use",
}


class _Version(argparse.Action):
    """`--version`, reading the version only when asked (the package metadata lookup costs ~40 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from proxy import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit()


def _setup(command: str, parser: argparse.ArgumentParser) -> Run:
    """Import `command`'s module, add its arguments to `parser`, and return what runs it."""
    if command == "simulate":
        from proxy.simulator import cli as simulator_cli

        simulator_cli.add_arguments(parser)
        return simulator_cli.run
    if command == "serve":
        from proxy import serve

        serve.add_arguments(parser)
        return serve.run
    if command in ("check", "models"):
        from proxy import doctor

        doctor.add_arguments(parser)
        report = doctor.check if command == "check" else doctor.models
        return lambda args: report(args, sys.stdout, sys.stderr)
    from proxy import bench

    bench.add_arguments(parser)
    return bench.run


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmstudio-proxy",
        description="Serve the Aitronos Freddy responses/threads API on localhost, backed by LM Studio.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The top level has no option that takes a value, so the first word that is not an option
    # names the command; any other word is left for argparse to reject.
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for command, summary in COMMANDS.items():
        command_parser = sub.add_parser(command, help=summary)
        if command == chosen:
            command_parser.set_defaults(run=_setup(command, command_parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"lmstudio-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
