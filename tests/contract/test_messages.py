"""Every top-level document: round trips, strictness, and the field rules of docs/contract.md."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from contract import ContractError
from contract.base import Versioned
from contract.messages import (
    Alert,
    BinEvent,
    CommandRequest,
    CommandResult,
    ItemLine,
    ModelDesired,
    ModelRef,
    StageLatency,
    Stats,
    Status,
)
from tests.contract.samples import EXAMPLES, example

MODELS = list(EXAMPLES)
ids = [m.SCHEMA for m in MODELS]


def _refused(model: type[Versioned], payload: Any) -> str:
    with pytest.raises(ContractError) as info:
        model.parse(payload)
    return str(info.value)


def _alert(**changes: Any) -> dict[str, Any]:
    data = example(Alert)
    data.update(changes)
    return data


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_round_trip_bytes_text_and_dict(model: type[Versioned]) -> None:
    doc = model.parse(example(model))
    wire = doc.to_json_bytes()
    assert model.parse(wire) == doc
    assert model.parse(wire.decode()) == doc
    assert model.parse(bytearray(wire)) == doc
    assert model.parse(doc.to_dict()) == doc
    # what goes on the wire carries its schema and version
    sent = json.loads(wire)
    assert sent["schema"] == model.SCHEMA
    assert sent["schema_version"] == model.VERSION


def _same(sent: Any, back: Any, path: str) -> None:
    """``back`` holds every value of ``sent`` (defaults may add more); timestamps compare as instants."""
    if isinstance(sent, dict):
        for key, value in sent.items():
            _same(value, back[key], f"{path}.{key}")
    elif isinstance(sent, list):
        assert len(back) == len(sent), path
        for i, (a, b) in enumerate(zip(sent, back, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(sent, str) and path.endswith(("_ts", ".ts", ".created")):
        assert datetime.fromisoformat(back.replace("Z", "+00:00")) == datetime.fromisoformat(
            sent.replace("Z", "+00:00")
        ), path
    else:
        assert back == sent and type(back) is type(sent), path


@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_round_trip_keeps_every_value(model: type[Versioned]) -> None:
    data = example(model)
    _same(data, json.loads(model.parse(data).to_json_bytes()), model.SCHEMA)


@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_schema_fields_may_be_left_out_and_are_filled_in(model: type[Versioned]) -> None:
    data = example(model)
    del data["schema"], data["schema_version"]
    doc = model.parse(data)
    assert doc.to_dict()["schema"] == model.SCHEMA
    assert doc.to_dict()["schema_version"] == model.VERSION


# -- strictness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_stray_field_is_refused_by_name(model: type[Versioned]) -> None:
    data = example(model)
    data["surprise_field"] = 1
    msg = _refused(model, data)
    assert "surprise_field" in msg
    assert "unknown field" in msg


# relative to the model's VERSION: 0, the next version, a far one, the right one as text, a
# boolean, the right one as a float
_BAD_VERSIONS = {
    "zero": lambda v: 0,
    "next": lambda v: v + 1,
    "far": lambda v: 99,
    "text": str,
    "bool": lambda v: True,
    "float": float,
}


@pytest.mark.parametrize("model", MODELS, ids=ids)
@pytest.mark.parametrize("bad", list(_BAD_VERSIONS))
def test_unknown_schema_version_is_refused(model: type[Versioned], bad: str) -> None:
    version = _BAD_VERSIONS[bad](model.VERSION)
    data = example(model)
    data["schema_version"] = version
    msg = _refused(model, json.dumps(data))
    assert "schema_version" in msg
    if bad in ("zero", "next", "far"):
        assert f"unsupported schema_version {version}" in msg


@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_wrong_schema_name_is_refused(model: type[Versioned]) -> None:
    other = MODELS[(MODELS.index(model) + 1) % len(MODELS)]
    data = example(model)
    data["schema"] = other.SCHEMA
    msg = _refused(model, data)
    assert "schema" in msg and other.SCHEMA in msg and model.SCHEMA in msg


@pytest.mark.parametrize("model", MODELS, ids=ids)
def test_missing_required_field_is_named(model: type[Versioned]) -> None:
    required = [
        name if f.alias is None else f.alias for name, f in model.model_fields.items() if f.is_required()
    ]
    assert required, "every document has required fields"
    for name in required:
        data = example(model)
        del data[name]
        msg = _refused(model, data)
        assert f"{name}: Field required" in msg


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"null", b"[]", b"42", b'"x"', b"\xff\xfe", "{\ud800}", [1], 42, None]
)
def test_non_objects_are_refused(payload: Any) -> None:
    _refused(Alert, payload)


def test_nested_stray_field_is_named() -> None:
    data = _alert()
    data["model"]["extra"] = "x"
    assert "model.extra: unknown field" in _refused(Alert, data)


# -- alert fields --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expected_qty", "3"),
        ("expected_qty", 3.0),
        ("expected_qty", True),
        ("expected_qty", -1),
        ("seq", -1),
        ("seq", 2**63),
        ("frames", 0),
        ("is_historical", 1),
        ("is_historical", "true"),
        ("p_expected", 1.5),
        ("p_expected", -0.1),
        ("p_expected", "0.5"),
        ("frame_ts", 1714564800),
        ("frame_ts", "2024-05-01T12:00:00"),  # no offset: ambiguous
        ("frame_ts", "yesterday"),
        ("alert_id", "4133728A-C4E6-41D5-9EDD-3735DA1A2174"),  # canonical form is lower case
        ("alert_id", "not-a-uuid"),
        ("site", "dc/berlin"),
        ("device", "jetson+1"),
        ("camera", "cam#0"),
        ("bin_id", ""),
        ("bin_id", "a b"),
        ("bin_id", "x" * 129),
        ("bin_id", 121),
        ("snapshot", {"uri": "file:///x.jpg"}),
        ("model", None),
    ],
)
def test_alert_field_rules(field: str, value: Any) -> None:
    assert field in _refused(Alert, _alert(**{field: value}))


def test_alert_nan_is_refused_on_the_wire() -> None:
    text = json.dumps(_alert()).replace('"p_expected": 0.125', '"p_expected": NaN')
    assert "NaN" in text
    assert "p_expected" in _refused(Alert, text)


def test_alert_accepts_integral_floats_as_int_probabilities() -> None:
    # 1 is a valid float; p_expected may be exactly 0 or 1
    doc = Alert.parse(_alert(p_expected=1, distribution={"3": 1}))
    assert doc.p_expected == 1.0 and isinstance(doc.p_expected, float)


@pytest.mark.parametrize(
    ("dist", "why"),
    [
        ({}, "empty"),
        ({"0": 0.5, "1": 0.4}, "sum"),
        ({"a": 1.0}, "not an item count"),
        ({"-1": 1.0}, "not an item count"),
        ({"01": 1.0}, "not an item count"),
        ({"0": 0.5, "5+": 0.25, "6": 0.25}, "largest"),
        ({"4+": 0.5, "5+": 0.5}, "more than one"),
        ({"5": 0.5, "5+": 0.5}, "twice"),
        ({"0": 1.5, "1": -0.5}, "less than or equal to 1"),
    ],
)
def test_distribution_rules(dist: dict[str, float], why: str) -> None:
    msg = _refused(Alert, _alert(distribution=dist))
    assert "distribution" in msg and why in msg


def test_distribution_tolerates_rounding() -> None:
    dist = {"0": 0.333, "1": 0.333, "2": 0.333}  # sums to 0.999
    assert Alert.parse(_alert(distribution=dist)).distribution == dist


@pytest.mark.parametrize(
    ("custom", "why"),
    [
        ({f"k{i}": i for i in range(17)}, "at most 16"),
        ({"k" * 65: 1}, "at most 64"),
        ({"": 1}, "at least 1"),
        ({"k": "v" * 257}, "at most 256"),
        ({"k": [1]}, "values must be a string, number or boolean"),
        ({"k": {"nested": 1}}, "values must be a string, number or boolean"),
        ({"k": None}, "values must be a string, number or boolean"),
    ],
)
def test_custom_is_flat_and_bounded(custom: dict[str, Any], why: str) -> None:
    msg = _refused(Alert, _alert(custom=custom))
    assert "custom" in msg and why in msg


def test_custom_keeps_scalar_types() -> None:
    custom = {"s": "x", "i": 1, "f": 1.5, "b": True, "z": 0}
    doc = Alert.parse(json.dumps(_alert(custom=custom)))
    assert doc.custom == custom
    assert [type(v) for v in doc.custom.values()] == [str, int, float, bool, int]


def test_published_ts_is_set_at_publish_time() -> None:
    data = _alert()
    del data["published_ts"]
    alert = Alert.parse(data)
    assert alert.published_ts is None
    alert.published_ts = datetime.now(timezone.utc)  # validated assignment
    assert Alert.parse(alert.to_json_bytes()).published_ts == alert.published_ts
    with pytest.raises(ValueError, match="timezone"):
        alert.published_ts = datetime.now()  # naive


def test_timestamps_keep_their_instant_across_offsets() -> None:
    doc = Alert.parse(_alert(frame_ts="2024-05-01T14:00:00+02:00"))
    assert doc.frame_ts == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert doc.frame_ts.utcoffset() == timedelta(hours=2)


def test_model_ref_precision_and_backend() -> None:
    ok = ModelRef(name="m", version=1, sha256="f" * 64, precision="fp16", backend="onnxruntime-cpu")
    assert ok.backend == "onnxruntime-cpu"
    for bad in ({"precision": "int4"}, {"backend": "Tensor RT"}, {"sha256": "F" * 64}, {"version": -1}):
        data = _alert()
        data["model"].update(bad)
        assert f"model.{next(iter(bad))}" in _refused(Alert, data)


# -- status / stats ------------------------------------------------------------------------------
def test_status_last_will_is_minimal() -> None:
    will = Status(state="offline", session=4, ts=datetime.now(timezone.utc), agent_version="0.1.0")
    back = Status.parse(will.to_json_bytes())
    assert back == will and back.model is None and back.cameras == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"state": "sleeping"}, "state"),
        ({"cameras": {"cam/0": {"state": "live"}}}, "cameras"),
        ({"cameras": {"cam0": {"state": "dead"}}}, "cameras.cam0.state"),
        ({"agent_version": ""}, "agent_version"),
    ],
)
def test_status_rules(change: dict[str, Any], field: str) -> None:
    data = example(Status)
    data.update(change)
    assert field in _refused(Status, data)


def test_stage_latency_p99_not_below_p50() -> None:
    with pytest.raises(ValueError, match="p99_ms"):
        StageLatency(p50_ms=5.0, p99_ms=4.0, n=10)
    data = example(Stats)
    data["latency"]["infer"]["p99_ms"] = 1.0
    assert "latency.infer" in _refused(Stats, data)


def test_stats_defaults_are_zero() -> None:
    stats = Stats(ts=datetime.now(timezone.utc), uptime_s=1.0, fps=0.0)
    assert stats.outbox_dropped == 0 and stats.invalid_messages == {} and stats.backend is None
    assert stats.verdicts == {}
    assert Stats.parse(stats.to_json_bytes()) == stats


def test_stats_version_1_from_an_older_agent_is_read_as_version_3() -> None:
    v1 = example(Stats)
    for field in ("verdicts", "publish_refused", "refused_waiting", "last_refusal"):
        del v1[field]
    v1["schema_version"] = 1
    stats = Stats.parse(json.dumps(v1))
    assert stats.schema_version == 3 and stats.verdicts == {} and stats.publish_refused == 0
    assert stats.alerts_published == v1["alerts_published"]
    assert json.loads(stats.to_json_bytes())["schema_version"] == 3
    # verdicts did not exist in version 1: a version 1 payload carrying them is refused
    v1["verdicts"] = {"match": 1}
    assert "verdicts is not part of binwatch.stats version 1" in _refused(Stats, v1)


@pytest.mark.parametrize(
    "verdicts",
    [
        {"match": -1},
        {"match": 1.5},
        {"match": "3"},
        {"": 1},
        {"x" * 65: 1},
        {f"v{i}": 1 for i in range(17)},
    ],
)
def test_stats_verdicts_are_bounded_counters(verdicts: dict[str, Any]) -> None:
    data = example(Stats)
    data["verdicts"] = verdicts
    assert "verdicts" in _refused(Stats, data)


# -- model rollout -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("signature", "why"),
    [
        ("not base64!", "not valid base64"),
        ("AAAA", "decodes to 3 bytes"),
        ("", "decodes to 0 bytes"),
    ],
)
def test_desired_signature_is_64_byte_base64(signature: str, why: str) -> None:
    data = example(ModelDesired)
    data["signature"] = signature
    msg = _refused(ModelDesired, data)
    assert "signature" in msg and why in msg


# -- bins ----------------------------------------------------------------------------------------
def test_bin_event_expected_falls_back_to_items() -> None:
    data = example(BinEvent)
    assert BinEvent.parse(data).expected() == 3
    del data["expected_qty"]
    assert BinEvent.parse(data).expected() == 3  # 2 + 1
    del data["items"]
    assert BinEvent.parse(data).expected() is None


@pytest.mark.parametrize(("frames", "ok"), [(1, True), (32, True), (0, False), (33, False)])
def test_bin_event_frames_bounds(frames: int, ok: bool) -> None:
    data = example(BinEvent)
    data["frames"] = frames
    if ok:
        assert BinEvent.parse(data).frames == frames
    else:
        assert "frames" in _refused(BinEvent, data)


def test_item_needs_asin_or_sku() -> None:
    assert ItemLine(sku="S1", quantity=1).asin is None
    with pytest.raises(ValueError, match="asin or a sku"):
        ItemLine(name="thing", quantity=1)


# -- commands ------------------------------------------------------------------------------------
def test_command_args_are_json_without_nan_or_deep_nesting() -> None:
    CommandRequest.parse({"request_id": "r", "args": {"x": [1, {"y": None}]}})
    text = '{"request_id": "r", "args": {"x": NaN}}'
    assert "args" in _refused(CommandRequest, text)
    deep: Any = 1
    for _ in range(12):
        deep = [deep]
    assert "nested deeper" in _refused(CommandRequest, {"request_id": "r", "args": {"x": deep}})


def test_command_result_ok_is_a_boolean() -> None:
    assert "ok" in _refused(CommandResult, {"request_id": "r", "ok": "yes"})
    assert CommandResult.parse({"request_id": "r", "ok": False}).data == {}


def test_model_desired_version_1_is_read_as_version_2_without_rollback() -> None:
    v1 = example(ModelDesired)
    del v1["rollback"]
    v1["schema_version"] = 1
    desired = ModelDesired.parse(json.dumps(v1))
    assert desired.schema_version == 2 and desired.rollback is False
    assert ModelDesired.parse({**example(ModelDesired), "rollback": True}).rollback is True


def test_alert_version_1_reads_as_version_2_without_snapshot_topic() -> None:
    data = _alert(schema_version=1)
    data["snapshot"] = {"uri": "file:///s/1.jpg", "sha256": "b" * 64}
    alert = Alert.parse(data)
    assert alert.schema_version == 2 and alert.snapshot is not None and alert.snapshot.topic is None


def test_review_confirmed_needs_a_count_and_others_refuse_one() -> None:
    from contract.messages import Review
    from tests.contract.samples import example as ex

    ok = Review.parse(ex(Review))
    assert ok.decision == "confirmed" and ok.actual_qty == 2
    no_count = {**ex(Review), "actual_qty": None}
    assert "needs actual_qty" in _refused(Review, no_count)
    false_alarm = {**ex(Review), "decision": "false_alarm"}
    assert "only for decision 'confirmed'" in _refused(Review, false_alarm)
    assert Review.parse({**false_alarm, "actual_qty": None}).decision == "false_alarm"
