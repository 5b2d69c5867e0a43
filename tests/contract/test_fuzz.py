"""Junk never gets through and never raises anything but ContractError (hypothesis).

For every top-level document: arbitrary bytes, arbitrary JSON values, objects with unknown keys,
and a valid payload with one field (at any depth) replaced by a value of the wrong JSON type.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import ContractError
from contract.base import Versioned
from contract.card import ModelCard
from contract.messages import parse_manifest
from tests.contract.samples import EXAMPLES, FREE_FORM, example

MODELS = list(EXAMPLES)
# The model card (lead-owned) keeps pydantic's lax numbers (e.g. "5" for an int), so the
# wrong-type mutation is run on the wire messages; it still gets every other junk test.
STRICT_MODELS = [m for m in MODELS if m is not ModelCard]

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


def _must_refuse(model: type[Versioned], payload: Any) -> ContractError:
    try:
        model.parse(payload)
    except ContractError as e:
        return e
    raise AssertionError(f"{model.SCHEMA} accepted junk: {payload!r}")


# Parsing is cheap and generating examples is not: every example is tried on every model.
@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    for model in MODELS:
        _must_refuse(model, data)


@FUZZ
@given(value=json_values)
def test_arbitrary_json_values(value: Any) -> None:
    raw = json.dumps(value).encode()
    for model in MODELS:
        _must_refuse(model, raw)
        if isinstance(value, dict):
            _must_refuse(model, value)


VALID_TEXT = {m: json.dumps(example(m)) for m in MODELS}
KNOWN = {f.alias or name for m in MODELS for name, f in m.model_fields.items()}
unknown_keys = st.text(max_size=12).filter(lambda k: k not in KNOWN)


@FUZZ
@given(
    payload=st.dictionaries(unknown_keys, json_values, min_size=1, max_size=3),
    key=unknown_keys,
    value=json_values,
)
def test_objects_with_unknown_keys(payload: dict[str, Any], key: str, value: Any) -> None:
    extra = ", " + json.dumps({key: value})[1:]  # '"key": value}'
    for model in MODELS:
        assert "unknown field" in str(_must_refuse(model, payload)), model
        # an unknown key next to a valid payload is refused by name
        valid_with_extra = VALID_TEXT[model][:-1] + extra
        assert f"{key}: unknown field" in str(_must_refuse(model, valid_with_extra)), model


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON document whose type is fixed by the contract."""
    out = []
    if path and value is not None:
        out.append(path)
    if path in FREE_FORM:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*path, i)))
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


WRONG = {
    "str": st.integers() | st.floats(allow_nan=False) | st.booleans() | st.lists(st.integers(), max_size=2),
    "number": st.text(max_size=5) | st.booleans() | st.lists(st.integers(), max_size=2) | st.just({}),
    "bool": st.integers() | st.text(max_size=5) | st.floats(allow_nan=False) | st.just([]),
    "list": st.text(max_size=5) | st.integers() | st.booleans() | st.just({"a": 1}),
    "dict": st.text(max_size=5) | st.integers() | st.booleans() | st.lists(st.integers(), max_size=2),
}


def _mutate(model: type[Versioned], data: st.DataObject) -> None:
    payload = example(model)
    path = data.draw(st.sampled_from(_paths(payload)), label=f"{model.SCHEMA} path")
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    original = parent[path[-1]]
    wrong = WRONG[_json_type(original)]
    if isinstance(original, int) and not isinstance(original, bool):
        wrong = wrong | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
    parent[path[-1]] = data.draw(wrong, label="wrong value")
    as_text = data.draw(st.booleans(), label="as JSON text")
    err = _must_refuse(model, json.dumps(payload) if as_text else payload)
    assert str(path[0]) in str(err), (path, str(err))


@FUZZ
@given(data=st.data())
def test_one_field_of_the_wrong_type(data: st.DataObject) -> None:
    for model in STRICT_MODELS:
        _mutate(model, data)


@FUZZ
@given(data=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_manifest_junk(data: bytes) -> None:
    # ABID form is tolerant of extra keys, so junk that happens to be a valid ABID document is fine;
    # anything else must be a ContractError.
    try:
        entry = parse_manifest(data, "b1")
    except ContractError:
        return
    meta = json.loads(data)
    assert isinstance(meta, dict) and ("EXPECTED_QUANTITY" in meta or "BIN_FCSKU_DATA" in meta)
    assert entry.expected_qty >= 0
