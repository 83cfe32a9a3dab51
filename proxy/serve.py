"""`lmstudio-proxy serve`: run the proxy under uvicorn, optionally with the embedded simulator."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

import uvicorn

from proxy import config as config_module
from proxy.app import create_app, default_database_path
from proxy.config import Config
from proxy.errors import ConfigError

log = logging.getLogger("proxy.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $LMSTUDIO_PROXY_CONFIG)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--lmstudio", metavar="HOST:PORT", help="LM Studio's API host (default: discover)")
    parser.add_argument("--simulate", action="store_true", help="start the built-in LM Studio simulator and use it")
    parser.add_argument("--database", metavar="PATH", help="SQLite file (default: database.path)")
    parser.add_argument(
        "--allow-open", action="store_true", help="allow a non-loopback address with no auth.api_keys configured"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def effective_config(args: argparse.Namespace) -> Config:
    config = config_module.load(args.config)
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.allow_open:
        server["allow_open"] = True
    if server:
        config = config.replace("server", **server)
    if not is_loopback(config.server.host) and not config.auth.api_keys and not config.server.allow_open:
        raise ConfigError(
            f"refusing to listen on {config.server.host} with no auth.api_keys configured: anyone on the network "
            "could use LM Studio and read every thread. Configure auth.api_keys, or pass --allow-open."
        )
    return config


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run(args: argparse.Namespace) -> int:
    config = effective_config(args)
    setup_logging(config.logging.level)
    simulator = None
    lmstudio_host = args.lmstudio
    if args.simulate:
        from proxy.simulator import Simulator

        simulator = Simulator(tokens_per_second=30.0).start()
        lmstudio_host = simulator.host_port
    try:
        app = create_app(config, lmstudio_host=lmstudio_host, database=args.database)
        proxy = app.state.proxy
        auth = f"{len(config.auth.api_keys)} key(s)" if config.auth.api_keys else "off (any non-empty key)"
        lm = f"{proxy.bridge.where()}" + (" (built-in simulator)" if simulator else "")
        print(
            f"lmstudio-proxy listening on http://{config.server.host}:{config.server.port}\n"
            f"  LM Studio: {lm}\n"
            f"  database:  {proxy.store.path or default_database_path()}\n"
            f"  auth:      {auth}\n"
            f"  config:    {config.source or 'defaults'}",
            flush=True,
        )
        uvicorn.run(
            app,
            host=config.server.host,
            port=config.server.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(config.cancel.drain_timeout_seconds) + 2,
        )
    finally:
        if simulator is not None:
            simulator.stop()
    return 0
