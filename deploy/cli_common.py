"""What the fleet commands (``push``, ``rollback``, ``status``) share: the broker options (as
``binwatch alerts watch`` has them), the connection settings built from them, and connecting.

Only typer and the stdlib at module level; the contract, mqttconn and paho are imported inside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from binwatch.cliutil import fail, missing_extra

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_PREFIX = "binwatch/v1"

Broker = Annotated[
    Optional[str],
    typer.Option(
        "--broker",
        envvar=["BINWATCH_MQTT_BROKER", "BINWATCH_BROKER"],  # the second: deprecated (mqttconn.env)
        help=f"mqtt://host:port or mqtts://host:port (default: {DEFAULT_BROKER}; on resume and "
        "rollback: the one in the state file)",
        show_default=False,
    ),
]
Prefix = Annotated[
    Optional[str], typer.Option("--prefix", help=f"topic prefix the agents use (default: {DEFAULT_PREFIX})")
]
Username = Annotated[Optional[str], typer.Option("--username", envvar="BINWATCH_MQTT_USERNAME")]
Password = Annotated[
    Optional[str],
    typer.Option("--password", envvar="BINWATCH_MQTT_PASSWORD", help="prefer the environment variable"),
]
Ca = Annotated[Optional[Path], typer.Option("--ca", help="CA certificate (PEM) for mqtts://")]
Cert = Annotated[Optional[Path], typer.Option("--cert", help="client certificate (PEM)")]
Key = Annotated[Optional[Path], typer.Option("--key", help="client key (PEM)")]
Wait = Annotated[
    float, typer.Option("--wait", min=0.0, help="seconds to collect the retained messages after subscribing")
]


def broker_config(
    broker: Optional[str],
    prefix: Optional[str],
    username: Optional[str],
    password: Optional[str],
    ca: Optional[Path],
    cert: Optional[Path],
    key: Optional[Path],
) -> Any:
    """A ``mqttconn.config.BrokerConfig``; a bad option exits 2 naming it."""
    from pydantic import ValidationError

    from mqttconn.config import BrokerConfig
    from mqttconn.env import warn_renamed

    warn_renamed()
    tls = {k: v for k, v in {"ca": ca, "cert": cert, "key": key}.items() if v is not None}
    try:
        return BrokerConfig(
            broker=broker or DEFAULT_BROKER,
            prefix=prefix or DEFAULT_PREFIX,
            username=username,
            password=password,
            tls=tls,
        )
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise fail(f"{where}: {first.get('msg')}", 2) from e


def check_site(site: str, prefix: str) -> str:
    from contract.topics import Topics

    try:
        Topics(site, "probe", prefix)
    except ValueError as e:
        raise fail(f"--site: {e}", 2) from e
    return site


def connect(cfg: Any, site: str, wait: float) -> Any:
    """A started :class:`deploy.fleet.FleetLink`; exit 1 when the broker cannot be reached."""
    try:
        from deploy.fleet import FleetLink, LinkError
    except ImportError as e:
        if (e.name or "").split(".")[0] != "paho":
            raise
        raise missing_extra(e, "deploy") from e
    link = FleetLink(cfg, site)
    try:
        link.start(settle_s=wait)
    except LinkError as e:
        raise fail(f"{e} (is the broker running? check --broker and the credentials)", 1) from e
    return link
