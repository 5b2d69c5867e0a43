"""The agent's MQTT link: outbox-backed, at-least-once alert delivery (docs/delivery.md has the
whole protocol: sessions, the will, the order of a connect, replays, refusals, inbound acks).

One publisher thread owns the connection: it connects with backoff (a fresh paho client per
connection; the broker session is kept unless ``mqtt.persistent_session`` is off; a broker that
speaks only MQTT 3.1.1 gets 3.1.1, with a warning), re-publishes the remembered retained state and
``status`` = online, subscribes, and drains the outbox through a small window of QoS 1 publishes
(:mod:`agent.delivery.window`): a row is deleted only when its PUBACK arrives; rows stored before
the connection are replays (``is_historical``). Stats, results and retained updates go out on that
thread too. Incoming messages are handled on a dispatcher thread and acknowledged after the handler
took them (:mod:`agent.delivery.inbox`); per-connection state lives in :mod:`agent.delivery.conn`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from agent.delivery.config import MqttConfig
from agent.delivery.conn import Conn, abort, send, with_311_fallback
from agent.delivery.counters import LinkCounters
from agent.delivery.inbox import Inbox, MessageHandler
from agent.delivery.outbox import Outbox
from agent.delivery.snapshots import with_picture
from agent.delivery.state import AgentState
from agent.delivery.status import status_payload, with_delivery
from agent.delivery.window import OutboxWindow
from contract.base import utcnow
from contract.messages import Alert, BinOutcome, CommandResult, ModelReported, Stats, Status
from contract.topics import Topics
from mqttconn.client import make_client

__all__ = ["MqttLink"]

log = logging.getLogger(__name__)

StatusProvider = Callable[[str], Status]

_ADHOC_MAX = 256
_STOP_ACK_WAIT_S = 3.0


class MqttLink:
    """See the module docstring. Thread-safe public methods; call :meth:`start` once."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        outbox: Outbox,
        state: AgentState,
        *,
        status_provider: Optional[StatusProvider] = None,
        on_message: Optional[MessageHandler] = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        stats_provider: Optional[Callable[[], Stats]] = None,
    ) -> None:
        self.cfg = cfg
        self.topics = topics
        self.outbox = outbox
        self.state = state
        self.client_id = cfg.client_id or topics.device
        self.counters = LinkCounters()
        self._status_provider = status_provider
        self._subscriptions = [(str(t), int(q)) for t, q in subscriptions]
        self._stats_provider = stats_provider
        self._cond = threading.Condition()
        self._wake = False
        self._stopping = False
        self._stop_clean = True
        self._conn: Optional[Conn] = None
        self._connected = False
        self._retained: dict[str, tuple[bytes, int]] = {}  # remembered retained state, by topic
        self._adhoc: deque[tuple[str, bytes, int, bool]] = deque()
        self._window = OutboxWindow(cfg, outbox, topics.alert_mismatch, self.counters)
        self._inbox = Inbox(on_message, self.counters)
        self._broker = cfg  # the connection settings in use (3.1.1 after a fallback)
        self._publisher: Optional[threading.Thread] = None

    # -- public API ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between CONNACK (and the online status) and the loss of the connection."""
        return self._connected

    @property
    def session(self) -> int:
        """The session number of the current (or last) connection."""
        conn = self._conn
        return conn.session if conn else self.state.session

    def start(self) -> None:
        if self._publisher is not None:
            raise RuntimeError("MqttLink.start() called twice")
        if self.cfg.protocol != "5":
            log.warning(
                "MQTT %s: a publish the broker refuses (an ACL denial) is acknowledged and lost; "
                'set mqtt.protocol: "5" so that refusals are reported and the alert kept',
                self.cfg.protocol,
            )
        self._publisher = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        self._inbox.start()

    def stop(self, clean: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the link; the outbox is kept.

        ``clean=True``: wait up to ``cfg.stop_drain_s`` for the outbox to drain, publish a last
        ``stats`` (the totals at stop) and the retained ``status`` = stopped, then disconnect (the
        broker discards the will). ``clean=False``: drop the connection without a DISCONNECT, so
        the broker publishes the will (offline).
        """
        with self._cond:
            self._stopping = True
            self._stop_clean = clean
            self._wake = True
            self._cond.notify_all()
        if self._publisher is not None:
            wait = timeout if timeout is not None else self.cfg.stop_drain_s + self.cfg.connect_timeout_s + 10
            self._publisher.join(wait)
            if self._publisher.is_alive():
                log.warning("MQTT publisher did not stop within %.0f s; abandoning the connection", wait)
                conn = self._conn
                if conn is not None:
                    abort(conn.client)
        self._inbox.stop(5)

    def enqueue_alert(self, alert: Alert, snapshot_jpeg: Optional[bytes] = None) -> Alert:
        """Give ``alert`` the next ``seq`` and the current ``session``, store it durably in the outbox
        (seq and row in one transaction; ``snapshot_jpeg`` right after it: ``snapshots.with_picture``),
        wake the publisher, and return the alert as stored."""
        session = self.session
        stored: list[Alert] = []
        alert, picture = with_picture(alert, snapshot_jpeg, self.topics)

        def build(seq: int) -> bytes:
            a = alert.model_copy(update={"seq": seq, "session": session, "published_ts": utcnow()})
            stored.append(a)
            return a.to_json_bytes()

        self.outbox.put_alert(self.topics.alert_mismatch, build, qos=1, snapshot=picture)
        self.counters.alerts_enqueued += 1
        self._kick()
        return stored[-1]

    def enqueue_outcome(self, outcome: BinOutcome) -> None:
        """Store how a bin event ended durably in the outbox (QoS 1), unless
        ``mqtt.publish_bin_outcomes`` is off."""
        if self.cfg.publish_bin_outcomes:
            self.outbox.put(self.topics.bin_outcome, outcome.to_json_bytes(), qos=1)
            self._kick()

    def enqueue_command_result(self, name: str, result: CommandResult) -> None:
        """Store the answer to ``cmd/<name>`` durably in the outbox (QoS 1) and wake the publisher."""
        self.outbox.put(self.topics.cmd_result(name), result.to_json_bytes(), qos=1)
        self._kick()

    def publish_stats(self, stats: Stats) -> bool:
        """QoS 0, not outboxed: dropped (and counted) when the link is down."""
        return self._publish_volatile(self.topics.stats, stats.to_json_bytes())

    def publish_result(self, payload: bytes | Any) -> bool:
        """A verdict on ``result`` (QoS 0, dropped when down). ``payload``: bytes or a contract model."""
        data = payload if isinstance(payload, (bytes, bytearray)) else payload.to_json_bytes()
        return self._publish_volatile(self.topics.result, bytes(data))

    def publish_retained(self, topic: str, payload: bytes, qos: int = 1, remember: bool = True) -> None:
        """Publish a retained message now (if connected) and, with ``remember``, again on every
        reconnect (a restarted broker without persistence has forgotten it). An empty payload
        clears the retained message and is forgotten."""
        payload = bytes(payload)
        with self._cond:
            if remember:
                if payload:
                    self._retained[topic] = (payload, qos)
                else:
                    self._retained.pop(topic, None)
            if self._connected:
                self._push_adhoc((topic, payload, qos, True))

    def report_model(self, reported: ModelReported) -> None:
        """Retained ``model/reported`` (QoS 1), re-published on every reconnect."""
        self.publish_retained(self.topics.model_reported, reported.to_json_bytes(), qos=1)

    def publish_status(self) -> None:
        """Re-publish ``status`` = online now (e.g. after a model or camera change)."""
        with self._cond:
            if self._connected and self._conn is not None:
                self._push_adhoc(
                    (self.topics.status, self._status_bytes("online", self._conn.session), 1, True)
                )

    # -- helpers for callers -------------------------------------------------------------------
    def _kick(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _push_adhoc(self, item: tuple[str, bytes, int, bool]) -> None:
        # caller holds self._cond
        if len(self._adhoc) >= _ADHOC_MAX:
            self._adhoc.popleft()
            self.counters.stats_dropped += 1
        self._adhoc.append(item)
        self._wake = True
        self._cond.notify_all()

    def _publish_volatile(self, topic: str, payload: bytes) -> bool:
        with self._cond:
            if not self._connected:
                self.counters.stats_dropped += 1
                return False
            self._push_adhoc((topic, payload, 0, False))
            return True

    def _status_bytes(self, state: str, session: int) -> bytes:
        return status_payload(self._status_provider, state, session)

    # -- publisher thread --------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.cfg.reconnect_min_delay
        while not self._stopping:
            conn = self._connect()
            if conn is None:
                self.counters.connect_failures += 1
                self._sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_delay)
                continue
            delay = self.cfg.reconnect_min_delay
            try:
                self._serve(conn)
            except Exception:
                log.exception("MQTT publisher failed; reconnecting")
            finally:
                self._teardown(conn)
            if not self._stopping:
                log.warning(
                    "lost the broker connection (%s); alerts are kept in the outbox (%d waiting)",
                    conn.lost_reason or "unknown",
                    self.outbox.depth(),
                )
                self._sleep(self.cfg.reconnect_min_delay)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def _connect(self) -> Optional[Conn]:
        conn = self._open(self._broker)
        conn, self._broker = with_311_fallback(conn, self._broker, self._open)
        if conn is None or conn.lost or conn.connack is None or conn.connack.is_failure:
            return None
        conn.connected_since = time.time()
        conn.backlog_id = self.outbox.last_id()
        self.counters.connects += 1
        log.info(
            "connected to %s as %s (MQTT %s, session %d); %d alert(s) waiting in the outbox",
            self.cfg.broker,
            self.client_id,
            self._broker.protocol,
            conn.session,
            self.outbox.depth(),
        )
        return conn

    def _open(self, cfg: MqttConfig) -> Optional[Conn]:
        """A new client and connection (a kept session unless ``mqtt.persistent_session`` is off);
        the Conn once CONNACK came or the wait ended (then torn down), None when unreachable."""
        session, keep = self.state.bump_session(), self.cfg.persistent_session
        try:
            client = make_client(cfg, self.client_id, clean=not keep)
        except ValueError as e:
            log.error("%s", e)
            return None
        conn = Conn(client=client, session=session, cond=self._cond, wake=self._kick)
        conn.configure(
            will=(self.topics.status, self._status_bytes("offline", session)),
            max_inflight=self.cfg.inflight + 2 * len(self._retained) + 16,
            on_message=self._inbox.on_message,
        )
        with self._cond:
            self._conn = conn
        opts = {
            "clean": not keep,
            "session_expiry_s": self.cfg.session_expiry_s,
            "receive_maximum": self.cfg.receive_maximum,
        }
        if not conn.connect(cfg, loud=self.counters.connect_failures == 0, **opts):
            return None
        if not conn.wait_connack(cfg, lambda: self._stopping):
            self._teardown(conn)
        return conn

    def _teardown(self, conn: Conn) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            # stats/results are not buffered; retained state is remembered and re-sent on connect
            self._adhoc.clear()
        if was:
            self.counters.disconnects += 1
        conn.close()

    def _serve(self, conn: Conn) -> None:
        client = conn.client
        # 1) retained state, 2) status online, 3) subscriptions -- all ordered on one socket
        with self._cond:
            retained = list(self._retained.items())
        for topic, (payload, qos) in retained:
            send(conn, topic, payload, qos, True)
        send(conn, self.topics.status, self._status_bytes("online", conn.session), 1, True)
        if self._subscriptions:
            result, _mid = client.subscribe(self._subscriptions)
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
                conn.lost, conn.lost_reason = True, f"subscribe failed: {mqtt.error_string(result)}"
                return
        with self._cond:
            self._connected = not conn.lost
            # retained state changed while the snapshot above was being sent (it was remembered but
            # not pushed, since we were not yet connected): send the newer values now
            sent = dict(retained)
            changed = [(t, v) for t, v in self._retained.items() if sent.get(t) != v]
        for topic, (payload, qos) in changed:
            send(conn, topic, payload, qos, True)
        next_stats = time.monotonic() + self.cfg.stats_interval_s
        drain_deadline: Optional[float] = None
        while True:
            with self._cond:
                while not self._wake and not conn.lost:
                    timeout = next_stats - time.monotonic() if self._stats_provider else 1.0
                    if timeout <= 0 or not self._cond.wait(min(max(timeout, 0.01), 1.0)):
                        break
                self._wake = False
                acked, conn.acked = conn.acked, {}
                adhoc = list(self._adhoc)
                self._adhoc.clear()
                stopping, clean = self._stopping, self._stop_clean
            self._window.handle_acks(conn, acked)
            if conn.lost:
                return
            if stopping:
                if not clean:
                    abort(client)
                    conn.lost, conn.lost_reason = True, "stopped (unclean)"
                    return
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + self.cfg.stop_drain_s
                now = time.monotonic()
                drained = not conn.inflight and (self.outbox.depth() == 0 or now >= drain_deadline)
                if drained or now >= drain_deadline + _STOP_ACK_WAIT_S:
                    self._stop_clean_now(conn)
                    return
            for topic, payload, qos, retain in adhoc:
                send(conn, topic, payload, qos, retain)
            if self._stats_provider is not None and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.cfg.stats_interval_s
                self._send_stats(conn)
            if not (stopping and drain_deadline is not None and time.monotonic() >= drain_deadline):
                self._window.fill(conn)

    def _send_stats(self, conn: Conn) -> None:
        if self._stats_provider is None:
            return
        try:
            stats = with_delivery(self._stats_provider(), self.outbox, self.counters)
            send(conn, self.topics.stats, stats.to_json_bytes(), 0, False)
        except Exception:
            log.exception("stats_provider failed; no stats this interval")

    def _stop_clean_now(self, conn: Conn) -> None:
        self._send_stats(conn)  # the totals at stop (e.g. a finished replay's final counts)
        stopped = self._status_bytes("stopped", conn.session)
        if conn.publish_acked(self.topics.status, stopped, _STOP_ACK_WAIT_S) is False:
            log.warning("no PUBACK for the stopped status within %.0f s", _STOP_ACK_WAIT_S)
        with self._cond:
            self._connected = False
        with contextlib.suppress(Exception):
            conn.client.disconnect()
        conn.lost, conn.lost_reason = False, "stopped"
        depth = self.outbox.depth()
        if depth:
            log.info("stopped with %d alert(s) kept in the outbox for the next start", depth)
