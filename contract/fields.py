"""Field types shared by the wire formats: strict numbers, ids that are safe in MQTT topics,
timestamps that carry a time zone, hashes.

Numbers and booleans are strict: ``"5"``, ``5.0`` or ``true`` are not an item count, ``1`` is not a
boolean. A float field accepts integers (``1`` is ``1.0``) but never NaN or infinity. Timestamps are
ISO 8601 text with an offset (``2024-05-01T12:00:00Z``); numbers and naive times are refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AllowInfNan,
    AwareDatetime,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)

__all__ = [
    "ID_MAX_LEN",
    "U63",
    "Bool",
    "Count",
    "Float",
    "Id",
    "Name",
    "NonNegFloat",
    "Prob",
    "Ref",
    "Sha256",
    "Text",
    "Timestamp",
    "Uuid",
    "check_id",
]

ID_MAX_LEN = 128
INT63_MAX = 2**63 - 1  # what SQLite (and most consumers) store as an integer

# What an id must not contain: MQTT level separator and wildcards, whitespace, control characters.
_BAD_ID_CHARS = re.compile(r"[/+#\s\x00-\x1f\x7f]")
ID_PATTERN = r"^[^/+#\s\x00-\x1f\x7f]+$"


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be one MQTT topic level (site, device, camera, bin id), else raise
    ValueError saying why. Ids are 1..128 characters without ``/``, ``+``, ``#``, whitespace or
    control characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > ID_MAX_LEN:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {ID_MAX_LEN}")
    bad = _BAD_ID_CHARS.search(value)
    if bad:
        raise ValueError(
            f"{what} {value!r} contains {bad.group()!r}: ids are one MQTT topic level "
            "(no '/', '+', '#', whitespace or control characters)"
        )
    return value


def _timestamp_input(value: Any) -> Any:
    # pydantic's lax datetime would also take numbers (Unix time); on the wire a time is ISO 8601 text.
    if isinstance(value, (str, datetime)):
        return value
    raise ValueError(f"expected an ISO 8601 timestamp with offset (e.g. 2024-05-01T12:00:00Z), got {value!r}")


Id = Annotated[
    StrictStr,
    AfterValidator(check_id),
    Field(min_length=1, max_length=ID_MAX_LEN, json_schema_extra={"pattern": ID_PATTERN}),
]
"""A site, device, camera or bin id: one MQTT topic level."""

Name = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[StrictStr, StringConstraints(max_length=4096)]
Sha256 = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lower-case hex SHA-256 digest."""

Bool = StrictBool
U63 = Annotated[StrictInt, Field(ge=0, le=INT63_MAX)]
"""A non-negative counter or sequence number that fits a signed 64-bit integer."""
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
"""An item count."""
Float = Annotated[StrictFloat, AllowInfNan(False)]
NonNegFloat = Annotated[StrictFloat, AllowInfNan(False), Field(ge=0)]
Prob = Annotated[StrictFloat, AllowInfNan(False), Field(ge=0, le=1)]
"""A probability in [0, 1]."""

Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_input)]
"""A time with its UTC offset, ISO 8601 on the wire."""


Ref = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
"""An opaque event, request or rollout id (any text of 1..128 characters)."""

Uuid = Annotated[
    StrictStr,
    StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    Field(json_schema_extra={"format": "uuid"}),
]
"""A UUID as lower-case text (an alert's idempotency key)."""
