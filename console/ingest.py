"""Ingest: the console's MQTT subscriber. Alerts, snapshots, status, stats and model state of one
site (or all) go into the :class:`~console.store.ConsoleStore`; reviews go out on ``alert/review``.

Nothing is lost on a crash: the session is persistent (MQTT 5 ``clean_start=False`` with a session
expiry; 3.1.1 ``clean_session=False``) and a message is acknowledged only after the transaction that
stored it committed (paho's manual ack). paho's network thread only queues messages; one writer
thread stores them in batches (one commit for all that wait) and acknowledges them in order. A
malformed or hostile message is counted (``store.count_invalid(reason)``), logged (rate-limited)
and acknowledged, so it is never redelivered. Reviews (:meth:`Ingest.publish_review`) are marked
published on their PUBACK; after each connect ``store.unpublished_reviews()`` go out again.
See docs/console-storage.md.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import DBAPIError, OperationalError

from console.store import ALERT_ID_RE, SNAPSHOT_SHA256, ConsoleStore, StoreBatch
from contract.base import ContractError, utcnow
from contract.fields import check_id
from contract.messages import Alert, ModelReported, Stats, Status
from contract.reviews import Review
from contract.topics import Topics, parse_topic
from mqttconn.client import connect_kwargs, make_client
from mqttconn.config import BrokerConfig

__all__ = ["Ingest", "subscriptions"]

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]
_SUBTOPICS = ("alert/mismatch", "alert/snapshot/+", "status", "stats", "model/reported")
_DOCS: dict[str, type] = {"status": Status, "stats": Stats, "model_reported": ModelReported}


def subscriptions(prefix: str, sites: Optional[list[str]] = None) -> list[str]:
    """The topic filters of the console: every device of each site in ``sites`` (all: ``+``)."""
    for site in sites or []:
        check_id(site, "site")
    return [f"{prefix}/{site}/+/{sub}" for site in sites or ["+"] for sub in _SUBTOPICS]


@dataclass(frozen=True)
class _Msg:
    topic: str
    payload: bytes
    retain: bool
    mid: int
    qos: int
    received: datetime


class _Invalid(Exception):
    """``(reason, detail)``: a message to count (``store.count_invalid(reason)``) and drop."""


class _RateLog:
    """A warning per reason at most every ``every_s`` seconds, with how many were not logged."""

    every_s = 10.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -1e9) < self.every_s:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        quiet = self._quiet.pop(reason, 0)
        self._last[reason] = now
        more = f" ({quiet} more like it not logged)" if quiet else ""
        log.warning("ignored a message (%s): %s%s", reason, text, more)


_STOP, _RESEND = object(), object()


class Ingest:
    """See the module doc. ``start()`` returns at once; the connection comes up in the background
    (:attr:`connected`, :attr:`last_error`, ``on_event("broker", ...)``)."""

    def __init__(
        self,
        cfg: BrokerConfig,
        store: ConsoleStore,
        *,
        sites: Optional[list[str]] = None,
        client_id: Optional[str] = "binwatch-console",
        on_event: Optional[EventSink] = None,
        session_expiry_s: int = 7 * 86400,
        receive_maximum: int = 1000,
        max_payload: int = 256 * 1024,
        max_snapshot: int = 16 * 1024 * 1024,
        batch_max: int = 1000,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.filters = subscriptions(cfg.prefix, sites)
        self.client_id = client_id or "binwatch-console"  # fixed: the broker keeps the session by it
        self.on_event = on_event
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.max_payload = max_payload
        self.max_snapshot = max_snapshot
        self.batch_max = batch_max
        self.connected = False
        self.last_error = ""
        self.stored = 0  # messages handled (stored or counted invalid) and acknowledged
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=100_000)
        self._client: Optional[mqtt.Client] = None
        self._writer: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._review_mids: dict[int, tuple[str, datetime]] = {}
        self._rate = _RateLog()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        client = make_client(self.cfg, self.client_id, clean=False, reconnect=True)
        client.reconnect_delay_set(
            int(max(1, self.cfg.reconnect_min_delay)), int(max(1, self.cfg.reconnect_max_delay))
        )
        client.manual_ack_set(True)
        self._stopping.clear()
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._writer = threading.Thread(target=self._write_loop, name="console-ingest", daemon=True)
        self._writer.start()
        kwargs = connect_kwargs(
            self.cfg,
            clean=False,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
        )
        client.connect_async(**kwargs)
        client.loop_start()

    def stop(self) -> None:
        """Disconnect (the broker keeps the session), store what is queued, end the writer."""
        self._stopping.set()
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
            self._writer = None
        self.connected = False

    # -- paho callbacks (network thread) -----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self._broker(False, f"broker refused the connection: {rc}")
            return
        v5 = self.cfg.protocol == "5"
        client.subscribe([(f, SubscribeOptions(qos=1) if v5 else 1) for f in self.filters])
        self._broker(True, "")
        self._queue.put(_RESEND)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        if any(getattr(rc, "is_failure", False) for rc in rcs):
            self.last_error = f"broker refused a subscription ({', '.join(str(rc) for rc in rcs)})"
            log.error("%s", self.last_error)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._broker(False, f"cannot reach the broker at {self.cfg.broker}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._broker(False, "" if self._stopping.is_set() else f"disconnected from {self.cfg.broker} ({rc})")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        m = message
        self._queue.put(_Msg(m.topic, bytes(m.payload), bool(m.retain), m.mid, m.qos, utcnow()))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            key = self._review_mids.pop(mid, None)
        if key is None:
            return
        if getattr(rc, "is_failure", False):
            self.last_error = f"broker refused the review of alert {key[0]}: {rc}"
            log.error("%s (sent again after the next connect)", self.last_error)
            return
        self._queue.put(("published", key))

    def _broker(self, connected: bool, error: str) -> None:
        self.connected = connected
        if error:
            self.last_error = error
            log.warning("%s", error)
        self._emit([("broker", {"connected": connected, "error": error})])

    # -- reviews -----------------------------------------------------------------------------
    def publish_review(self, review: Review) -> bool:
        """Send ``review`` (QoS 1) on its device's ``alert/review``. False when not connected now:
        it goes out from ``store.unpublished_reviews()`` after the next connect."""
        client = self._client
        if client is None or not self.connected:
            return False
        key = (review.alert_id, review.ts)
        with self._lock:
            if key in self._review_mids.values():
                return True  # in flight already; paho re-sends it on reconnect
            topic = Topics(review.site, review.device, self.cfg.prefix).alert_review
            info = client.publish(topic, review.to_json_bytes(), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            self._review_mids[info.mid] = key
        return True

    def _resend_reviews(self) -> None:  # after each connect; also the time to drop stray JPEGs
        try:
            self.store.prune_orphan_snapshots()
            pending = self.store.unpublished_reviews()
        except (DBAPIError, OSError) as e:
            self.last_error = f"cannot read the unpublished reviews: {e}"
            log.error("%s", self.last_error)
            return
        sent = sum(self.publish_review(r) for r in pending)
        if pending:
            log.info("sent %d of %d unpublished review(s) again", sent, len(pending))

    # -- the writer thread -------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[_Msg] = []
            while True:
                if item is _STOP:
                    self._store(batch)
                    return
                if item is _RESEND or isinstance(item, tuple):
                    self._store(batch)
                    batch = []
                    try:
                        self._control(item)
                    except Exception:  # e.g. a stored review no topic can be made for: never end the thread
                        log.exception(
                            "the ingest's %s step failed", "resend" if item is _RESEND else "publish"
                        )
                else:
                    batch.append(item)
                if len(batch) >= self.batch_max:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            self._store(batch)

    def _control(self, item: Any) -> None:
        if item is _RESEND:
            self._resend_reviews()
            return
        _, (alert_id, ts) = item
        try:
            self.store.mark_review_published(alert_id, ts)
        except DBAPIError as e:  # stays unpublished: sent again after the next connect
            log.error("cannot mark the review of alert %s published: %s", alert_id, e)
            return
        self._emit([("review", {"alert_id": alert_id})])

    def _store(self, batch: list[_Msg]) -> None:
        """Store ``batch`` in one transaction, then acknowledge it. If the transaction fails, each
        message is stored alone; one the database keeps refusing for a reason other than being
        unreachable is counted (``store_error``) and acknowledged, so it cannot block the rest."""
        if not batch:
            return
        events: list[tuple[str, dict[str, Any]]] = []
        try:
            with self.store.batch() as b:
                for msg in batch:
                    events.extend(self._handle(b, msg))
        except Exception as e:  # rolled back: nothing of the batch is stored
            log.warning("storing %d message(s) in one transaction failed (%s); one at a time", len(batch), e)
            events = [ev for msg in batch for ev in self._store_one(msg)]
        self._ack(batch)
        self._emit(events)

    def _store_one(self, msg: _Msg) -> list[tuple[str, dict[str, Any]]]:
        delay = 0.5
        while True:
            try:
                with self.store.batch() as b:
                    return self._handle(b, msg)
            except (OperationalError, OSError) as e:  # database or image store away: wait (unacknowledged)
                self.last_error = f"cannot store messages: {e}"
                if self._stopping.is_set():
                    return []
                log.error("%s; retrying in %.1fs", self.last_error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as e:  # refused for good: counted and acknowledged, so it cannot block the rest
                self._rate.warn("store_error", f"{msg.topic[:300]}: cannot store it ({e!r})")
                try:
                    self.store.count_invalid("store_error")
                except DBAPIError:
                    log.exception("cannot count a store error")
                return []

    def _ack(self, batch: list[_Msg]) -> None:
        client = None if self._stopping.is_set() else self._client  # stopping: maybe not stored
        for msg in batch:
            if client is not None and msg.qos > 0:
                client.ack(msg.mid, msg.qos)
        self.stored += len(batch)

    def _emit(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        sink = self.on_event
        for kind, data in events if sink is not None else []:
            try:
                sink(kind, data)
            except Exception:  # a listener's bug must not stop the ingest
                log.exception("on_event(%r) failed", kind)

    # -- one message -------------------------------------------------------------------------
    def _handle(self, b: StoreBatch, msg: _Msg) -> list[tuple[str, dict[str, Any]]]:
        try:
            return self._dispatch(b, msg)
        except _Invalid as e:
            reason, detail = e.args
            b.count_invalid(reason)
            self._rate.warn(reason, f"{msg.topic[:300]}: {detail}")
            return []

    def _dispatch(self, b: StoreBatch, msg: _Msg) -> list[tuple[str, dict[str, Any]]]:
        try:
            info = parse_topic(msg.topic, self.cfg.prefix)
        except ValueError as e:
            raise _Invalid("bad_topic", str(e)) from e
        site, device = str(info.site), str(info.device)
        if info.kind == "alert_snapshot":
            return self._snapshot(b, msg, str(info.arg))
        if len(msg.payload) > self.max_payload:
            raise _Invalid("oversized", f"{len(msg.payload)} bytes (limit {self.max_payload})")
        if not msg.payload:
            raise _Invalid("empty", "empty payload")
        try:
            data = json.loads(msg.payload)
        except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as e:
            raise _Invalid("not_json", str(e)[:200]) from e
        if info.kind == "alert_mismatch":
            alert = self._parse(Alert, data, "bad_alert")
            if (alert.site, alert.device) != (site, device):
                raise _Invalid("topic_mismatch", f"alert of {alert.site}/{alert.device} on {site}/{device}")
            if not b.add_alert(alert, msg.received):
                return []
            event = {"alert_id": alert.alert_id, "site": site, "device": device, "bin_id": alert.bin_id}
            return [("alert", event)]
        if info.kind not in _DOCS:
            raise _Invalid("unexpected_topic", f"not a topic the console reads ({info.kind})")
        doc = self._parse(_DOCS[info.kind], data, f"bad_{info.kind}")
        seen = msg.received if not msg.retain else min(doc.ts, msg.received)
        b.update_device(site, device, seen=seen, **{info.kind.replace("_reported", ""): doc})
        return [("device", {"site": site, "device": device})]

    @staticmethod
    def _parse(cls: Any, data: Any, reason: str) -> Any:
        try:
            return cls.parse(data)
        except ContractError as e:
            raise _Invalid(reason, str(e)[:300]) from e

    def _snapshot(self, b: StoreBatch, msg: _Msg, alert_id: str) -> list[tuple[str, dict[str, Any]]]:
        if not ALERT_ID_RE.match(alert_id):
            raise _Invalid("bad_topic", f"snapshot alert id {alert_id[:64]!r} is not a lower-case UUID")
        if len(msg.payload) > self.max_snapshot:
            raise _Invalid("oversized", f"snapshot of {len(msg.payload)} bytes (limit {self.max_snapshot})")
        if not msg.payload.startswith(b"\xff\xd8"):
            raise _Invalid("not_jpeg", f"snapshot of alert {alert_id} is not a JPEG")
        try:
            new = b.add_snapshot(alert_id, msg.payload, require_sha256=True)
        except ValueError as e:
            raise _Invalid(SNAPSHOT_SHA256, str(e)) from e
        return [("snapshot", {"alert_id": alert_id})] if new else []
