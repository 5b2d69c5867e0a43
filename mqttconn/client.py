"""The paho MQTT client every binwatch side opens: paho 2 (callback API v2) with the protocol, TLS and
credentials of a :class:`mqttconn.config.BrokerConfig`, and the ``connect`` arguments for it."""

from __future__ import annotations

import ssl
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttconn.config import BrokerConfig

__all__ = ["connect_kwargs", "make_client"]


def make_client(
    cfg: BrokerConfig, client_id: str, *, clean: bool = True, userdata: Any = None, reconnect: bool = False
) -> mqtt.Client:
    """A paho 2 client (callback API v2) with protocol, TLS and credentials from ``cfg``.

    No callbacks, no will, not connected. With ``reconnect=False`` (the link) paho's network loop
    ends when the connection drops and the caller owns reconnection; ``binwatch alerts watch`` lets
    paho reconnect.
    """
    v5 = cfg.protocol == "5"
    kwargs: dict[str, Any] = {
        "callback_api_version": CallbackAPIVersion.VERSION2,
        "client_id": client_id,
        "userdata": userdata,
        "protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        "reconnect_on_failure": reconnect,
    }
    if not v5:
        kwargs["clean_session"] = clean
    client = mqtt.Client(**kwargs)
    client.connect_timeout = cfg.connect_timeout_s
    address = cfg.address
    if address.tls or cfg.tls.configured:
        try:
            client.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError) as e:
            raise ValueError(
                f"cannot load the MQTT TLS files (tls.ca={cfg.tls.ca}, tls.cert={cfg.tls.cert}, "
                f"tls.key={cfg.tls.key}): {e}"
            ) from e
        if cfg.tls.insecure:
            client.tls_insecure_set(True)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.resolve_password())
    return client


def connect_kwargs(
    cfg: BrokerConfig,
    *,
    clean: bool = True,
    session_expiry_s: Optional[int] = None,
    receive_maximum: Optional[int] = None,
) -> dict[str, Any]:
    """Keyword arguments of ``client.connect`` for ``cfg`` (host, port, keepalive, clean start).

    MQTT 5 with ``clean=False`` resumes the session the broker kept (``session_expiry_s``, 0 =
    until the connection ends); ``receive_maximum`` caps the inbound QoS 1 messages the broker sends
    before they are acknowledged. Under 3.1.1 a kept session is chosen in :func:`make_client`
    (``clean=False``) and these properties do not exist.
    """
    address = cfg.address
    kwargs: dict[str, Any] = {"host": address.host, "port": address.port, "keepalive": cfg.keepalive}
    if cfg.protocol == "5":
        kwargs["clean_start"] = clean
        props = Properties(PacketTypes.CONNECT)
        if not clean and session_expiry_s:
            props.SessionExpiryInterval = int(session_expiry_s)
        if receive_maximum:
            props.ReceiveMaximum = int(receive_maximum)
        if not props.isEmpty():
            kwargs["properties"] = props
    return kwargs
