"""Configuration: typed dataclasses, declared once; a TOML file is decoded and checked against them."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from proxy.errors import ConfigError

ENV_VAR = "LMSTUDIO_PROXY_CONFIG"
# Every section: exact types (a TOML string is not a number) and no unknown keys.
_STRICT = ConfigDict(strict=True, extra="forbid")


Seconds = Annotated[float, Field(gt=0)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True)
class ServerConfig:
    __pydantic_config__ = _STRICT
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    allow_open: bool = False
    keep_alive_seconds: Annotated[int, Field(ge=1)] = 75
    allowed_hosts: list[str] = field(default_factory=list)
    header_timeout_seconds: Seconds = 10.0
    body_timeout_seconds: Seconds = 30.0
    max_connections: Annotated[int, Field(ge=0)] = 0


@dataclass(frozen=True)
class LMStudioConfig:
    __pydantic_config__ = _STRICT
    host: str = ""  # one host; `hosts` for several (giving both is a config error)
    hosts: list[str] = field(default_factory=list)
    default_model: str = ""
    connect_timeout_seconds: Seconds = 5.0
    load_timeout_seconds: Seconds = 300.0
    fragment_timeout_seconds: Seconds = 120.0
    retry_max_seconds: Seconds = 30.0  # a host that stopped answering is tried again at most this far apart

    def host_list(self, source: str = "<config>") -> list[str]:
        """The configured hosts: `hosts`, or `host` as a one-host list (`[""]`: discover LM Studio)."""
        if self.host and self.hosts:
            raise ConfigError(
                f"{source}: keys 'lmstudio.host' and 'lmstudio.hosts' are both set: use 'lmstudio.hosts' only"
            )
        if not self.hosts:
            return [self.host]
        if any(not h.strip() for h in self.hosts):
            raise ConfigError(f"{source}: key 'lmstudio.hosts' has an empty host: each must be HOST:PORT")
        repeated = sorted({h for h in self.hosts if self.hosts.count(h) > 1})
        if repeated:
            raise ConfigError(f"{source}: key 'lmstudio.hosts' names {repeated[0]} more than once")
        return list(self.hosts)


@dataclass(frozen=True)
class ModelsConfig:
    __pydantic_config__ = _STRICT
    aliases: dict[str, str] = field(default_factory=dict)
    title_model: str = ""  # generateName's model (key or alias); empty: the default model


@dataclass(frozen=True)
class DatabaseConfig:
    __pydantic_config__ = _STRICT
    path: str = ""
    reserve_bytes: Annotated[int, Field(ge=0)] = 4_194_304


@dataclass(frozen=True)
class ReplicasConfig:
    """Several proxies on one PostgreSQL database (`proxy/replicas.py`); unused with SQLite."""

    __pydantic_config__ = _STRICT
    lease_seconds: Annotated[float, Field(ge=1)] = 10.0
    poll_seconds: Annotated[float, Field(gt=0, le=5)] = 0.25


@dataclass(frozen=True)
class AuthConfig:
    __pydantic_config__ = _STRICT
    api_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CancelConfig:
    __pydantic_config__ = _STRICT
    quick_edit_seconds: Annotated[float, Field(ge=0)] = 5.0
    drain_timeout_seconds: Seconds = 5.0


@dataclass(frozen=True)
class ToolsConfig:
    __pydantic_config__ = _STRICT
    max_rounds: Annotated[int, Field(ge=1)] = 8  # model rounds per response when the proxy runs tools
    call_timeout_seconds: Seconds = 60.0  # one MCP tool call; a cancel lets a running call finish within it
    mcp_connect_timeout_seconds: Seconds = 10.0  # connecting to an MCP server and listing its tools


@dataclass(frozen=True)
class StreamingConfig:
    __pydantic_config__ = _STRICT
    heartbeat_seconds: Seconds = 15.0


@dataclass(frozen=True)
class LimitsConfig:
    __pydantic_config__ = _STRICT
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    max_inputs: Annotated[int, Field(ge=1)] = 1000
    max_page_bytes: Annotated[int, Field(ge=1)] = 4_194_304


@dataclass(frozen=True)
class FilesConfig:
    __pydantic_config__ = _STRICT
    directory: str = ""
    max_file_bytes: Annotated[int, Field(ge=1)] = 20_971_520
    max_files_per_upload: Annotated[int, Field(ge=1)] = 10
    max_bytes_per_key: Annotated[int, Field(ge=0)] = 1_073_741_824
    download_url_seconds: Annotated[int, Field(ge=1)] = 3600
    upload_url_seconds: Annotated[int, Field(ge=1)] = 604_800


@dataclass(frozen=True)
class CorsConfig:
    __pydantic_config__ = _STRICT
    allow_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggingConfig:
    __pydantic_config__ = _STRICT
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"


@dataclass(frozen=True)
class Config:
    __pydantic_config__ = _STRICT
    server: ServerConfig = field(default_factory=ServerConfig)
    lmstudio: LMStudioConfig = field(default_factory=LMStudioConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    cancel: CancelConfig = field(default_factory=CancelConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = field(default=None, compare=False)

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (used for CLI overrides)."""
        return dataclasses.replace(self, **{section: dataclasses.replace(getattr(self, section), **changes)})


_KINDS = {
    "int_type": "an integer", "float_type": "a number", "bool_type": "a boolean", "string_type": "a string",
    "list_type": "a list", "dict_type": "a table", "dataclass_type": "a table",
}  # fmt: skip


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: ErrorDetails, source: str) -> str:
    loc = error["loc"]
    where = _where(loc)
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        section: Any = Config
        for part in loc[:-1]:
            section = typing.get_type_hints(section).get(str(part), section)
        known = ", ".join(f.name for f in dataclasses.fields(section) if f.name != "source")
        return f"{source}: unknown key '{where}' (known keys here: {known})"
    value = error.get("input")
    got = f", got {type(value).__name__} {value!r}" if not isinstance(value, dict) else ""
    if error["type"] in _KINDS:
        return f"{source}: key '{where}' must be {_KINDS[error['type']]}{got}"
    message = error["msg"].replace("Input should be", "must be")
    return f"{source}: key '{where}' {message}{got}"


_DECODER = TypeAdapter(Config)


def parse(text: str, source: str = "<config>") -> Config:
    """Parse TOML text into a Config, or raise ConfigError naming the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    if "source" in data:  # a field of Config, but the proxy's own note of where it was read from
        raise ConfigError(f"{source}: unknown key 'source'")
    try:
        # As JSON: strict types then still take a table for a section (TOML dates become strings).
        config = _DECODER.validate_json(json.dumps(data, default=str))
    except ValidationError as exc:
        raise ConfigError(_problem(exc.errors(include_url=False)[0], source)) from None
    config.lmstudio.host_list(source)  # both `host` and `hosts`, or a host twice: one line, at load
    return dataclasses.replace(config, source=source)


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
