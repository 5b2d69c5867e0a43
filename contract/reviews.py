"""``alert/review``: a person's review of an alert (operator side, published by the console)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, StrictStr, StringConstraints, model_validator

from contract.base import Versioned
from contract.fields import Count, Id, Ref, Timestamp, Uuid

__all__ = ["Review"]


class Review(Versioned):
    """``alert/review`` (under the alert's device root): a person's review of an alert, published
    by the console for other consumers (a WMS). ``confirmed`` carries the counted ``actual_qty``."""

    SCHEMA = "binwatch.review"
    VERSION = 1

    alert_id: Uuid
    site: Id
    device: Id
    camera: Id
    bin_id: Id
    event_id: Optional[Ref] = None
    decision: Literal["confirmed", "false_alarm", "cant_tell"]
    actual_qty: Optional[Count] = Field(default=None, description="items counted by the reviewer (confirmed)")
    reviewer: Ref
    note: Annotated[StrictStr, StringConstraints(max_length=1024)] = ""
    ts: Timestamp

    @model_validator(mode="after")
    def _confirmed_has_count(self) -> Review:
        if self.decision == "confirmed" and self.actual_qty is None:
            raise ValueError("a confirmed mismatch needs actual_qty (the items the reviewer counted)")
        if self.decision != "confirmed" and self.actual_qty is not None:
            raise ValueError(f"actual_qty is only for decision 'confirmed', not {self.decision!r}")
        return self
