"""Connection settings every MQTT client of binwatch shares (the agent on the device and the
operator-side tools): the broker URL, protocol, TLS material, credentials and the topic prefix.

Secrets: ``password`` may come inline (prefer an environment override) or from ``password_file``
(one line, trailing newline stripped; read at connect time, so rotation needs no restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = ["BrokerAddress", "BrokerConfig", "TlsConfig", "parse_broker_url"]

_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BrokerAddress(_Section):
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` (plain, 1883) or ``mqtts://host[:port]`` (TLS, 8883)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"broker URL {url!r} must start with mqtt:// or mqtts:// (e.g. mqtt://127.0.0.1:1883)"
        )
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host (e.g. mqtt://broker.local:1883)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} must be scheme://host:port, without a path or query")
    if parts.username or parts.password:
        raise ValueError(f"broker URL {url!r} must not carry credentials; set mqtt.username / password")
    default_port, tls = _SCHEMES[scheme]
    try:
        port = parts.port or default_port
    except ValueError as e:
        raise ValueError(f"broker URL {url!r} has an invalid port") from e
    return BrokerAddress(host=parts.hostname, port=port, tls=tls)


class TlsConfig(_Section):
    """TLS material. With ``mqtts://`` and no ``ca`` the system trust store is used."""

    ca: Optional[Path] = Field(default=None, description="CA certificate (PEM) that signed the broker's cert")
    cert: Optional[Path] = Field(default=None, description="client certificate (PEM) for mutual TLS")
    key: Optional[Path] = Field(default=None, description="private key (PEM) of the client certificate")
    insecure: bool = Field(
        default=False, description="skip the broker hostname check (testing only; never in production)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: set both for mutual TLS, or neither")
        return self

    @property
    def configured(self) -> bool:
        return self.ca is not None or self.cert is not None


class BrokerConfig(_Section):
    """How a binwatch client reaches its broker: address, protocol, TLS, credentials, topic prefix.
    The agent's ``mqtt:`` section extends it (``agent.delivery.config.MqttConfig``); ``alerts watch``
    and the other operator-side tools use it as is."""

    broker: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port")
    client_id: Optional[str] = Field(default=None, description="MQTT client id; default: the device id")
    protocol: Literal["3.1.1", "5"] = Field(
        default="5", description="MQTT protocol version: 5 reports a refused publish; 3.1.1 loses it silently"
    )
    keepalive: int = Field(default=30, ge=5, le=65535, description="seconds between keep-alive pings")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="seconds to wait for CONNACK")
    tls: TlsConfig = Field(default_factory=TlsConfig)
    username: Optional[str] = None
    password: Optional[SecretStr] = Field(default=None, description="prefer password_file or the env")
    password_file: Optional[Path] = Field(default=None, description="file holding the password")
    reconnect_min_delay: float = Field(default=1.0, gt=0, description="first reconnect delay (s)")
    reconnect_max_delay: float = Field(default=30.0, gt=0, description="reconnect delay cap (s)")
    prefix: str = Field(
        default="binwatch/v1", description="topic prefix; the root is <prefix>/<site>/<device>"
    )

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, v: str) -> str:
        parse_broker_url(v)
        return v.strip()

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        v = v.strip().strip("/")
        if not v or any(c in v for c in "+#") or "//" in v:
            raise ValueError("prefix must be a non-empty topic path without + # or empty levels")
        return v

    @field_validator("client_id")
    @classmethod
    def _check_client_id(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v or any(c in v for c in "+#/")):
            raise ValueError("client_id must be non-empty and free of + # /")
        return v

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set mqtt.password or mqtt.password_file, not both")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be >= reconnect_min_delay")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username (mqtt.username)")
        return self

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    def resolve_password(self) -> Optional[str]:
        """The password from ``password`` or ``password_file`` (read now, so rotation needs no restart)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise ValueError(f"cannot read mqtt.password_file {self.password_file}: {e}") from e
        return None
