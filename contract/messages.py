"""MQTT payloads (docs/contract.md, "Payloads"): alerts, status, stats, model rollout state, bins,
manifests and commands.

Every top-level message is :class:`~contract.base.Versioned` (``schema`` + ``schema_version``) and
strict: unknown fields, unknown versions, wrong types, NaN and naive timestamps are refused by
``Model.parse(payload)`` with a :class:`~contract.base.ContractError` naming the field. Manifests
(:mod:`contract.manifest`, re-exported here) are the one tolerant reader: ABID metadata JSON is
accepted as the vendor publishes it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from contract.base import Strict, Versioned
from contract.bins import BinEvent, BinOutcome
from contract.fields import (
    U63,
    Bool,
    Count,
    Float,
    Id,
    Name,
    NonNegFloat,
    Prob,
    Ref,
    Sha256,
    Text,
    Timestamp,
    Uuid,
)
from contract.manifest import ItemLine, ManifestEntry, parse_manifest
from contract.reviews import Review

log = logging.getLogger(__name__)

__all__ = [
    "Alert",
    "BinEvent",
    "BinOutcome",
    "CameraStats",
    "CameraStatus",
    "CommandRequest",
    "CommandResult",
    "ItemLine",
    "ManifestEntry",
    "ModelDesired",
    "ModelRef",
    "ModelReported",
    "Result",
    "Review",
    "Snapshot",
    "StageLatency",
    "Stats",
    "Status",
    "parse_manifest",
]
# ItemLine, ManifestEntry and parse_manifest live in contract.manifest, BinEvent and BinOutcome in
# contract.bins, Review in contract.reviews; all are re-exported here.

Precision = Literal["fp32", "fp16", "int8"]
Key = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
LongKey = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
Backend = Annotated[StrictStr, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.:-]{0,63}$")]
Uri = Annotated[StrictStr, StringConstraints(min_length=1, max_length=2048)]
CustomValue = Union[Bool, StrictInt, Float, Annotated[StrictStr, StringConstraints(max_length=256)]]


def _flat_custom(value: Any) -> Any:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(v, (str, int, float, bool)):
                raise ValueError(
                    f"custom[{k!r}] is {type(v).__name__}: values must be a string, number or boolean"
                )
    return value


Custom = Annotated[dict[Key, CustomValue], BeforeValidator(_flat_custom)]

_COUNT_KEY = re.compile(r"^(0|[1-9][0-9]{0,5})(\+?)$")
_JSON_MAX_DEPTH = 8


def _finite_json(value: JsonValue, depth: int = 0) -> JsonValue:
    """Free-form JSON (command args and data): no NaN/inf, nesting at most 8 deep."""
    if depth > _JSON_MAX_DEPTH:
        raise ValueError(f"nested deeper than {_JSON_MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinity are not JSON")
    if isinstance(value, dict):
        for v in value.values():
            _finite_json(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _finite_json(v, depth + 1)
    return value


JsonArgs = Annotated[dict[Key, JsonValue], Field(max_length=32), AfterValidator(_finite_json)]


# -- parts -------------------------------------------------------------------------------------
class ModelRef(Strict):
    """Which model produced a verdict (from its card and the artifact that runs)."""

    name: Name
    version: U63
    sha256: Sha256 = Field(description="sha256 of the artifact the backend runs (ONNX file)")
    precision: Precision
    backend: Backend = Field(description="e.g. tensorrt, onnxruntime-cpu")


class Snapshot(Strict):
    """Where the frame's JPEG lies (on the device or uploaded); never inlined. Since alert and
    result version 2, ``topic`` names the MQTT topic the JPEG bytes are published on
    (``<root>/alert/snapshot/<alert_id>``), so that an operator's console can fetch it."""

    uri: Uri
    sha256: Sha256
    topic: Optional[Uri] = Field(
        default=None, description="MQTT topic carrying the JPEG bytes (raw, QoS 1), if published"
    )
    size: Optional[U63] = Field(default=None, description="JPEG size in bytes")


def _check_distribution(dist: dict[str, float]) -> dict[str, float]:
    if not dist:
        raise ValueError("distribution is empty")
    counts = []
    overflow = None
    for key in dist:
        m = _COUNT_KEY.match(key)
        if not m:
            raise ValueError(f"key {key!r} is not an item count ('0', '1', ...; '5+' for an overflow class)")
        counts.append(int(m.group(1)))
        if m.group(2):
            if overflow is not None:
                raise ValueError("more than one overflow key ('N+')")
            overflow = int(m.group(1))
    if len(set(counts)) != len(counts):
        raise ValueError("a count appears twice (e.g. '5' and '5+')")
    if overflow is not None and overflow != max(counts):
        raise ValueError(f"overflow key '{overflow}+' must be the largest count")
    total = math.fsum(dist.values())
    if abs(total - 1.0) > 0.01:
        raise ValueError(f"probabilities sum to {total:.4f}, expected 1 (within 0.01)")
    return dist


Distribution = Annotated[
    dict[Annotated[StrictStr, StringConstraints(max_length=8)], Prob],
    Field(max_length=1024),
    AfterValidator(_check_distribution),
]


# -- alerts and results ------------------------------------------------------------------------
class _Verdict(Versioned):
    seq: U63 = Field(description="per device, persisted across restarts, for gap detection")
    session: U63 = Field(description="increases on every (re)connect")
    site: Id
    device: Id
    camera: Id
    bin_id: Id
    event_id: Optional[Ref] = None
    frame_ts: Timestamp = Field(description="capture time of the (last) frame")
    published_ts: Optional[Timestamp] = Field(default=None, description="set when published")
    expected_qty: Count
    predicted_qty: Count = Field(description="most probable count (the overflow class's count if beyond)")
    p_expected: Prob = Field(description="probability the bin holds expected_qty items")
    distribution: Distribution = Field(
        description="count -> probability; keys are counts as text, 'N+' for an overflow class"
    )
    frames: StrictInt = Field(ge=1, le=1024, description="frames fused")
    is_historical: Bool = Field(default=False, description="replayed from the outbox after an outage")
    model: ModelRef
    snapshot: Optional[Snapshot] = None
    custom: Custom = Field(
        default_factory=dict,
        max_length=16,
        description="flat user fields: at most 16 keys of <= 64 characters, strings <= 256 characters",
    )


class Alert(_Verdict):
    """A mismatch alert (``alert/mismatch``). ``alert_id`` (lower-case UUID text) is the
    idempotency key: a consumer that sees the same id twice has seen the same alert."""

    SCHEMA = "binwatch.alert"
    VERSION = 2
    OLDER_VERSIONS = (1,)  # version 1's snapshot had no ``topic``/``size``

    alert_id: Uuid


class Result(_Verdict):
    """Every verdict (``result``, off by default): an alert's fields plus the verdict."""

    SCHEMA = "binwatch.result"
    VERSION = 2
    OLDER_VERSIONS = (1,)  # version 1's snapshot had no ``topic``/``size``

    result_id: Uuid
    verdict: Literal["match", "mismatch", "uncertain"]


# -- status and stats --------------------------------------------------------------------------
class CameraStatus(Strict):
    state: Literal["live", "reconnecting", "lost", "stopped"]
    fps: NonNegFloat = 0.0
    last_frame_ts: Optional[Timestamp] = None
    error: Optional[Text] = None
    dropped_frames: U63 = 0
    reconnects: U63 = 0


class Status(Versioned):
    """Retained ``status``; also the last will (``offline``, same ``session``)."""

    SCHEMA = "binwatch.status"
    VERSION = 1

    state: Literal["online", "stopped", "offline"]
    session: U63
    ts: Timestamp
    agent_version: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
    model: Optional[ModelRef] = None
    cameras: dict[Id, CameraStatus] = Field(default_factory=dict, max_length=64)


class StageLatency(Strict):
    p50_ms: NonNegFloat
    p99_ms: NonNegFloat
    n: U63 = Field(description="samples in the window")

    @model_validator(mode="after")
    def _ordered(self) -> StageLatency:
        if self.p99_ms < self.p50_ms:
            raise ValueError(f"p99_ms ({self.p99_ms}) is below p50_ms ({self.p50_ms})")
        return self


class CameraStats(Strict):
    fps: NonNegFloat = 0.0
    frames_total: U63 = 0
    frames_dropped: U63 = 0
    decode_errors: U63 = 0


class Stats(Versioned):
    """Periodic ``stats``: throughput, latency per stage, outbox health, verdicts. Counters are
    totals since start.

    Version 2 added ``verdicts``; version 3 the broker's refusals (``publish_refused``,
    ``refused_waiting``, ``last_refusal``). Older payloads are still read, with those empty."""

    SCHEMA = "binwatch.stats"
    VERSION = 3
    OLDER_VERSIONS = (1, 2)

    ts: Timestamp
    uptime_s: NonNegFloat
    fps: NonNegFloat
    frames_total: U63 = 0
    frames_dropped: U63 = 0
    decode_errors: U63 = 0
    latency: dict[Key, StageLatency] = Field(
        default_factory=dict, max_length=32, description="per stage: decode, preprocess, infer, ..."
    )
    outbox_depth: U63 = 0
    outbox_bytes: U63 = 0
    outbox_dropped: U63 = Field(default=0, description="alerts dropped because the outbox was full")
    alerts_published: U63 = 0
    publish_refused: U63 = Field(default=0, description="publishes refused in an MQTT 5 PUBACK, since start")
    refused_waiting: U63 = Field(default=0, description="outbox rows kept after a refusal, waiting to retry")
    last_refusal: Optional[Text] = Field(default=None, description="the broker's latest reason for a refusal")
    invalid_messages: dict[LongKey, U63] = Field(
        default_factory=dict, max_length=64, description="refused incoming messages by reason or topic"
    )
    verdicts: dict[Key, U63] = Field(
        default_factory=dict,
        max_length=16,
        description="presentations decided since start, by verdict: match, mismatch, uncertain, "
        "no_manifest, and failed (ended without a verdict); an agent reports every one, 0 included",
    )
    backend: Optional[Backend] = None
    precision: Optional[Precision] = None
    cameras: dict[Id, CameraStats] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _v1_has_no_verdicts(cls, data: Any) -> Any:
        version = data.get("schema_version") if isinstance(data, dict) else None
        if type(version) is int and version == 1 and "verdicts" in data:
            raise ValueError("verdicts is not part of binwatch.stats version 1 (write schema_version 3)")
        return data


# -- model rollout -----------------------------------------------------------------------------
def _check_signature(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("signature is not valid base64") from e
    if len(raw) != 64:
        raise ValueError(f"signature decodes to {len(raw)} bytes; an ed25519 signature has 64")
    return value


Signature = Annotated[StrictStr, StringConstraints(max_length=128), AfterValidator(_check_signature)]


class ModelDesired(Versioned):
    """Retained ``model/desired`` (device, group or fleet topic), written by ``binwatch deploy``."""

    SCHEMA = "binwatch.model_desired"
    VERSION = 2
    OLDER_VERSIONS = (1,)  # version 1 had no ``rollback``: read as ``rollback: false``

    version: U63 = Field(description="monotonic; the agent refuses versions older than it runs")
    bundle_url: Uri = Field(description="file path, file:// or http(s):// URL of the bundle")
    sha256: Sha256 = Field(description="sha256 of the file at bundle_url")
    signature: Signature = Field(
        description="base64 ed25519 signature over the bundle manifest's canonical bytes (= MANIFEST.sig)"
    )
    rollout_id: Optional[Ref] = None
    rollback: Bool = Field(
        default=False, description="go back to this (older) version: the agent accepts it although not newer"
    )


class ModelReported(Versioned):
    """Retained ``model/reported``: where the agent is with its model."""

    SCHEMA = "binwatch.model_reported"
    VERSION = 1

    version: U63
    state: Literal["downloading", "verifying", "building", "warming", "active", "failed", "rolled_back"]
    detail: Text = ""
    ts: Timestamp
    rollout_id: Optional[Ref] = None


# -- commands ----------------------------------------------------------------------------------
class CommandRequest(Versioned):
    """``cmd/<name>``: resync, capture, reload. The answer goes to ``cmd/<name>/result``."""

    SCHEMA = "binwatch.cmd"
    VERSION = 1

    request_id: Ref
    args: JsonArgs = Field(default_factory=dict)


class CommandResult(Versioned):
    SCHEMA = "binwatch.cmd_result"
    VERSION = 1

    request_id: Ref
    ok: Bool
    detail: Text = ""
    data: JsonArgs = Field(default_factory=dict)
