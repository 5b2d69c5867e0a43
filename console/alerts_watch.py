"""Follow mismatch alerts on a broker: deduplicate by ``alert_id``, detect gaps in ``seq``.

:class:`AlertTracker` is the bookkeeping (no I/O); :class:`AlertWatcher` subscribes with paho and
feeds it. ``binwatch alerts watch`` (console/cli.py) renders what they report.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import paho.mqtt.client as mqtt

from contract.base import ContractError
from contract.fields import check_id
from contract.messages import Alert
from contract.topics import DEFAULT_PREFIX, check_prefix
from mqttconn.client import connect_kwargs, make_client
from mqttconn.config import BrokerConfig

__all__ = ["AlertTracker", "AlertWatcher", "Notice", "Seen", "alert_filter"]

log = logging.getLogger(__name__)


def alert_filter(prefix: str = DEFAULT_PREFIX, site: str = "+", device: str = "+") -> str:
    """``<prefix>/<site>/<device>/alert/mismatch``; ``+`` matches every site or device."""
    check_prefix(prefix)
    if site != "+":
        check_id(site, "site")
    if device != "+":
        check_id(device, "device")
    return f"{prefix}/{site}/{device}/alert/mismatch"


@dataclass(frozen=True)
class Notice:
    """Something worth a warning line: ``kind`` is gap | late | backwards | invalid | connection."""

    kind: str
    text: str
    device: str = ""
    missing: tuple[int, ...] = ()


@dataclass(frozen=True)
class Seen:
    """What :meth:`AlertTracker.add` made of one alert."""

    alert: Alert
    new: bool  # False: a duplicate alert_id (at-least-once delivery)
    notices: tuple[Notice, ...] = ()


@dataclass
class _Device:
    max_seq: int
    missing: set[int] = field(default_factory=set)


class AlertTracker:
    """Dedupe by ``alert_id`` (remembering the last ``max_ids``) and follow ``seq`` per device.

    The first alert of a device sets its baseline (the watcher may start mid-stream). A jump past
    ``max_seq + 1`` is a gap (the missing seqs are remembered, up to ``max_missing`` per device); a
    missing seq that arrives later closes its part of the gap; a new alert whose seq is at or below
    the highest seen and was not missing means the device's state was reset or a seq was reused.
    """

    def __init__(self, max_ids: int = 100_000, max_missing: int = 10_000) -> None:
        self.max_ids = max_ids
        self.max_missing = max_missing
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._devices: dict[str, _Device] = {}
        self.new = 0
        self.duplicates = 0
        self.gaps = 0  # missing seqs reported
        self.invalid = 0

    def missing(self, device: str) -> set[int]:
        d = self._devices.get(device)
        return set(d.missing) if d else set()

    def add(self, alert: Alert) -> Seen:
        key = f"{alert.site}/{alert.device}"
        if alert.alert_id in self._ids:
            # A duplicate may come back with a new seq (the agent re-sent it after a restart): that
            # seq was used, so record it as delivered before dropping the alert, or the next alert
            # would report a gap that never closes.
            self._ids.move_to_end(alert.alert_id)
            self.duplicates += 1
            return Seen(alert, new=False, notices=self._track(key, alert.seq, duplicate=True))
        self._ids[alert.alert_id] = None
        if len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)
        self.new += 1
        return Seen(alert, new=True, notices=self._track(key, alert.seq, duplicate=False))

    def _track(self, key: str, seq: int, duplicate: bool) -> tuple[Notice, ...]:
        dev = self._devices.get(key)
        if dev is None:
            self._devices[key] = _Device(max_seq=seq)
            return ()
        if seq > dev.max_seq + 1:
            return (self._gap(key, dev, seq),)
        if seq == dev.max_seq + 1:
            dev.max_seq = seq
            return ()
        if seq in dev.missing:
            dev.missing.discard(seq)
            if duplicate:  # the seq is covered by a re-sent alert: nothing was lost
                return ()
            return (Notice("late", f"seq {seq} from {key} arrived late (gap closed)", key),)
        if duplicate:  # a re-delivery with its old seq
            return ()
        text = (
            f"seq from {key} went back from {dev.max_seq} to {seq} with a new alert_id "
            "(device state reset, or a seq reused)"
        )
        dev.max_seq = seq
        dev.missing.clear()
        return (Notice("backwards", text, key),)

    def _gap(self, key: str, dev: _Device, seq: int) -> Notice:
        first, last = dev.max_seq + 1, seq - 1
        n = last - first + 1
        self.gaps += n
        span = str(first) if n == 1 else f"{first}..{last}"
        missing = tuple(range(first, last + 1))[: self.max_missing]
        room = self.max_missing - len(dev.missing)
        dev.missing.update(missing[: max(room, 0)])
        dev.max_seq = seq
        return Notice(
            "gap",
            f"gap in seq from {key}: {n} alert(s) missing (seq {span}) before seq {seq}",
            key,
            missing,
        )


Event = Union[Seen, Notice]


class AlertWatcher:
    """Subscribe (QoS 1, clean session, auto-reconnect) and queue :class:`Seen` / :class:`Notice` events.

    ``start()`` connects (raising ``OSError``/``ValueError`` with the cause when the broker cannot be
    reached) and returns; events then arrive on :attr:`events`; :attr:`ready` is set at each SUBACK.
    """

    def __init__(self, cfg: BrokerConfig, topic_filter: str, tracker: Optional[AlertTracker] = None) -> None:
        self.cfg = cfg
        self.topic_filter = topic_filter
        self.tracker = tracker or AlertTracker()
        self.events: queue.Queue[Event] = queue.Queue()
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._client: Optional[mqtt.Client] = None

    def start(self) -> None:
        client_id = f"binwatch-watch-{uuid.uuid4().hex[:12]}"
        client = make_client(self.cfg, client_id, clean=True, reconnect=True)
        client.reconnect_delay_set(
            int(max(1, self.cfg.reconnect_min_delay)), int(max(1, self.cfg.reconnect_max_delay))
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.connect(**connect_kwargs(self.cfg))
        self._client = client
        client.loop_start()

    def stop(self) -> None:
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
            self._client = None

    # paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.events.put(Notice("connection", f"broker refused the connection: {rc}"))
            return
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        if any(getattr(rc, "is_failure", False) for rc in rcs):
            self.events.put(Notice("connection", f"broker refused the subscription to {self.topic_filter}"))
            return
        self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.ready.clear()
        if self._client is not None:
            self.events.put(Notice("connection", f"disconnected from {self.cfg.broker} ({rc}); reconnecting"))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            alert = Alert.parse(bytes(message.payload))
        except ContractError as e:
            with self._lock:
                self.tracker.invalid += 1
            self.events.put(Notice("invalid", f"ignored a message on {message.topic}: {e}"))
            return
        with self._lock:
            seen = self.tracker.add(alert)
        self.events.put(seen)
