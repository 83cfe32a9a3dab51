"""`serve --workers N`: N proxy processes accepting on one listening socket, sharing one PostgreSQL database.

Each worker is a plain `serve` process (a replica, `proxy/replicas.py`) given the socket the
supervisor bound (`--listen-fd`); the kernel hands each connection to one of them. The
supervisor only forwards SIGTERM/SIGINT and waits: a worker that exits by itself stops the
others and the supervisor exits 1 (let the service manager restart the whole). A worker
whose supervisor dies (even by kill -9) stops too: it reads a pipe only the supervisor
holds open, which ends when it does.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from types import FrameType

log = logging.getLogger("proxy.workers")


def refusal(workers: int, database: str) -> str | None:
    """Why `--workers` cannot be used with this database (None: it can)."""
    from proxy.engines import is_url

    if workers > 1 and not is_url(database):
        return (
            "--workers needs a PostgreSQL database (--database postgresql://…): with SQLite the proxy is one "
            "process; see the README (Several proxies on one PostgreSQL database)"
        )
    return None


def worker_arguments(args: argparse.Namespace, lmstudio_hosts: list[str] | None) -> list[str]:
    """A worker's `serve` arguments: the supervisor's, less what it did once for all (simulator, preload)."""
    argv: list[str] = []
    for option, value in (("--config", args.config), ("--host", args.host), ("--database", args.database)):
        if value is not None:
            argv += [option, str(value)]
    if lmstudio_hosts:
        argv += ["--lmstudio", ",".join(lmstudio_hosts)]
    if args.allow_open:
        argv.append("--allow-open")
    return argv


def supervise(sock: socket.socket, workers: int, argv: list[str]) -> int:
    """Run `workers` serve processes on `sock` until a signal (0) or until one exits by itself (1)."""
    listen_fd = sock.fileno()
    alive_r, alive_w = os.pipe()  # the workers' end reads EOF once this process is gone
    command = [sys.executable, "-m", "proxy", "serve", *argv, "--listen-fd", str(listen_fd), "--alive-fd", str(alive_r)]
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(workers):
            children.append(subprocess.Popen(command, pass_fds=(listen_fd, alive_r)))
        os.close(alive_r)
        print(f"lmstudio-proxy: {workers} workers, pids {' '.join(str(c.pid) for c in children)}", flush=True)
        running = {c.pid: c for c in children}
        failed = False
        while running:
            pid, status = os.wait()
            child = running.pop(pid, None)
            if child is None:
                continue
            child.returncode = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error("worker %d exited (%d): stopping the others", pid, child.returncode)
                failed = True
                stop(signal.SIGTERM, None)
        return 1 if failed or any(c.returncode not in (0, -signal.SIGTERM) for c in children) else 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(alive_w)


def exit_with_supervisor(alive_fd: int) -> None:
    """In a worker: SIGTERM this process once the supervisor has gone (its pipe reads EOF)."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(alive_fd, 1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
