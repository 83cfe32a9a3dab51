"""`lmstudio-proxy check` and `models`: what the proxy would use, and what is wrong with it.

The checks read the config and ask LM Studio (through the bridge) what it has; they never
change anything. A problem is an `error` (the proxy cannot work: the config does not load, or
LM Studio does not answer) or a `warning` (some requests will fail, e.g. an alias pointing at
a model LM Studio does not have). Only errors make the commands exit non-zero.

With `--simulate` they start the built-in simulator for the command and check against it.

When discovering LM Studio, the SDK probes its ports one after another, each with a 1 s
timeout: where connecting to a closed port hangs instead of being refused (filtered ports, some
sandboxes and VMs, Windows' retries on localhost), "nothing is running" took six timeouts, ~7 s.
So `inspect` first tries a TCP connection to every candidate at once, with that same 1 s: a port
that does not accept one within it would fail the SDK's probe too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from proxy import config as config_module
from proxy.backends import Backends
from proxy.bridge import FALLBACK_HOST, SDK_DEFAULT_PORTS, START_HINT, Bridge
from proxy.config import Config, LMStudioConfig
from proxy.engines import redacted
from proxy.errors import BackendUnavailable, ConfigError
from proxy.hosts import is_loopback
from proxy.models import ModelCatalog
from proxy.state import default_database_path
from proxy.wire.bodies import LMStudioHost, Model

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_CONFIG = 2

#: Where the bridge looks for LM Studio when no host is configured, in its order.
DISCOVERY_HOSTS = (*(f"127.0.0.1:{port}" for port in SDK_DEFAULT_PORTS), FALLBACK_HOST)
#: The SDK's own probe timeout (`AsyncClient.is_valid_api_host`).
PROBE_TIMEOUT = 1.0


def host_list(text: str) -> list[str]:
    """`--lmstudio a:1,b:2` → ["a:1", "b:2"]."""
    hosts = [h.strip() for h in text.split(",")]
    if not all(hosts):
        raise argparse.ArgumentTypeError(f"an empty host in {text!r}: give HOST:PORT[,HOST:PORT…]")
    return hosts


def simulator_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= 16:
        raise argparse.ArgumentTypeError(f"the number of simulators must be 1 to 16, got {text!r}")
    return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $LMSTUDIO_PROXY_CONFIG)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--lmstudio", metavar="HOST:PORT[,…]", type=host_list,
        help="LM Studio's API host, or several, comma-separated (default: lmstudio.hosts, else discover)",
    )  # fmt: skip
    where.add_argument(
        "--simulate", metavar="N", nargs="?", const=1, type=simulator_count,
        help="start the built-in LM Studio simulator (N of them: N hosts) and use it",
    )  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """Something wrong, and what to do about it."""

    severity: Literal["error", "warning"]
    message: str
    fix: str
    detail: str = ""


@dataclass
class Report:
    """Everything `check` found out."""

    config: Config
    config_source: str
    looked_at: str
    host: str | None = None
    loaded: list[dict[str, Any]] = field(default_factory=list)
    downloaded: list[dict[str, Any]] = field(default_factory=list)
    listing: list[Model] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    config_failed: bool = False
    simulated: bool = False
    hosts: list[LMStudioHost] = field(default_factory=list)  # each LM Studio host, when several
    connected: dict[str, str | None] = field(default_factory=dict)  # host → the address connected to

    @property
    def reachable(self) -> bool:
        return self.host is not None

    @property
    def exit_code(self) -> int:
        if self.config_failed:
            return EXIT_CONFIG
        return EXIT_OK if self.reachable else EXIT_UNREACHABLE

    def known(self, key: str) -> bool:
        return any(key in (m["identifier"], m["key"]) for m in self.loaded) or any(
            m["key"] == key for m in self.downloaded
        )


def _load_config(path: str | None) -> tuple[Config, Problem | None]:
    try:
        return config_module.load(path), None
    except ConfigError as exc:
        if path is not None and not Path(path).is_file():
            fix = f"Check the path given with --config or ${config_module.ENV_VAR}"
        else:
            fix = "Fix that key in the file (every key, with its default, is in config.example.toml)"
        return Config(), Problem("error", str(exc), fix + "; the checks below use the defaults instead.")


def _config_problems(config: Config) -> list[Problem]:
    problems = []
    server = config.server
    if not is_loopback(server.host) and not config.auth.api_keys:
        if server.allow_open:
            problems.append(
                Problem(
                    "warning",
                    f"server.host is {server.host} (not loopback) with no auth.api_keys and server.allow_open set: "
                    "anyone on the network can use LM Studio and read every thread.",
                    "Configure auth.api_keys, or listen on 127.0.0.1.",
                )
            )
        else:
            problems.append(
                Problem(
                    "error",
                    f"server.host is {server.host} (not loopback) with no auth.api_keys: `serve` will refuse to start.",
                    "Configure auth.api_keys, listen on 127.0.0.1, or pass --allow-open to `serve` (unsafe).",
                )
            )
    return problems


def _model_problems(report: Report) -> list[Problem]:
    config = report.config
    problems = []
    available = ", ".join(m["id"] for m in report.listing) or "none"
    for alias, key in sorted(config.models.aliases.items()):
        if not report.known(key):
            problems.append(
                Problem(
                    "warning",
                    f"alias '{alias}' points at '{key}', which LM Studio does not have.",
                    f"Download '{key}' in LM Studio (or `lms get {key}`), or point the alias at one of: {available}.",
                )
            )
    default = config.lmstudio.default_model
    if default:
        key = config.models.aliases.get(default, default)
        if key == default and not report.known(key):
            problems.append(
                Problem(
                    "warning",
                    f"lmstudio.default_model '{default}' is neither a model LM Studio has nor an alias: "
                    "requests without `model` will fail.",
                    f"Set lmstudio.default_model to one of: {available}.",
                )
            )
    if not report.loaded and not report.downloaded:
        problems.append(
            Problem(
                "warning",
                "LM Studio has no LLM loaded or downloaded.",
                "Download a model in LM Studio (Discover tab) or with `lms get MODEL`.",
            )
        )
    return problems


async def _accepts(host: str) -> str | None:
    """None if `host` (HOST:PORT) accepts a TCP connection within PROBE_TIMEOUT, else why not."""
    name, _, port = host.rpartition(":")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(name.strip("[]"), int(port))
    except TimeoutError:
        return f"{host}: no connection within {PROBE_TIMEOUT:g} s"
    except ConnectionRefusedError:
        return f"{host}: connection refused"
    except OSError as exc:
        return f"{host}: {exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def _fail_fast(bridge: Bridge) -> None:
    """When `bridge` would discover LM Studio and no candidate accepts a connection, raise at once."""
    if bridge.configured_host:
        return  # one host: the SDK's single probe is as quick as ours
    failures = await asyncio.gather(*(_accepts(host) for host in DISCOVERY_HOSTS))
    if all(failures):
        bridge.last_error = "; ".join(f for f in failures if f)
        raise BackendUnavailable(f"LM Studio is not reachable (looked at {bridge.where()}).")


async def unreachable(config: LMStudioConfig, lmstudio_hosts: list[str] | None) -> Problem | None:
    """None if LM Studio answers where the proxy would look (every host), else the problem (for
    `serve`'s banner).

    As quick as `check`: about a second when nothing listens on any of the discovery's ports.
    """
    backends = Backends(config, lmstudio_hosts)

    async def answers(bridge: Bridge) -> bool:
        try:
            await _fail_fast(bridge)
            await bridge.client()
        except BackendUnavailable:
            return False
        return True

    try:
        results = await asyncio.gather(*(answers(b.bridge) for b in backends.hosts))
    finally:
        await backends.aclose()
    silent = [b.bridge for b, ok in zip(backends.hosts, results, strict=True) if not ok]
    if not silent:
        return None
    where = ", ".join(b.where() for b in silent)
    return Problem("error", f"LM Studio does not answer at {where}.", START_HINT,
                   "; ".join(b.last_error or "" for b in silent))  # fmt: skip


async def inspect(config_path: str | None, lmstudio_hosts: list[str] | None) -> Report:
    """Load the config, ask LM Studio what it has, and collect the problems (never raises for them)."""
    config_path = config_path or os.environ.get(config_module.ENV_VAR) or None
    config, config_problem = _load_config(config_path)
    if config_problem is None:
        source = config.source or f"defaults (no --config, ${config_module.ENV_VAR} unset)"
    else:
        source = f"{config_path} (not usable)"
    backends = Backends(config.lmstudio, lmstudio_hosts)
    report = Report(config=config, config_source=source, looked_at=backends.where())
    if config_problem is not None:
        report.problems.append(config_problem)
        report.config_failed = True
    else:
        report.problems.extend(_config_problems(config))
        report.config_failed = any(p.severity == "error" for p in report.problems)
    catalog = ModelCatalog(backends, config)
    try:
        if len(backends.hosts) == 1:
            await _fail_fast(backends.hosts[0].bridge)
        await catalog.refresh()
    except BackendUnavailable as exc:
        bridge = backends.hosts[0].bridge
        if len(backends.hosts) > 1 or bridge.host is None:  # never connected
            detail = "; ".join(b.bridge.last_error or b.error or "" for b in backends.hosts)
            problem = Problem("error", f"LM Studio does not answer at {backends.where()}.", START_HINT, detail)
        else:
            problem = Problem("error", f"LM Studio answered but failed: {exc.message}", START_HINT)
        report.problems.append(problem)
        report.host = None
    else:
        answering = [b for b in backends.hosts if not b.down]
        report.host = answering[0].bridge.host
        report.loaded, report.downloaded, report.listing = catalog.loaded, catalog.downloaded, catalog.listing()
        report.problems.extend(_model_problems(report))
        for b in backends.hosts:
            if b.down:
                report.problems.append(
                    Problem(
                        "warning",
                        f"LM Studio host {b.name} does not answer: requests go to the other hosts meanwhile.",
                        f"Start LM Studio's server on {b.name}, or remove it from lmstudio.hosts.",
                        b.error or "",
                    )
                )
    finally:
        await backends.aclose()
    if len(backends.hosts) > 1:
        report.hosts = [b.status() for b in backends.hosts]
        report.connected = {b.name: b.bridge.host for b in backends.hosts}
    return report


def _models_line(models: list[dict[str, Any]], name: str) -> str:
    return ", ".join(f"{m[name]} ({m['display_name']}, {m['context_length']} tokens)" for m in models) or "none"


def print_report(report: Report, out: TextIO) -> None:
    simulator = "; the built-in simulator" if report.simulated else ""
    status = f"answers (connected to {report.host}{simulator})" if report.reachable else "does not answer"
    not_loaded = [m for m in report.downloaded if not any(m["key"] == lm["key"] for lm in report.loaded)]
    lines = [f"config:      {report.config_source}"]
    if report.hosts:  # several hosts: one line each
        answering = sum(h["state"] != "down" for h in report.hosts)
        lines.append(f"LM Studio:   {len(report.hosts)} hosts, {answering} answer{'s' if answering == 1 else ''}")
        for h in report.hosts:
            if h["state"] == "down":
                lines.append(f"  {h['host']} — does not answer")
            else:
                connected = report.connected.get(h["host"]) or h["host"]
                loaded = ", ".join(h["loaded_models"]) or "none"
                downloaded = ", ".join(m for m in h["downloaded_models"] if m not in h["loaded_models"]) or "none"
                lines.append(
                    f"  {h['host']} — answers (connected to {connected}{simulator}); loaded: {loaded}; "
                    f"downloaded: {downloaded}"
                )
    else:
        lines.append(f"LM Studio:   {report.looked_at} — {status}")
    if report.reachable:
        lines.append(f"loaded:      {_models_line(report.loaded, 'identifier')}")
        lines.append(f"downloaded:  {_models_line(not_loaded, 'key')}")
    aliases = report.config.models.aliases
    if aliases:
        lines.append("aliases:     " + ", ".join(f"{a} → {k}" for a, k in sorted(aliases.items())))
    default = report.config.lmstudio.default_model or "(none: the first loaded model)"
    lines.append(f"default:     {default}")
    lines.append(f"database:    {redacted(report.config.database.path) or default_database_path()}")
    lines.append("")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        for p in report.problems:
            lines.append(f"  {p.severity}: {p.message}")
            if p.detail:
                lines.append(f"    detail: {p.detail}")
            lines.append(f"    fix: {p.fix}")
    else:
        lines.append("No problems found.")
    print("\n".join(lines), file=out, flush=True)


def print_models(report: Report, out: TextIO) -> None:
    rows = [("MODEL", "DISPLAY NAME", "LOADED", "CONTEXT")]
    rows += [
        (m["id"], m["display_name"], "yes" if m["loaded"] else "no", str(m["context_length"])) for m in report.listing
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    aliases = report.config.models.aliases
    if aliases:
        width = max(len(a) for a in aliases)
        lines += ["", "ALIASES"]
        for alias, key in sorted(aliases.items()):
            missing = "" if report.known(key) else "  (LM Studio does not have this model)"
            lines.append(f"{alias.ljust(width)} → {key}{missing}")
    print("\n".join(lines), file=out, flush=True)


def _print_errors(report: Report, err: TextIO) -> None:
    for p in report.problems:
        if p.severity == "error":
            detail = f"\n  detail: {p.detail}" if p.detail else ""
            print(f"lmstudio-proxy: {p.message}{detail}\n  fix: {p.fix}", file=err, flush=True)


def _report(args: argparse.Namespace) -> Report:
    """`inspect` LM Studio, or with `--simulate` a simulator started (and stopped) for the command."""
    if not args.simulate:
        return asyncio.run(inspect(args.config, args.lmstudio))
    from proxy.simulator import Simulator

    simulators = Simulator.start_many(args.simulate)
    try:
        report = asyncio.run(inspect(args.config, [s.host_port for s in simulators]))
    finally:
        for simulator in simulators:
            simulator.stop()
    report.simulated = True
    return report


def check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`lmstudio-proxy check`: print the report; non-zero on a config error or LM Studio not answering."""
    report = _report(args)
    print_report(report, out)
    return report.exit_code


def models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`lmstudio-proxy models`: the table of usable models and aliases; non-zero if LM Studio does not answer."""
    report = _report(args)
    _print_errors(report, err)
    if report.reachable:
        print_models(report, out)
    return report.exit_code
