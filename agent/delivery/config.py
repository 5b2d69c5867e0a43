"""The agent's ``mqtt:`` and ``outbox:`` config sections.

``mqtt:`` is the shared connection settings (:class:`mqttconn.config.BrokerConfig`: broker, TLS,
credentials, prefix) plus how the agent delivers (stats interval, results, publish window, drain on
stop). ``outbox:`` bounds the on-disk outbox. Unknown keys are refused.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mqttconn.config import BrokerConfig

__all__ = ["MqttConfig", "OutboxConfig"]


class MqttConfig(BrokerConfig):
    """How the agent talks to its broker and delivers what it decides."""

    stats_interval_s: float = Field(default=10.0, gt=0, description="seconds between stats messages")
    publish_results: bool = Field(default=False, description="publish every verdict on <root>/result")
    inflight: int = Field(default=20, ge=1, le=1000, description="alerts in flight awaiting PUBACK")
    stop_drain_s: float = Field(
        default=5.0, ge=0, description="on a clean stop, wait this long for the outbox to drain"
    )
    persistent_session: bool = Field(
        default=True,
        description="keep the broker session across disconnects and restarts, so that bin events and "
        "commands sent meanwhile are queued by the broker (its max_queued_messages bounds how many)",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="MQTT 5: how long the broker keeps the session offline"
    )
    receive_maximum: int = Field(
        default=64,
        ge=1,
        le=65535,
        description="MQTT 5: most inbound QoS 1 messages unacknowledged at once (the broker waits beyond)",
    )
    publish_bin_outcomes: bool = Field(
        default=True, description="publish how every bin event ended on <root>/bin/outcome (QoS 1, outboxed)"
    )


class OutboxConfig(BaseModel):
    """Bounds of the on-disk alert outbox; past them the oldest rows are dropped (and counted)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_rows: int = Field(default=100_000, ge=1, description="most rows kept")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, description="most payload bytes kept")
