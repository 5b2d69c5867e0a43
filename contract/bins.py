"""Bin events and their outcomes: ``bin`` (a bin presented to a camera, from the WMS or the
conveyor controller) and ``bin/outcome`` (how the agent ended each one)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, StrictInt

from contract.base import Versioned
from contract.fields import Count, Id, Prob, Ref, Text, Timestamp, Uuid
from contract.manifest import Items

__all__ = ["BinEvent", "BinOutcome"]


class BinEvent(Versioned):
    """``bin``: a bin presented to a camera. ``expected_qty`` (else the sum of ``items``) overrides
    the manifest for this presentation; ``frames`` asks for that many frames to be fused; ``ts``
    (version 2) says when, so that a stale event is not decided on another bin's frames."""

    SCHEMA = "binwatch.bin"
    VERSION = 2
    OLDER_VERSIONS = (1,)  # version 1 had no ``ts``

    bin_id: Id
    camera: Id
    event_id: Ref
    expected_qty: Optional[Count] = None
    items: Optional[Items] = None
    frames: Optional[Annotated[StrictInt, Field(ge=1, le=32)]] = None
    ts: Optional[Timestamp] = Field(
        default=None,
        description="when the bin reached the camera; an event older than the agent's events.max_age_s "
        "(e.g. queued by the broker during an outage) is reported failed instead of decided on later frames",
    )

    def expected(self) -> Optional[int]:
        """``expected_qty``, else the sum of the item quantities, else None (use the manifest)."""
        if self.expected_qty is not None:
            return self.expected_qty
        if self.items:
            return sum(i.quantity for i in self.items)
        return None


class BinOutcome(Versioned):
    """``bin/outcome``: how one ``bin`` event ended, sent durably (QoS 1, through the outbox) for
    every event the agent accepted: a verdict, or ``failed`` with the reason (superseded, timed out,
    stale after an outage, the agent restarted before deciding it, ...)."""

    SCHEMA = "binwatch.bin_outcome"
    VERSION = 1

    site: Id
    device: Id
    camera: Id
    bin_id: Id
    event_id: Ref
    outcome: Literal["match", "mismatch", "uncertain", "no_manifest", "failed"]
    reason: Text = Field(default="", description="why it failed (empty otherwise)")
    expected_qty: Optional[Count] = None
    predicted_qty: Optional[Count] = None
    p_expected: Optional[Prob] = None
    alert_id: Optional[Uuid] = Field(default=None, description="the alert a mismatch raised")
    ts: Timestamp
