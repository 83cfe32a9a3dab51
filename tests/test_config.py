"""Configuration: the example documents every key with its default; mistakes name file, key and type."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_module
from proxy.config import Config
from proxy.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def _keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys |= _keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _documented(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict) and key != "aliases":
            keys |= _documented(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_example_documents_every_key_with_its_default() -> None:
    parsed = config_module.load(EXAMPLE)
    assert dataclasses.replace(parsed, source=None) == Config()
    data = tomllib.loads(EXAMPLE.read_text())
    assert _documented(data) == _keys(Config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[nope]\n", "unknown key 'nope'"),
        ("[server]\nport = 'eighty'\n", "key 'server.port' must be an integer"),
        ("[cancel]\nquick_edit_seconds = true\n", "key 'cancel.quick_edit_seconds' must be a number"),
        ("[auth]\napi_keys = 'abc'\n", "key 'auth.api_keys' must be a list"),
        ("[auth]\napi_keys = [1]\n", "key 'auth.api_keys[0]' must be a string"),
        ("[models.aliases]\nx = 3\n", "key 'models.aliases.x' must be a string"),
        ("server = 3\n", "key 'server' must be a table"),
        ("[server\n", "not valid TOML"),
        ("[cancel]\ndrain_timeout_seconds = 0\n", "cancel.drain_timeout_seconds"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config_module.load(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_env_var_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cancel]\nquick_edit_seconds = 1.5\n[models.aliases]\n'ftg-3.0' = 'simulated-llm'\n")
    monkeypatch.setenv("LMSTUDIO_PROXY_CONFIG", str(path))
    loaded = config_module.load()
    assert loaded.cancel.quick_edit_seconds == 1.5 and loaded.models.aliases == {"ftg-3.0": "simulated-llm"}
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_module.load(tmp_path / "missing.toml")


def test_cli_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "server.port" in result.stderr and str(path) in result.stderr


def test_non_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--host", "0.0.0.0", "--database", str(tmp_path / "d.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--allow-open" in result.stderr and "auth.api_keys" in result.stderr
