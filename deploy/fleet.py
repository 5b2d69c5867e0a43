"""One MQTT connection to a site, for the fleet commands: it follows the retained (and live)
``status``, ``model/reported`` and ``model/desired`` of every device of the site, and publishes
retained desired states.

What the deploy role of the shipped ACL may read and write (deploy/mosquitto/make-acl.sh): read
``+/status`` and ``+/model/reported``, read and write ``+/model/desired``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Optional

from contract.base import ContractError
from contract.messages import ModelReported, Status
from contract.topics import parse_topic
from mqttconn.client import connect_kwargs, make_client
from mqttconn.config import BrokerConfig

log = logging.getLogger(__name__)

__all__ = ["FleetLink", "LinkError"]

_HISTORY = 64  # model/reported messages kept per device


class LinkError(RuntimeError):
    """The broker could not be reached, refused us, or did not acknowledge a publish."""


class FleetLink:
    """Latest ``status`` and desired payload per device, and its ``model/reported`` history since
    :meth:`start` (the retained one first). Thread-safe; :meth:`wait` sleeps until a message."""

    def __init__(self, cfg: BrokerConfig, site: str) -> None:
        self.cfg = cfg
        self.site = site
        self.root = f"{cfg.prefix}/{site}"
        self._cond = threading.Condition()
        self._status: dict[str, Optional[Status]] = {}
        self._reports: dict[str, list[ModelReported]] = {}
        self._desired: dict[str, bytes] = {}
        self._seen: set[str] = set()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: Optional[str] = None
        self._client: Any = None

    # -- connection ----------------------------------------------------------------------------
    def start(self, settle_s: float = 1.0) -> None:
        """Connect, subscribe, and wait ``settle_s`` for the retained messages to arrive."""
        client = make_client(self.cfg, f"binwatch-deploy-{secrets.token_hex(4)}", reconnect=True)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._on_message
        client.on_disconnect = lambda *a: self._connected.clear()
        self._client = client
        try:
            client.connect(**connect_kwargs(self.cfg))
        except (OSError, ValueError) as e:
            raise LinkError(f"cannot connect to {self.cfg.broker}: {e}") from e
        client.loop_start()
        wait = self.cfg.connect_timeout_s + 1
        if not self._subscribed.wait(wait):
            self.stop()
            why = self._refused or f"no answer within {wait:g} s"
            raise LinkError(f"cannot connect to {self.cfg.broker}: {why}")
        time.sleep(settle_s)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = f"the broker refused the connection ({reason})"
            client.disconnect()
            return
        self._connected.set()
        leaves = ("status", "model/reported", "model/desired")
        client.subscribe([(f"{self.root}/+/{leaf}", 1) for leaf in leaves])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            info = parse_topic(msg.topic, self.cfg.prefix)
        except ValueError:
            return
        device, payload = info.device or "", bytes(msg.payload)
        with self._cond:
            self._seen.add(device)
            if info.kind == "model_desired":
                if payload:
                    self._desired[device] = payload
                else:
                    self._desired.pop(device, None)
            elif info.kind == "status":
                self._status[device] = _parse(Status, payload, msg.topic)
            elif info.kind == "model_reported":
                report = _parse(ModelReported, payload, msg.topic)
                if report is not None:
                    history = self._reports.setdefault(device, [])
                    history.append(report)
                    del history[:-_HISTORY]
            self._cond.notify_all()

    # -- what the site says ----------------------------------------------------------------------
    def devices(self) -> list[str]:
        """Every device that has a status, reported or desired message, sorted."""
        with self._cond:
            return sorted(self._seen)

    def status(self, device: str) -> Optional[Status]:
        with self._cond:
            return self._status.get(device)

    def reports(self, device: str) -> list[ModelReported]:
        with self._cond:
            return list(self._reports.get(device, ()))

    def desired(self, device: str) -> Optional[bytes]:
        """The device's desired payload now (retained or just published); None when there is none."""
        with self._cond:
            return self._desired.get(device)

    def wait(self, timeout: float) -> None:
        """Sleep until the next message arrives or ``timeout`` passes."""
        with self._cond:
            self._cond.wait(timeout)

    # -- writing -----------------------------------------------------------------------------------
    def publish_desired(self, device: str, payload: bytes, timeout: float = 10.0) -> None:
        """Publish ``payload`` retained (QoS 1) on the device's desired topic (empty: clear it) and
        wait for the broker's acknowledgement."""
        topic = f"{self.root}/{device}/model/desired"
        try:
            info = self._client.publish(topic, payload, qos=1, retain=True)
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            raise LinkError(f"cannot publish to {topic}: {e}") from e
        if not info.is_published():
            raise LinkError(f"the broker did not acknowledge {topic} within {timeout:g} s")
        with self._cond:
            if payload:
                self._desired[device] = payload
            else:
                self._desired.pop(device, None)
        log.info("published %d bytes to %s", len(payload), topic)


def _parse(model: Any, payload: bytes, topic: str) -> Any:
    if not payload:
        return None
    try:
        return model.parse(payload)
    except ContractError as e:
        log.warning("ignored an unreadable message on %s: %s", topic, e)
        return None
