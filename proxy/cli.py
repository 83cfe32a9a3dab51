"""The `lmstudio-proxy` command: serve, simulate, check, models, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import __version__
from proxy.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmstudio-proxy",
        description="Serve the Aitronos Freddy responses/threads API on localhost, backed by LM Studio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from proxy.simulator import cli as simulator_cli

    sim = sub.add_parser("simulate", help="run the LM Studio simulator standalone")
    simulator_cli.add_arguments(sim)
    sim.set_defaults(run=simulator_cli.run)

    from proxy import serve as serve_cli

    srv = sub.add_parser("serve", help="run the proxy")
    serve_cli.add_arguments(srv)
    srv.set_defaults(run=serve_cli.run)

    from proxy import doctor

    chk = sub.add_parser("check", help="show which LM Studio and config the proxy would use, and any problem")
    doctor.add_arguments(chk)
    chk.set_defaults(run=lambda args: doctor.check(args, sys.stdout, sys.stderr))

    mdl = sub.add_parser("models", help="list the models LM Studio has, and the configured aliases")
    doctor.add_arguments(mdl)
    mdl.set_defaults(run=lambda args: doctor.models(args, sys.stdout, sys.stderr))

    from proxy import bench

    bch = sub.add_parser("bench", help="measure the proxy against direct lmstudio SDK use")
    bench.add_arguments(bch)
    bch.set_defaults(run=bench.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"lmstudio-proxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
