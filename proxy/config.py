"""Configuration: a TOML file checked key by key against typed dataclasses."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError

ENV_VAR = "LMSTUDIO_PROXY_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    allow_open: bool = False
    keep_alive_seconds: int = 75
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 0


@dataclass(frozen=True)
class LMStudioConfig:
    host: str = ""
    default_model: str = ""
    connect_timeout_seconds: float = 5.0
    load_timeout_seconds: float = 300.0
    fragment_timeout_seconds: float = 120.0


@dataclass(frozen=True)
class ModelsConfig:
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = ""
    reserve_bytes: int = 4_194_304


@dataclass(frozen=True)
class AuthConfig:
    api_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CancelConfig:
    quick_edit_seconds: float = 5.0
    drain_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class StreamingConfig:
    heartbeat_seconds: float = 15.0


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True)
class CorsConfig:
    allow_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    lmstudio: LMStudioConfig = field(default_factory=LMStudioConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cancel: CancelConfig = field(default_factory=CancelConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = field(default=None, compare=False)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (used for CLI overrides)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(tp)[1])}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _check(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    ok: bool
    if origin is list:
        ok = isinstance(value, list)
        if ok:
            return [_check(v, typing.get_args(tp)[0], f"{where}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, dict)
        if ok:
            vt = typing.get_args(tp)[1]
            return {k: _check(v, vt, f"{where}.{k}", source) for k, v in value.items()}
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            return float(value)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        name = _type_name(tp)
        article = "an" if name[0] in "aeiou" else "a"
        raise ConfigError(f"{source}: key '{where}' must be {article} {name}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type[Any], data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{where}' (known keys here: {', '.join(sorted(known))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key '{where}' must be a table ([{where}])")
            kwargs[key] = _build(typing.cast(type[Any], tp), value, f"{where}.", source)
        else:
            kwargs[key] = _check(value, tp, where, source)
    return cls(**kwargs)


def parse(text: str, source: str = "<config>") -> Config:
    """Parse TOML text into a Config, or raise ConfigError naming the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    config: Config = _build(Config, data, "", source)
    config = dataclasses.replace(config, source=source)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks on values (not types) that would otherwise fail later and less clearly."""
    src = config.source or "<config>"
    if not 0 <= config.server.port <= 65535:
        raise ConfigError(f"{src}: key 'server.port' must be an integer between 0 and 65535")
    if config.server.keep_alive_seconds < 1:
        raise ConfigError(f"{src}: key 'server.keep_alive_seconds' must be an integer >= 1")
    if config.cancel.quick_edit_seconds < 0:
        raise ConfigError(f"{src}: key 'cancel.quick_edit_seconds' must be a number >= 0")
    for name in ("drain_timeout_seconds",):
        if getattr(config.cancel, name) <= 0:
            raise ConfigError(f"{src}: key 'cancel.{name}' must be a number > 0")
    if config.streaming.heartbeat_seconds <= 0:
        raise ConfigError(f"{src}: key 'streaming.heartbeat_seconds' must be a number > 0")
    if config.limits.max_body_bytes < 1:
        raise ConfigError(f"{src}: key 'limits.max_body_bytes' must be an integer >= 1")
    if config.logging.level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"{src}: key 'logging.level' must be one of debug, info, warning, error")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from PATH, else $LMSTUDIO_PROXY_CONFIG, else the defaults."""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    return parse(text, str(p))
