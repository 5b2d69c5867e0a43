"""The agent's MQTT link: outbox-backed, at-least-once alert delivery (DESIGN section 5).

One publisher thread owns the connection. It connects with backoff (a fresh paho client per
connection, so nothing half-sent by an old connection is re-sent behind our back), and on every
connect:

1. bumps and persists ``session`` and sets the last will (``status`` = offline, same session,
   retained, QoS 1) -- the will is fixed at CONNECT time, so this happens before each connect;
2. re-publishes the remembered retained state (``model/reported``, anything given to
   :meth:`MqttLink.publish_retained`), then the retained ``status`` = online;
3. subscribes;
4. drains the outbox in ``id`` order with a small window of QoS 1 publishes in flight; a row is
   deleted only when its PUBACK arrives. Alert rows stored before the current connection started
   (enqueued while disconnected, or sent but not acknowledged on an earlier connection or by an
   earlier process) are published with ``is_historical: true``; ``seq`` and ``alert_id`` never
   change. Every alert gets ``published_ts`` when it is actually sent.

Everything else (stats, results, retained updates, status) is also published from that thread.
Incoming messages are handed to ``on_message`` on a dispatcher thread, so a slow handler never
stalls PUBACK processing.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from agent.mqtt_config import MqttConfig
from agent.outbox import Outbox, Row
from agent.state import AgentState
from contract.base import ContractError, utcnow
from contract.messages import Alert, ModelReported, Stats, Status
from contract.topics import Topics

__all__ = ["LinkCounters", "MqttLink", "make_client"]

log = logging.getLogger(__name__)

StatusProvider = Callable[[str], Status]
MessageHandler = Callable[[str, bytes], None]

_INBOX_MAX = 1000
_ADHOC_MAX = 256
_STOP_ACK_WAIT_S = 3.0


def _agent_version() -> str:
    try:
        from binwatch import __version__

        return str(__version__)
    except Exception:  # pragma: no cover - binwatch is part of the same distribution
        return "unknown"


def make_client(
    cfg: MqttConfig, client_id: str, *, clean: bool = True, userdata: Any = None, reconnect: bool = False
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


def connect_kwargs(cfg: MqttConfig) -> dict[str, Any]:
    address = cfg.address
    kwargs: dict[str, Any] = {"host": address.host, "port": address.port, "keepalive": cfg.keepalive}
    if cfg.protocol == "5":
        kwargs["clean_start"] = True
    return kwargs


@dataclass
class LinkCounters:
    """Totals since the link was created (for ``stats`` and ``/metrics``)."""

    alerts_enqueued: int = 0
    alerts_published: int = 0  # PUBACKed alerts (a replayed duplicate counts again)
    alerts_replayed: int = 0  # published with is_historical
    publish_failures: int = 0  # refused PUBACKs (MQTT 5) and publishes on a dead connection
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    stats_dropped: int = 0  # stats/results not sent because the link was down
    messages_received: int = 0
    messages_dropped: int = 0  # incoming messages dropped because the handler fell behind


@dataclass
class _Conn:
    """State of one connection (paho callbacks write it under the link's condition)."""

    client: mqtt.Client
    session: int
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
        self._on_message = on_message
        self._subscriptions = [(str(t), int(q)) for t, q in subscriptions]
        self._stats_provider = stats_provider
        self._cond = threading.Condition()
        self._wake = False
        self._stopping = False
        self._stop_clean = True
        self._conn: Optional[_Conn] = None
        self._connected = False
        self._retained: dict[str, tuple[bytes, int]] = {}  # remembered retained state, by topic
        self._adhoc: deque[tuple[str, bytes, int, bool]] = deque()
        self._inbox: queue.Queue[Optional[tuple[str, bytes]]] = queue.Queue(maxsize=_INBOX_MAX)
        self._publisher: Optional[threading.Thread] = None
        self._dispatcher: Optional[threading.Thread] = None
        self._last_drop_warn = 0.0

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
        self._publisher = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._publisher.start()
        if self._on_message is not None:
            self._dispatcher = threading.Thread(target=self._dispatch, name="mqtt-dispatch", daemon=True)
            self._dispatcher.start()

    def stop(self, clean: bool = True, timeout: Optional[float] = None) -> None:
        """Stop the link; the outbox is kept.

        ``clean=True``: wait up to ``cfg.stop_drain_s`` for the outbox to drain, publish the retained
        ``status`` = stopped, then disconnect (the broker discards the will). ``clean=False``: drop
        the connection without a DISCONNECT, so the broker publishes the will (offline).
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
                    _abort(conn.client)
        if self._dispatcher is not None:
            with contextlib.suppress(queue.Full):
                self._inbox.put_nowait(None)
            self._dispatcher.join(5)

    def enqueue_alert(self, alert: Alert) -> Alert:
        """Give ``alert`` the next ``seq`` and the current ``session``, store it durably in the outbox
        (seq and row in one transaction), wake the publisher, and return the alert as stored."""
        session = self.session
        stored: list[Alert] = []

        def build(seq: int) -> bytes:
            a = alert.model_copy(update={"seq": seq, "session": session, "published_ts": utcnow()})
            stored.append(a)
            return a.to_json_bytes()

        self.outbox.put_alert(self.topics.alert_mismatch, build, qos=1)
        self.counters.alerts_enqueued += 1
        self._kick()
        return stored[-1]

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

    def fill_stats(self, stats: Stats) -> Stats:
        """``stats`` with the outbox and delivery fields filled in from this link."""
        return stats.model_copy(
            update={
                "outbox_depth": self.outbox.depth(),
                "outbox_bytes": self.outbox.size_bytes(),
                "outbox_dropped": self.outbox.dropped(),
                "alerts_published": self.counters.alerts_published,
            }
        )

    def kick(self) -> None:
        """Wake the publisher (e.g. after putting a non-alert row into the outbox directly)."""
        self._kick()

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
        status: Optional[Status] = None
        if self._status_provider is not None:
            try:
                status = self._status_provider(state)
            except Exception:
                log.exception("status_provider failed; publishing a minimal status")
        now = utcnow()
        if status is None:
            status = Status(state=state, session=session, ts=now, agent_version=_agent_version())  # type: ignore[arg-type]
        else:
            status = status.model_copy(update={"state": state, "session": session, "ts": now})
        return status.to_json_bytes()

    # -- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, conn: _Conn, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            conn.connack = rc
            if rc.is_failure:
                conn.lost = True
                conn.lost_reason = f"broker refused the connection: {rc}"
            self._wake = True
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, conn: _Conn, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            if not conn.lost:
                conn.lost = True
                conn.lost_reason = f"connection lost: {rc}"
            self._wake = True
            self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, conn: _Conn, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            conn.acked[mid] = rc
            self._wake = True
            self._cond.notify_all()

    def _on_msg(self, client: mqtt.Client, conn: _Conn, message: mqtt.MQTTMessage) -> None:
        self.counters.messages_received += 1
        if self._on_message is None:
            return
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.counters.messages_dropped += 1
            now = time.monotonic()
            if now - self._last_drop_warn > 10:
                self._last_drop_warn = now
                log.warning(
                    "incoming MQTT messages dropped: the handler is %d messages behind (%d dropped so far)",
                    _INBOX_MAX,
                    self.counters.messages_dropped,
                )

    def _dispatch(self) -> None:
        assert self._on_message is not None
        while True:
            item = self._inbox.get()
            if item is None:
                return
            try:
                self._on_message(*item)
            except Exception:
                log.exception("handler for MQTT message on %s failed", item[0])

    # -- publisher thread --------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.cfg.reconnect_min_delay
        failures = 0
        while not self._stopping:
            conn = self._connect()
            if conn is None:
                failures += 1
                self.counters.connect_failures += 1
                self._sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_delay)
                continue
            failures = 0
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

    def _connect(self) -> Optional[_Conn]:
        session = self.state.bump_session()
        addr = self.cfg.address
        try:
            client = make_client(self.cfg, self.client_id)
        except ValueError as e:
            log.error("%s", e)
            return None
        conn = _Conn(client=client, session=session)
        client.user_data_set(conn)
        client.will_set(self.topics.status, self._status_bytes("offline", session), qos=1, retain=True)
        client.max_inflight_messages_set(self.cfg.inflight + 2 * len(self._retained) + 16)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_msg
        with self._cond:
            self._conn = conn
        try:
            client.connect(**connect_kwargs(self.cfg))
        except (OSError, ssl.SSLError, ValueError) as e:
            level = logging.WARNING if self.counters.connect_failures == 0 else logging.DEBUG
            log.log(
                level,
                "cannot reach MQTT broker %s (%s); retrying with backoff, alerts are kept in the outbox",
                self.cfg.broker,
                e,
            )
            return None
        client.loop_start()
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        with self._cond:
            while conn.connack is None and not conn.lost and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            ok = conn.connack is not None and not conn.connack.is_failure and not conn.lost
        if not ok:
            why = conn.lost_reason or f"no CONNACK within {self.cfg.connect_timeout_s:.0f} s"
            if conn.connack is not None and conn.connack.is_failure:
                log.error(
                    "MQTT broker %s refused the connection: %s (check mqtt.username/password/tls)",
                    self.cfg.broker,
                    conn.connack,
                )
            else:
                log.warning("MQTT connect to %s:%d failed: %s", addr.host, addr.port, why)
            self._teardown(conn)
            return None
        conn.connected_since = time.time()
        conn.backlog_id = self.outbox.last_id()
        self.counters.connects += 1
        log.info(
            "connected to %s as %s (session %d); %d alert(s) waiting in the outbox",
            self.cfg.broker,
            self.client_id,
            session,
            self.outbox.depth(),
        )
        return conn

    def _teardown(self, conn: _Conn) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            # stats/results are not buffered; retained state is remembered and re-sent on connect
            self._adhoc.clear()
        if was:
            self.counters.disconnects += 1
        client = conn.client
        if not conn.lost:
            with contextlib.suppress(Exception):
                client.disconnect()
        else:
            _abort(client)
        with contextlib.suppress(Exception):
            client.loop_stop()

    def _serve(self, conn: _Conn) -> None:
        client = conn.client
        # 1) retained state, 2) status online, 3) subscriptions -- all ordered on one socket
        with self._cond:
            retained = list(self._retained.items())
        for topic, (payload, qos) in retained:
            self._send(conn, topic, payload, qos, True)
        self._send(conn, self.topics.status, self._status_bytes("online", conn.session), 1, True)
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
            self._send(conn, topic, payload, qos, True)
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
            self._handle_acks(conn, acked)
            if conn.lost:
                return
            if stopping:
                if not clean:
                    _abort(client)
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
                self._send(conn, topic, payload, qos, retain)
            if self._stats_provider is not None and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.cfg.stats_interval_s
                try:
                    stats = self.fill_stats(self._stats_provider())
                    self._send(conn, self.topics.stats, stats.to_json_bytes(), 0, False)
                except Exception:
                    log.exception("stats_provider failed; no stats this interval")
            if not (stopping and drain_deadline is not None and time.monotonic() >= drain_deadline):
                self._fill_window(conn)

    def _send(self, conn: _Conn, topic: str, payload: bytes, qos: int, retain: bool) -> Optional[int]:
        info = conn.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            conn.lost = True
            conn.lost_reason = conn.lost_reason or f"publish failed: {mqtt.error_string(info.rc)}"
            return None
        return info.mid

    def _fill_window(self, conn: _Conn) -> None:
        room = self.cfg.inflight - len(conn.inflight)
        if room <= 0 or conn.lost:
            return
        for row in self.outbox.peek(room, after_id=conn.last_sent_id):
            payload, is_alert, historical = self._prepare(row, conn)
            mid = self._send(conn, row.topic, payload, row.qos, row.retain)
            if mid is None:
                self.counters.publish_failures += 1
                return
            conn.inflight[mid] = row.id
            if is_alert:
                conn.alert_mids.add(mid)
            if historical:
                conn.historical_mids.add(mid)
            conn.last_sent_id = row.id

    def _prepare(self, row: Row, conn: _Conn) -> tuple[bytes, bool, bool]:
        """Alert rows get ``published_ts`` now and ``is_historical`` when replayed; ids stay."""
        if row.topic != self.topics.alert_mismatch:
            return row.payload, False, False
        historical = row.id <= conn.backlog_id  # ids, not clocks: a Jetson's clock may jump at boot
        try:
            alert = Alert.parse(row.payload)
        except ContractError as e:  # stored by an older/newer agent: send as stored
            log.warning("outbox row %d is not a valid alert (%s); publishing it as stored", row.id, e)
            return row.payload, True, historical
        update: dict[str, Any] = {"published_ts": utcnow()}
        if historical:
            update["is_historical"] = True
        return alert.model_copy(update=update).to_json_bytes(), True, historical

    def _handle_acks(self, conn: _Conn, acked: dict[int, Any]) -> None:
        done: list[int] = []
        for mid, rc in acked.items():
            row_id = conn.inflight.pop(mid, None)
            is_alert = mid in conn.alert_mids
            historical = mid in conn.historical_mids
            conn.alert_mids.discard(mid)
            conn.historical_mids.discard(mid)
            if row_id is None:
                continue  # status, retained state, stats
            if rc is not None and getattr(rc, "is_failure", False):
                # MQTT 5 broker refused it (e.g. not authorised): keep the row, retry on a new connection
                self.counters.publish_failures += 1
                log.error(
                    "broker refused outbox row %d on %s: %s; will retry after reconnect",
                    row_id,
                    self.topics.alert_mismatch,
                    rc,
                )
                conn.lost, conn.lost_reason = True, f"publish refused: {rc}"
                continue
            done.append(row_id)
            if is_alert:
                self.counters.alerts_published += 1
                if historical:
                    self.counters.alerts_replayed += 1
        if done:
            self.outbox.ack_many(done)

    def _stop_clean_now(self, conn: _Conn) -> None:
        client = conn.client
        mid = self._send(conn, self.topics.status, self._status_bytes("stopped", conn.session), 1, True)
        if mid is not None:
            deadline = time.monotonic() + _STOP_ACK_WAIT_S
            with self._cond:
                while mid not in conn.acked and not conn.lost:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        log.warning("no PUBACK for the stopped status within %.0f s", _STOP_ACK_WAIT_S)
                        break
                    self._cond.wait(left)
        with self._cond:
            self._connected = False
        with contextlib.suppress(Exception):
            client.disconnect()
        conn.lost, conn.lost_reason = False, "stopped"
        depth = self.outbox.depth()
        if depth:
            log.info("stopped with %d alert(s) kept in the outbox for the next start", depth)


def _abort(client: mqtt.Client) -> None:
    """Close the socket without a DISCONNECT (the broker then publishes the will)."""
    sock = client.socket()
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
