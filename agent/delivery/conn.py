"""One paho MQTT connection of the agent's link: the state paho's network thread writes while the
connection lives (CONNACK, loss, PUBACKs), and the primitives the link's publisher thread uses on it
(send, close, abort). The client itself (protocol, TLS, credentials) comes from
:func:`mqttconn.client.make_client`, which the operator-side tools share.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from mqttconn.client import connect_kwargs
from mqttconn.config import BrokerConfig

__all__ = ["Conn", "abort", "send", "with_311_fallback"]

log = logging.getLogger(__name__)

# CONNACK codes for "this broker does not speak that protocol version": MQTT 5's 0x84 (also what
# paho reports when a 3.1.1-only broker answers an MQTT 5 CONNECT), and 3.1.1's return code 1
_NO_SUCH_PROTOCOL = (0x84, 1)


@dataclass
class Conn:
    """State of one connection. paho's network thread writes it (``on_*``) under ``cond`` and calls
    ``wake`` (with ``cond`` held) so that the publisher thread waiting on ``cond`` looks at it."""

    client: mqtt.Client
    session: int
    cond: threading.Condition
    wake: Callable[[], None]
    connack: Optional[Any] = None  # ReasonCode once CONNACK arrived
    lost: bool = False
    lost_reason: str = ""
    connected_since: float = 0.0  # time.time() at CONNACK
    backlog_id: int = 0  # rows with id <= this were stored before the connection: replays
    acked: dict[int, Any] = field(default_factory=dict)  # mid -> reason code (from on_publish)
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> outbox row id
    alert_mids: set[int] = field(default_factory=set)
    historical_mids: set[int] = field(default_factory=set)
    last_sent_id: int = 0

    def configure(self, will: tuple[str, bytes], max_inflight: int, on_message: Callable[..., None]) -> None:
        """Before CONNECT: the last will (retained, QoS 1), the in-flight window, no queueing while
        offline, and paho's callbacks (CONNACK, loss and PUBACK to this object)."""
        client = self.client
        client.user_data_set(self)
        client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.manual_ack_set(True)  # inbound QoS 1 is acknowledged after it was handled (inbox)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_publish = self.on_publish
        client.on_subscribe = self.on_subscribe
        client.on_message = on_message

    # -- paho callbacks (network thread) ---------------------------------------------------------
    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self.cond:
            self.connack = rc
            if rc.is_failure:
                self.lost = True
                self.lost_reason = f"broker refused the connection: {rc}"
            self.wake()

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self.cond:
            if not self.lost:
                self.lost = True
                self.lost_reason = f"connection lost: {rc}"
            self.wake()

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            log.error(
                "the broker refused subscriptions (%s): check its ACL for this device", ", ".join(refused)
            )
        else:
            log.info("subscribed to %d topic(s)", len(codes))

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self.cond:
            self.acked[mid] = rc
            self.wake()

    # -- publisher thread ------------------------------------------------------------------------
    @property
    def unsupported_protocol(self) -> bool:
        """The broker refused the connection because it does not speak this MQTT version."""
        return (
            self.connack is not None and self.connack.is_failure and self.connack.value in _NO_SUCH_PROTOCOL
        )

    def connect(self, cfg: BrokerConfig, *, loud: bool = True, **session: Any) -> bool:
        """Open the socket, send CONNECT (``session``: the keyword arguments of
        :func:`mqttconn.client.connect_kwargs`) and start paho's network loop; False (logged, at
        WARNING when ``loud``, else DEBUG) when the broker cannot be reached."""
        try:
            self.client.connect(**connect_kwargs(cfg, **session))
        except (OSError, ssl.SSLError, ValueError) as e:
            log.log(
                logging.WARNING if loud else logging.DEBUG,
                "cannot reach MQTT broker %s (%s); retrying with backoff, alerts are kept in the outbox",
                cfg.broker,
                e,
            )
            return False
        self.client.loop_start()
        return True

    def wait_connack(self, cfg: BrokerConfig, stopping: Callable[[], bool]) -> bool:
        """Wait up to ``cfg.connect_timeout_s`` for CONNACK; True when the broker accepted the
        connection, else False with the cause logged."""
        deadline = time.monotonic() + cfg.connect_timeout_s
        with self.cond:
            while self.connack is None and not self.lost and not stopping():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            ok = self.connack is not None and not self.connack.is_failure and not self.lost
        if not ok:
            why = self.lost_reason or f"no CONNACK within {cfg.connect_timeout_s:.0f} s"
            if self.unsupported_protocol:
                log.warning(
                    "MQTT broker %s does not speak MQTT %s: %s", cfg.broker, cfg.protocol, self.connack
                )
            elif self.connack is not None and self.connack.is_failure:
                log.error(
                    "MQTT broker %s refused the connection: %s (check mqtt.username/password/tls)",
                    cfg.broker,
                    self.connack,
                )
            else:
                addr = cfg.address
                log.warning("MQTT connect to %s:%d failed: %s", addr.host, addr.port, why)
        return ok

    def publish_acked(self, topic: str, payload: bytes, timeout: float) -> Optional[bool]:
        """Publish retained at QoS 1 and wait up to ``timeout`` s for the PUBACK: True when it
        came, False when it did not in time, None when the connection is gone."""
        mid = send(self, topic, payload, 1, True)
        if mid is None:
            return None
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.acked and not self.lost:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True if mid in self.acked else None

    def close(self) -> None:
        """DISCONNECT (the broker discards the will) unless the connection is lost, in which case
        the socket is closed without one; then stop paho's network loop."""
        if not self.lost:
            with contextlib.suppress(Exception):
                self.client.disconnect()
        else:
            abort(self.client)
        with contextlib.suppress(Exception):
            self.client.loop_stop()
        # break the client <-> callbacks cycle, so that the client is freed (and paho closes its
        # wake-up socket pair) now rather than at some later garbage collection: without this the
        # agent held two more sockets after every reconnect (found by bench/soak.py)
        client = self.client
        client.on_connect = client.on_disconnect = client.on_publish = client.on_message = None
        client.on_subscribe = None
        client.user_data_set(None)


Cfg = TypeVar("Cfg", bound=BrokerConfig)


def with_311_fallback(
    conn: Optional[Conn], cfg: Cfg, open_conn: Callable[[Cfg], Optional[Conn]]
) -> tuple[Optional[Conn], Cfg]:
    """After an MQTT 5 attempt that the broker refused as an unknown protocol, or dropped before any
    CONNACK (amqtt, the embedded demo broker, does either): try 3.1.1 once. Returns the connection
    to use and the settings to keep (3.1.1 only when that worked, with a warning)."""
    if cfg.protocol != "5" or conn is None or not (conn.unsupported_protocol or conn.connack is None):
        return conn, cfg
    older = cfg.model_copy(update={"protocol": "3.1.1"})
    conn = open_conn(older)
    if conn is None or conn.connack is None or conn.connack.is_failure:
        return conn, cfg
    log.warning(
        "broker %s speaks only MQTT 3.1.1: using it. Under 3.1.1 a publish the broker refuses "
        "(an ACL denial) is acknowledged and lost; use an MQTT 5 broker in production",
        cfg.broker,
    )
    return conn, older


def send(conn: Conn, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
    """Publish on ``conn``; the message id, or None (and ``conn`` marked lost) when paho refuses."""
    info = conn.client.publish(topic, payload, qos=qos, retain=retain)
    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        conn.lost = True
        conn.lost_reason = conn.lost_reason or f"publish failed: {mqtt.error_string(info.rc)}"
        return None
    return info.mid


def abort(client: mqtt.Client) -> None:
    """Close the socket without a DISCONNECT (the broker then publishes the will)."""
    sock = client.socket()
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
