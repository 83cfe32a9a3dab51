"""`lmstudio-proxy check`, `models` and `serve --preload`, against the simulator."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy import doctor
from proxy.cli import main
from proxy.config import ENV_VAR, LMStudioConfig
from proxy.serve import LoadProgress
from proxy.simulator import Simulator

TIMEOUT = 30


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_ok(simulator: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{simulator.host_port} — answers" in out
    assert "loaded:      simulated-llm (Simulated Llm, 4096 tokens), simulated-reasoner" in out
    assert "downloaded:  simulated-large" in out
    assert "defaults (no --config" in out
    assert "No problems found." in out


def test_check_lmstudio_down(free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]) -> None:
    host = f"127.0.0.1:{free_port()}"
    code = main(["check", "--lmstudio", host])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"error: LM Studio does not answer at {host}." in out
    assert "Start LM Studio" in out
    assert "lmstudio-proxy serve --simulate" in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nport = "8000"\n', "server.port"),
        ("[lmstudio]\nhots = 'x'\n", "lmstudio.hots"),
    ],
)
def test_check_bad_config(
    tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write_config(tmp_path, text)
    code = main(["check", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 2, out
    assert f"{path} (not usable)" in out
    assert f"error: {path}: " in out
    assert f"key '{key}'" in out
    assert "fix: Fix that key" in out
    assert "— answers" in out  # LM Studio is still checked, with the defaults


def test_check_missing_config_file(tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "missing.toml")
    code = main(["check", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 2, out
    assert f"error: {path}: cannot read config file" in out
    assert "fix: Check the path given with --config or $LMSTUDIO_PROXY_CONFIG" in out


def test_check_open_host_without_keys(tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, '[server]\nhost = "0.0.0.0"\n')
    code = main(["check", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "server.host is 0.0.0.0 (not loopback) with no auth.api_keys" in out
    assert "Configure auth.api_keys" in out


def test_check_model_warnings(tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path,
        '[lmstudio]\ndefault_model = "nope"\n[models.aliases]\nfast = "simulated-llm"\nghost = "no-such-model"\n',
    )
    code = main(["check", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 0, out  # warnings only: the proxy works, some requests will fail
    assert "2 problem(s):" in out
    assert "warning: alias 'ghost' points at 'no-such-model', which LM Studio does not have." in out
    assert "warning: lmstudio.default_model 'nope'" in out
    assert "alias 'fast'" not in out


def test_models_table(tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, '[models.aliases]\nfast = "simulated-llm"\nghost = "no-such-model"\n')
    code = main(["models", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "DISPLAY", "NAME", "LOADED", "CONTEXT"]
    assert "simulated-llm       Simulated Llm       yes     4096" in lines
    assert "simulated-large     Simulated Large     no      8192" in lines
    assert "fast  → simulated-llm" in lines
    assert "ghost → no-such-model  (LM Studio does not have this model)" in lines


def test_models_lmstudio_down(free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["models", "--lmstudio", f"127.0.0.1:{free_port()}"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "LM Studio does not answer" in captured.err
    assert "--simulate" in captured.err


def test_check_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--simulate"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "— answers (connected to 127.0.0.1:" in out and "; the built-in simulator)" in out
    assert "loaded:      simulated-llm (Simulated Llm, 4096 tokens)" in out
    assert "No problems found." in out


def test_models_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["models", "--simulate"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "simulated-large     Simulated Large     no      8192" in captured.out.splitlines()


@pytest.mark.parametrize("command", ["check", "models"])
def test_simulate_and_lmstudio_are_exclusive(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--simulate", "--lmstudio", "127.0.0.1:1234"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture
def hanging_host() -> Iterator[str]:
    """HOST:PORT where connecting hangs rather than being refused, as on a filtered port: a listener
    that never accepts, with its accept queue full, so the kernel drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(2)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield f"127.0.0.1:{port}"
        finally:
            for filler in fillers:
                filler.close()


def test_check_discovery_fails_fast_when_connects_hang(
    hanging_host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Six candidates, as in the real discovery; the SDK probes them one after another, 1 s each.
    monkeypatch.setattr(doctor, "DISCOVERY_HOSTS", (hanging_host,) * 6)
    started = time.monotonic()
    code = main(["check"])
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.count(f"{hanging_host}: no connection within 1 s") == 6, out
    assert elapsed < 3.0, f"check took {elapsed:.1f} s to fail"


async def test_unreachable(simulator: Simulator, free_port: Callable[[], int]) -> None:
    # What `serve` would print at start-up when LM Studio does not answer.
    assert await doctor.unreachable(LMStudioConfig(), [simulator.host_port]) is None
    host = f"127.0.0.1:{free_port()}"
    problem = await doctor.unreachable(LMStudioConfig(), [host])
    assert problem is not None
    assert problem.message == f"LM Studio does not answer at {host}."
    assert "lmstudio-proxy serve --simulate" in problem.fix


async def test_unreachable_discovery_is_quick(hanging_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "DISCOVERY_HOSTS", (hanging_host,) * 6)
    started = time.monotonic()
    problem = await doctor.unreachable(LMStudioConfig(), None)
    assert problem is not None and problem.detail.count("no connection within 1 s") == 6
    assert time.monotonic() - started < 3.0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_load_progress_on_a_terminal() -> None:
    stream = _Terminal()
    progress = LoadProgress("m", stream)
    for step in (0.0, 0.5, 1.0):
        progress(step)
    progress.finish()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[1] == "loading m [" + "#" * 15 + "-" * 15 + "]  50%"
    assert frames[2] == "loading m [" + "#" * 30 + "] 100%\n"


def test_load_progress_as_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    progress = LoadProgress("m", stream)
    with caplog.at_level(logging.INFO, logger="proxy.serve"):
        for i in range(11):
            progress(i / 10)
        progress.finish()
    assert stream.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == [f"loading model 'm': {p}%" for p in (25, 50, 75)]


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", "serve", *args]


async def test_serve_preload(
    tmp_path: Path, simulator_factory: Callable[..., Simulator], free_port: Callable[[], int]
) -> None:
    sim = simulator_factory(load_seconds=0.5)
    assert {m["key"]: m["loaded"] for m in sim.models()}["simulated-large"] is False
    command = serve_command(
        "--preload", "simulated-large", "--lmstudio", sim.host_port,
        "--port", str(free_port()), "--database", str(tmp_path / "proxy.sqlite3"),
    )  # fmt: skip
    # stderr into stdout: the log lines and the banner arrive in the order they were written.
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while not lines or "lmstudio-proxy listening on" not in lines[-1]:
                line = (await proc.stdout.readline()).decode()
                assert line, f"serve exited before its banner: {lines}"
                lines.append(line)
        log = "".join(lines)
        assert "loading model 'simulated-large'\n" in log
        assert "loading model 'simulated-large': 50%" in log  # not a TTY: plain log lines, no \r bar
        assert "loaded model 'simulated-large' in" in log
        assert "\r" not in log
        assert {m["key"]: m["loaded"] for m in sim.models()}["simulated-large"] is True
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            await proc.communicate()
    assert proc.returncode == 0  # a graceful stop on SIGTERM exits 0


def test_serve_on_a_taken_port_says_so(tmp_path: Path, simulator: Simulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = serve_command(
            "--lmstudio", simulator.host_port, "--port", str(port), "--database", str(tmp_path / "proxy.sqlite3")
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr and "listening on" not in done.stdout


def test_serve_preload_unknown_model(tmp_path: Path, simulator: Simulator, free_port: Callable[[], int]) -> None:
    command = serve_command(
        "--preload", "nosuch", "--lmstudio", simulator.host_port,
        "--port", str(free_port()), "--database", str(tmp_path / "proxy.sqlite3"),
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    assert result.stdout == ""  # no banner: it never started serving
    assert (
        "lmstudio-proxy: cannot preload 'nosuch': Model 'nosuch' not found. Available: simulated-llm" in result.stderr
    )


def test_serve_preload_lmstudio_down(tmp_path: Path, free_port: Callable[[], int]) -> None:
    command = serve_command(
        "--preload", "simulated-llm", "--lmstudio", f"127.0.0.1:{free_port()}",
        "--port", str(free_port()), "--database", str(tmp_path / "proxy.sqlite3"),
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot preload 'simulated-llm': LM Studio is not reachable" in result.stderr
    assert "--simulate" in result.stderr


def test_serve_says_at_once_when_lmstudio_does_not_answer(tmp_path: Path, free_port: Callable[[], int]) -> None:
    nothing = free_port()  # nobody listens there
    command = serve_command(
        "--lmstudio", f"127.0.0.1:{nothing}", "--port", str(free_port()), "--database", str(tmp_path / "p.sqlite3"),
    )  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            banner = "".join(proc.stdout.readline() for _ in range(2))
            assert "listening on" in banner and "does not answer yet" in banner, banner
            warning = proc.stderr.readline()
            assert "warning" in warning and f"127.0.0.1:{nothing}" in warning, warning
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0


def test_check_shows_a_postgresql_database_without_its_password(
    tmp_path: Path, simulator: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, '[database]\npath = "postgresql://proxy:s3cret@db.lan:5433/threads"\n')
    main(["check", "--config", path, "--lmstudio", simulator.host_port])
    out = capsys.readouterr().out
    assert "database:    postgresql://proxy:***@db.lan:5433/threads" in out and "s3cret" not in out


def test_serve_on_an_unreachable_postgresql_is_one_line(simulator: Simulator, free_port: Callable[[], int]) -> None:
    nothing = free_port()  # no PostgreSQL listens there
    url = f"postgresql://proxy:s3cret@127.0.0.1:{nothing}/threads"
    command = serve_command("--lmstudio", simulator.host_port, "--port", str(free_port()), "--database", url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        f"lmstudio-proxy: cannot use the database postgresql://proxy:***@127.0.0.1:{nothing}/threads"
    )
    assert "s3cret" not in done.stderr and "listening on" not in done.stdout


def test_check_several_hosts_one_down(
    simulator_factory: Callable[..., Simulator], free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]
) -> None:
    a = simulator_factory(models=["on-a"])
    b = simulator_factory(models=["on-b:downloaded"])
    dead = f"127.0.0.1:{free_port()}"
    code = main(["check", "--lmstudio", f"{a.host_port},{b.host_port},{dead}"])
    out = capsys.readouterr().out
    assert code == 0, out  # the proxy works: the hosts that answer have models
    assert "LM Studio:   3 hosts, 2 answer\n" in out
    assert f"  {a.host_port} — answers (connected to {a.host_port}); loaded: on-a; downloaded: none" in out
    assert f"  {b.host_port} — answers (connected to {b.host_port}); loaded: none; downloaded: on-b" in out
    assert f"  {dead} — does not answer" in out
    assert f"warning: LM Studio host {dead} does not answer" in out
    assert "loaded:      on-a (" in out and "downloaded:  on-b (" in out  # the union


def test_check_simulate_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--simulate", "2"]) == 0
    out = capsys.readouterr().out
    assert "LM Studio:   2 hosts, 2 answer" in out and out.count("; the built-in simulator)") == 2, out


@pytest.mark.parametrize("value", ["0", "x", "17"])
def test_simulate_count_is_checked(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--simulate", value])
    assert "the number of simulators must be 1 to 16" in capsys.readouterr().err


def test_serve_simulate_two(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    command = serve_command("--simulate", "2", "--port", str(port), "--database", str(tmp_path / "p.sqlite3"))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            banner = "".join(proc.stdout.readline() for _ in range(2))
            assert "listening on" in banner and "(built-in simulators)" in banner, banner
            lm_line = banner.splitlines()[1]
            assert lm_line.count("127.0.0.1:") == 2, lm_line

            deadline = time.monotonic() + TIMEOUT
            while True:  # polls until uvicorn answers (it binds right after the banner)
                try:
                    body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the proxy never answered"
            hosts = body["lmstudio"]["hosts"]
            assert len(hosts) == 2 and all(h["state"] == "up" for h in hosts), hosts
            assert len({h["host"] for h in hosts}) == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
