"""Totals the MQTT link and its parts (outbox window, inbox) count, for ``stats`` and ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinkCounters"]


@dataclass
class LinkCounters:
    """Totals since the link was created (for ``stats`` and ``/metrics``)."""

    alerts_enqueued: int = 0
    alerts_published: int = 0  # PUBACKed alerts (a replayed duplicate counts again)
    alerts_replayed: int = 0  # published with is_historical
    publish_failures: int = 0  # publishes on a dead connection
    publish_refused: int = 0  # PUBACKs with a failure reason code (MQTT 5), e.g. an ACL denial
    last_refusal: str = ""  # the broker's reason for the latest refusal
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    stats_dropped: int = 0  # stats/results not sent because the link was down
    messages_received: int = 0
    messages_dropped: int = 0  # incoming QoS 0 messages dropped because the handler fell behind
    messages_unacked: int = 0  # incoming messages the handler could not take durably (not acknowledged)
