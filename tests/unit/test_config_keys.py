"""Configuration, key by key: defaults, every example key parses, and each mistake names file and key."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from proxy import config as config_module
from proxy.config import Config
from proxy.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def _leaf_keys() -> list[tuple[str, str, Any]]:
    """(section, key, type) of every key the config file may hold."""
    keys = []
    for section in dataclasses.fields(Config):
        if section.name == "source":
            continue
        section_cls = typing.get_type_hints(Config)[section.name]
        for name, tp in typing.get_type_hints(section_cls).items():
            # A closed set of words (logging.level) is still written as a TOML string.
            keys.append((section.name, name, str if typing.get_origin(tp) is typing.Literal else tp))
    return keys


KEYS = _leaf_keys()

# A valid value, other than the default, for each type; and values of the wrong type.
VALID: dict[Any, str] = {
    str: '"debug"',
    int: "8123",
    float: "2.5",
    bool: "true",
    list[str]: '["x", "y"]',
    dict[str, str]: '{ "ftg-3.0" = "qwen" }',
}
WRONG: dict[Any, list[str]] = {
    str: ["1", "true", '["a"]'],
    int: ['"8000"', "8000.5", "true"],
    float: ['"5"', "true", "[1.0]"],
    bool: ['"true"', "1"],
    list[str]: ['"a"', "[1]", '{ a = "b" }'],
    dict[str, str]: ['"a"', "{ a = 1 }", "[]"],
}


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return config_module.load(path)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_module.load(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config_module.ENV_VAR, raising=False)
    config = config_module.load()
    assert config == Config() and config.source is None
    assert (config.server.host, config.server.port, config.server.allow_open) == ("127.0.0.1", 8000, False)
    assert config.server.keep_alive_seconds == 75
    assert config.lmstudio.host == "" and config.lmstudio.default_model == ""
    assert config.models.aliases == {} and config.auth.api_keys == [] and config.cors.allow_origins == []
    assert config.cancel.quick_edit_seconds == 5.0 and config.cancel.drain_timeout_seconds == 0.5
    assert config.streaming.heartbeat_seconds == 15.0 and config.limits.max_body_bytes == 1_048_576
    assert config.logging.level == "info" and config.database.path == ""


def test_the_example_parses_to_the_defaults() -> None:
    loaded = config_module.load(EXAMPLE)
    assert loaded == Config() and loaded.source == str(EXAMPLE)


def test_every_key_of_the_example_parses_on_its_own(tmp_path: Path) -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    documented = {(s, k) for s, table in example.items() for k in table}
    assert documented == {(s, k) for s, k, _ in KEYS}
    for section, key, _ in KEYS:
        value = example[section][key]
        text = f"[{section}]\n{key} = {_toml(value)}\n"
        assert getattr(getattr(_load(tmp_path, text), section), key) == value, text


def test_the_commented_alias_example_parses(tmp_path: Path) -> None:
    line = next(x for x in EXAMPLE.read_text(encoding="utf-8").splitlines() if '"ftg-3.0" =' in x)
    config = _load(tmp_path, "[models.aliases]\n" + line.lstrip("# ") + "\n")
    assert config.models.aliases == {"ftg-3.0": "qwen2.5-7b-instruct"}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return str(value)


@pytest.mark.parametrize(("section", "key", "tp"), KEYS, ids=[f"{s}.{k}" for s, k, _ in KEYS])
def test_each_key_takes_a_value_of_its_type(tmp_path: Path, section: str, key: str, tp: Any) -> None:
    text = f"[{section}]\n{key} = {VALID[tp]}\n"
    if (section, key) == ("logging", "level"):
        text = f'[{section}]\n{key} = "warning"\n'
    value = getattr(getattr(_load(tmp_path, text), section), key)
    assert value != getattr(getattr(Config(), section), key)
    assert isinstance(value, typing.get_origin(tp) or tp)


def test_an_integer_is_a_number(tmp_path: Path) -> None:
    config = _load(tmp_path, "[cancel]\nquick_edit_seconds = 2\n")
    assert config.cancel.quick_edit_seconds == 2.0 and isinstance(config.cancel.quick_edit_seconds, float)


@pytest.mark.parametrize(
    ("section", "key", "wrong"),
    [(s, k, w) for s, k, tp in KEYS for w in WRONG[tp]],
    ids=[f"{s}.{k}={w}" for s, k, tp in KEYS for w in WRONG[tp]],
)
def test_a_wrong_type_names_the_key(tmp_path: Path, section: str, key: str, wrong: str) -> None:
    message = _error(tmp_path, f"[{section}]\n{key} = {wrong}\n")
    assert f"{section}.{key}" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nprot = 1\n", "server.prot"),
        ("[nope]\nx = 1\n", "nope"),
        ('[lmstudio]\nhost = "h:1"\n[lmstudio.extra]\n', "lmstudio.extra"),
        ("[models]\nalias = {}\n", "models.alias"),
        ('source = "x"\n', "source"),  # not a file key, though Config has the field
        ('[auth]\napi_keys = ["a", 2]\n', "auth.api_keys[1]"),
        ('[models.aliases]\nok = "m"\nbad = 3\n', "models.aliases.bad"),
        ("server = 3\n", "server"),
        ('logging = ["debug"]\n', "logging"),
    ],
)
def test_unknown_keys_and_sections_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in _error(tmp_path, text)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("server", "port", "-1"),
        ("server", "port", "65536"),
        ("server", "keep_alive_seconds", "0"),
        ("cancel", "quick_edit_seconds", "-0.5"),
        ("cancel", "drain_timeout_seconds", "0"),
        ("cancel", "drain_timeout_seconds", "-1"),
        ("streaming", "heartbeat_seconds", "0"),
        ("limits", "max_body_bytes", "0"),
        ("logging", "level", '"verbose"'),
    ],
)
def test_a_bad_value_names_the_key(tmp_path: Path, section: str, key: str, value: str) -> None:
    assert f"{section}.{key}" in _error(tmp_path, f"[{section}]\n{key} = {value}\n")


@pytest.mark.parametrize(("section", "key", "value"), [("server", "port", "0"), ("cancel", "quick_edit_seconds", "0")])
def test_edge_values_that_are_allowed(tmp_path: Path, section: str, key: str, value: str) -> None:
    assert getattr(getattr(_load(tmp_path, f"[{section}]\n{key} = {value}\n"), section), key) == 0


def test_logging_level_is_case_insensitive(tmp_path: Path) -> None:
    assert _load(tmp_path, '[logging]\nlevel = "DEBUG"\n').logging.level == "debug"


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    assert "TOML" in _error(tmp_path, "[server\n")


def test_an_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=str(missing)):
        config_module.load(missing)


def test_the_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[server]\nport = 9001\n")
    monkeypatch.setenv(config_module.ENV_VAR, str(path))
    config = config_module.load()
    assert config.server.port == 9001 and config.source == str(path)


@pytest.mark.parametrize("key", ["connect_timeout_seconds", "load_timeout_seconds", "fragment_timeout_seconds"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_non_positive_lmstudio_timeout_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    assert f"lmstudio.{key}" in _error(tmp_path, f"[lmstudio]\n{key} = {value}\n")
