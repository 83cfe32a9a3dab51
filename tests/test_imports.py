"""`import proxy` and the command line stay cheap: heavy modules load only when a command needs them."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import proxy
from proxy.cli import main

HEAVY = ("lmstudio", "starlette", "uvicorn", "httpx", "sse_starlette")


@pytest.mark.parametrize(
    "code",
    [
        "import proxy",
        "import proxy.cli",
        "import proxy.cli; proxy.cli._parser(['bench'])",  # `bench --help` and `bench --micro` parse this far
        "import proxy.cli; proxy.cli._parser(['--version'])",
    ],
)
def test_heavy_modules_stay_unimported(code: str) -> None:
    """A fresh interpreter: this one has long imported all of them."""
    probe = f"{code}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    imported = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert "proxy" in imported  # the probe ran
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    expected = importlib.metadata.version("lmstudio-proxy")
    assert proxy.__version__ == expected
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"lmstudio-proxy {expected}\n"


def test_public_names_resolve_lazily() -> None:
    from proxy import background

    assert proxy.BackgroundServer is background.BackgroundServer
    assert proxy.serve_in_background is background.serve_in_background
    assert set(proxy.__all__) <= set(dir(proxy))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = proxy.nope


@pytest.mark.parametrize(
    ("command", "option"),
    [("simulate", "--tokens-per-second"), ("serve", "--preload"), ("check", "--lmstudio"),
     ("models", "--config"), ("bench", "--micro")],
)  # fmt: skip
def test_each_command_gets_its_own_options(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lmstudio-proxy {command} ")
    assert option in out


def test_unknown_command_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
