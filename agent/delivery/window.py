"""The publish window that drains the SQLite outbox over one connection (docs/delivery.md).

Rows go out in ``id`` order with at most ``inflight`` QoS 1 publishes unacknowledged; a row is
deleted only when its PUBACK arrives. Alert rows get ``published_ts`` when they are actually sent
and ``is_historical: true`` when they were stored before the connection started (enqueued while
disconnected, or sent but not acknowledged on an earlier connection or by an earlier process);
``seq`` and ``alert_id`` never change. Runs on the link's publisher thread only.

Snapshot rows (an alert's JPEG, :mod:`agent.delivery.outbox`) never hold an alert up: they are sent
only once every other waiting row has been sent (so always after their own alert), from a cursor of
their own, and at most ``snapshots_inflight`` of them await a PUBACK at a time, so an alert decided
meanwhile queues behind at most that many pictures on the socket.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from agent.delivery.config import MqttConfig
from agent.delivery.conn import Conn, send
from agent.delivery.counters import LinkCounters
from agent.delivery.outbox import Outbox, Row
from contract.base import ContractError, utcnow
from contract.messages import Alert

__all__ = ["OutboxWindow"]

log = logging.getLogger(__name__)

SNAPSHOTS_INFLIGHT = 2
"""Snapshot rows (JPEGs) awaiting a PUBACK at most at a time: an alert decided while pictures go out
waits behind no more than these on the socket."""


class OutboxWindow:
    """Sends outbox rows on a connection and acknowledges them in the outbox on PUBACK."""

    def __init__(
        self,
        cfg: MqttConfig,
        outbox: Outbox,
        alert_topic: str,
        counters: LinkCounters,
        snapshots_inflight: int = SNAPSHOTS_INFLIGHT,
    ) -> None:
        self.cfg = cfg  # read on every fill: ``cfg.inflight`` is the window size
        self.outbox = outbox
        self.alert_topic = alert_topic
        self.counters = counters
        self.snapshots_inflight = max(1, int(snapshots_inflight))
        # snapshot rows, per connection: the cursor and the row ids awaiting a PUBACK
        self._snap_conn: Optional[Conn] = None
        self._snap_last = 0
        self._snap_ids: set[int] = set()

    def fill(self, conn: Conn) -> None:
        """Publish refused rows whose retry time has come, then the next rows after the last one
        sent on ``conn``, up to the window size."""
        room = self.cfg.inflight - len(conn.inflight)
        if room <= 0 or conn.lost:
            return
        if conn is not self._snap_conn:
            self._snap_conn, self._snap_last, self._snap_ids = conn, 0, set()
        sending = set(conn.inflight.values())
        self._snap_ids &= sending
        retries = [r for r in self.outbox.due_refused(room) if r.id not in sending]
        for row in retries:
            if row.snapshot and len(self._snap_ids) >= self.snapshots_inflight:
                continue
            if not self._send(conn, row):
                return
            sending.add(row.id)
        room = self.cfg.inflight - len(conn.inflight)
        if room <= 0:
            return
        rows = self.outbox.peek(room, after_id=conn.last_sent_id, snapshots=False)
        for row in rows:
            if row.id not in sending and not self._send(conn, row):
                return
            conn.last_sent_id = row.id
        if len(rows) < room:  # no alert or answer left unsent: pictures may go
            self._fill_snapshots(conn, sending)

    def _fill_snapshots(self, conn: Conn, sending: set[int]) -> None:
        room = min(self.cfg.inflight - len(conn.inflight), self.snapshots_inflight - len(self._snap_ids))
        if room <= 0:
            return
        for row in self.outbox.peek(room, after_id=self._snap_last, snapshots=True):
            if row.id not in sending and not self._send(conn, row):
                return
            self._snap_last = row.id

    def _send(self, conn: Conn, row: Row) -> bool:
        payload, is_alert, historical = self._prepare(row, conn)
        mid = send(conn, row.topic, payload, row.qos, row.retain)
        if mid is None:
            self.counters.publish_failures += 1
            return False
        conn.inflight[mid] = row.id
        if row.snapshot:
            self._snap_ids.add(row.id)
        if is_alert:
            conn.alert_mids.add(mid)
        if historical:
            conn.historical_mids.add(mid)
        return True

    def _prepare(self, row: Row, conn: Conn) -> tuple[bytes, bool, bool]:
        """Alert rows get ``published_ts`` now and ``is_historical`` when replayed; ids stay."""
        if row.topic != self.alert_topic:
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

    def handle_acks(self, conn: Conn, acked: dict[int, Any]) -> None:
        """Delete the rows whose PUBACK arrived (``acked``: mid -> reason code). A refused one
        (MQTT 5, e.g. "Not authorized" from the broker's ACL) stays in the outbox, counted with the
        broker's reason, and is retried with backoff while the rows behind it go on."""
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
                reason = f"{rc} ({'alert' if is_alert else 'message'} refused by the broker)"
                delay = self.outbox.refuse(
                    row_id, str(rc), base_s=self.cfg.reconnect_min_delay, max_s=self.cfg.reconnect_max_delay
                )
                self.counters.publish_refused += 1
                self.counters.last_refusal = reason
                log.error(
                    "broker refused outbox row %d: %s; kept in the outbox, retry in %.1f s",
                    row_id,
                    reason,
                    delay,
                )
                continue
            done.append(row_id)
            self._snap_ids.discard(row_id)
            if is_alert:
                self.counters.alerts_published += 1
                if historical:
                    self.counters.alerts_replayed += 1
        if done:
            self.outbox.ack_many(done)
