"""The simulator and the proxy as child processes: started, polled until ready, measured, stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

from proxy.bench.errors import BenchError
from proxy.bench.settings import START_TIMEOUT, STOP_TIMEOUT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A subprocess with its output in a log file; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False  # by `stop()`: its exit is no failure

    def start(self, argv: list[str]) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        assert self.process is not None
        if self.stopped:
            return
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"the {self.name} exited (status {code}); its last output:\n{self.log_tail()}")

    def wait_ready(self, url: str) -> None:
        """Poll `url` until it answers 200 (the child's own readiness signal is its listening socket)."""
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as http:
            while True:
                self.check_running()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"the {self.name} did not answer {url} in {START_TIMEOUT:g} s:\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.stopped = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/PID/stat fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_seconds(self) -> float:
        """CPU time so far to the nanosecond, all threads (/proc/PID/task/*/schedstat): for short
        spans, where `cpu_seconds`' clock ticks (10 ms) would be most of the figure."""
        total = 0
        for stat in Path(f"/proc/{self.pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError):  # a thread that just ended
                total += int(stat.read_text().split()[0])
        return total / 1e9

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError(f"no VmRSS for the {self.name} (pid {self.pid})")
