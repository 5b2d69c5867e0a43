"""The web console's configuration (``binwatch console serve``, docs/console.md, "Configuration").

One YAML file (optional) with a section per concern, each a small pydantic model that refuses
unknown keys; command-line flags win over the file. Secrets never need to be in the file:

- the MQTT password: ``mqtt.password_file``, or the environment variable
  ``BINWATCH_CONSOLE_MQTT_PASSWORD`` (sets ``mqtt.password``; mqttconn's ``BrokerConfig``);
- a database URL with a password in it (PostgreSQL): ``BINWATCH_CONSOLE_DB``;
- the key that signs session cookies: a file (``web.secret_file``, created with mode 0600 in the data
  folder when missing), so that a restart keeps people logged in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contract.fields import check_id
from mqttconn.config import BrokerConfig

log = logging.getLogger(__name__)

__all__ = [
    "ENV_DB",
    "ENV_MQTT_PASSWORD",
    "ConfigError",
    "ConsoleConfig",
    "StoreConfig",
    "WebConfig",
    "default_data_dir",
    "load_config",
]

ENV_MQTT_PASSWORD = "BINWATCH_CONSOLE_MQTT_PASSWORD"
ENV_DB = "BINWATCH_CONSOLE_DB"
ENV_DATA_DIR = "BINWATCH_CONSOLE_DATA_DIR"


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def default_data_dir() -> Path:
    """``$BINWATCH_CONSOLE_DATA_DIR``, else ``$XDG_DATA_HOME/binwatch-console`` (``~/.local/share/...``)."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "binwatch-console"


class WebConfig(_Section):
    """Where the web pages are served and how sessions work."""

    host: str = Field(default="127.0.0.1", description="address to bind; 0.0.0.0 opens it to the network")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port)")
    secret_file: Optional[Path] = Field(
        default=None, description="key that signs session cookies; default <data_dir>/session.key"
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="a login lapses after this many hours without use"
    )
    https_only: bool = Field(
        default=False, description="mark the session cookie Secure (set when a TLS proxy fronts the console)"
    )


class StoreConfig(_Section):
    """Where alerts, reviews and snapshots are kept."""

    db: Optional[str] = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/console.db"
    )
    images: Optional[str] = Field(
        default=None, description="snapshot folder or s3://bucket/prefix; default <data_dir>/images"
    )


class ConsoleConfig(_Section):
    """The whole ``console serve`` configuration."""

    data_dir: Path = Field(default_factory=default_data_dir, description="database, images, session key")
    sites: list[str] = Field(default_factory=list, description="sites to follow; empty: every site")
    mqtt: BrokerConfig = Field(default_factory=lambda: BrokerConfig(client_id="binwatch-console"))
    web: WebConfig = Field(default_factory=WebConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("sites")
    @classmethod
    def _check_sites(cls, v: list[str]) -> list[str]:
        for site in v:
            check_id(site, "site")
        return list(dict.fromkeys(v))

    @property
    def db_url(self) -> str:
        return self.store.db or f"sqlite:///{(self.data_dir / 'console.db').resolve()}"

    @property
    def images(self) -> str:
        return self.store.images or str(self.data_dir / "images")

    @property
    def secret_file(self) -> Path:
        return self.web.secret_file or self.data_dir / "session.key"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(e: ValidationError, where: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        msg = "unknown key (not a console setting)" if err.get("type") == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return f"{where}: " + "; ".join(parts)


def load_config(
    path: Optional[Path] = None,
    overrides: Optional[Mapping[str, Any]] = None,
    env: Optional[Mapping[str, str]] = None,
) -> ConsoleConfig:
    """Defaults < YAML file < environment (``BINWATCH_CONSOLE_MQTT_PASSWORD``,
    ``BINWATCH_CONSOLE_DB``) < ``overrides`` (the command-line flags, nested like the file).
    Raises :class:`ConfigError` naming the file and each bad key."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    where = "options"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (mqtt:, web:, ...)")
        data = loaded or {}
    if env.get(ENV_MQTT_PASSWORD):
        data = _merge(data, {"mqtt": {"password": env[ENV_MQTT_PASSWORD]}})
    if env.get(ENV_DB):
        data = _merge(data, {"store": {"db": env[ENV_DB]}})
    data = _merge(data, overrides or {})
    data.setdefault("mqtt", {})
    if isinstance(data["mqtt"], dict):
        data["mqtt"].setdefault("client_id", "binwatch-console")
    try:
        return ConsoleConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, where)) from e
