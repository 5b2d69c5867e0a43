"""Manifests: our own form, and ABID metadata JSON as the vendor publishes it (real files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contract import ContractError, ManifestEntry, parse_manifest
from tests.contract.samples import example

ABID_EXAMPLE: dict[str, Any] = {
    "BIN_FCSKU_DATA": {
        "B000C33MI2": {
            "asin": "B000C33MI2",
            "height": {"unit": "IN", "value": 2.79921259557},
            "name": "FRAM XG7317 ULTRA Spin-On Oil Filter with Sure Grip",
            "normalizedName": "FRAM XG7317 ULTRA Spin-On Oil Filter with Sure Grip",
            "quantity": 4,
            "weight": {"unit": "pounds", "value": 0.3000050461296},
        },
        "B0050Z27KG": {"asin": "B0050Z27KG", "name": "Suncatcher", "quantity": 2},
    },
    "EXPECTED_QUANTITY": 6,
}


def _abid(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(ABID_EXAMPLE))
    data.update(changes)
    return data


def _refused(payload: Any, bin_id: str = "00001") -> str:
    with pytest.raises(ContractError) as info:
        parse_manifest(payload, bin_id)
    return str(info.value)


# -- real ABID metadata --------------------------------------------------------------------------
def test_every_real_abid_metadata_file_gives_its_expected_quantity(abid_sample: Path) -> None:
    files = sorted((abid_sample / "metadata").glob("*.json"))
    assert len(files) >= 500, "the sample holds 578 metadata files"
    families = {"padded": 0, "unpadded": 0}
    for path in files:
        raw = path.read_bytes()
        meta = json.loads(raw)
        entry = parse_manifest(raw, path.stem)
        assert entry.bin_id == path.stem  # keys verbatim: 121 and 00121 differ
        assert entry.expected_qty == meta["EXPECTED_QUANTITY"], path.name
        assert [i.asin for i in entry.items] == [s["asin"] for s in meta["BIN_FCSKU_DATA"].values()]
        assert sum(i.quantity for i in entry.items) == sum(
            s["quantity"] for s in meta["BIN_FCSKU_DATA"].values()
        )
        # what we re-publish in our own form parses strictly and says the same
        assert parse_manifest(entry.to_json_bytes(), path.stem) == entry
        families["padded" if path.stem.startswith("0") else "unpadded"] += 1
    assert families["padded"] and families["unpadded"], families


def test_real_abid_agrees_with_the_dataset_reader(abid_sample: Path) -> None:
    abid = pytest.importorskip("contract.abid")
    for path in sorted((abid_sample / "metadata").glob("*.json"))[::25]:
        meta = abid.read_metadata(path)
        assert parse_manifest(meta, path.stem).expected_qty == abid.expected_quantity(meta)


# -- ABID form, tolerated vendor extras ------------------------------------------------------------
def test_abid_vendor_extras_and_synthetic_marker_are_tolerated() -> None:
    data = _abid(image_fname="121.jpg", synthetic={"seed": 3, "generator": "binwatch"}, other=[1, 2])
    data["BIN_FCSKU_DATA"]["B0050Z27KG"]["unknown_vendor_field"] = {"x": 1}
    entry = parse_manifest(json.dumps(data), "121")
    assert entry.expected_qty == 6
    assert [(i.asin, i.quantity) for i in entry.items] == [("B000C33MI2", 4), ("B0050Z27KG", 2)]
    assert entry.items[1].name == "Suncatcher"


def test_abid_empty_bin() -> None:
    entry = parse_manifest(b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0, "image_fname": "121.jpg"}', "121")
    assert entry.expected_qty == 0 and entry.items == []


def test_abid_expected_quantity_wins_over_item_sum() -> None:
    assert parse_manifest(_abid(EXPECTED_QUANTITY=9), "b1").expected_qty == 9


def test_abid_missing_expected_quantity_is_the_item_sum() -> None:
    data = _abid()
    del data["EXPECTED_QUANTITY"]
    assert parse_manifest(data, "b1").expected_qty == 6
    assert parse_manifest({"BIN_FCSKU_DATA": {}}, "b1").expected_qty == 0


def test_abid_item_without_asin_field_uses_its_key() -> None:
    data = _abid()
    del data["BIN_FCSKU_DATA"]["B0050Z27KG"]["asin"]
    assert parse_manifest(data, "b1").items[1].asin == "B0050Z27KG"


def test_abid_long_vendor_names_are_cut_not_refused() -> None:
    data = _abid()
    data["BIN_FCSKU_DATA"]["B0050Z27KG"]["name"] = "n" * 5000
    assert len(parse_manifest(data, "b1").items[1].name or "") == 2048


@pytest.mark.parametrize("value", [-1, 3.0, 3.5, "3", True, None, [3], {"n": 3}])
def test_abid_expected_quantity_must_be_a_non_negative_int(value: Any) -> None:
    assert "EXPECTED_QUANTITY" in _refused(_abid(EXPECTED_QUANTITY=value))


@pytest.mark.parametrize("value", [-1, 1.5, "2", None, False])
def test_abid_item_quantity_must_be_a_non_negative_int(value: Any) -> None:
    data = _abid()
    data["BIN_FCSKU_DATA"]["B0050Z27KG"]["quantity"] = value
    assert "BIN_FCSKU_DATA.B0050Z27KG.quantity" in _refused(data)


@pytest.mark.parametrize("skus", [[], "x", 3, {"A": 3}, {"A": {"name": "no quantity"}}])
def test_abid_bad_sku_data_is_refused(skus: Any) -> None:
    assert "BIN_FCSKU_DATA" in _refused(_abid(BIN_FCSKU_DATA=skus))


# -- our own form --------------------------------------------------------------------------------
def test_own_form_round_trip_and_bin_id_from_topic() -> None:
    data = example(ManifestEntry)
    entry = parse_manifest(json.dumps(data), "P-1-A123")
    assert entry == ManifestEntry.parse(data)
    del data["bin_id"], data["schema"], data["schema_version"]
    assert parse_manifest(data, "P-1-A123") == entry


def test_own_form_bin_id_must_match_the_topic() -> None:
    assert "does not match" in _refused(example(ManifestEntry), "P-9")


def test_own_form_is_strict() -> None:
    data = example(ManifestEntry)
    data["EXPECTED_QUANTITY"] = 3  # an ABID key inside our form is a stray field
    assert "EXPECTED_QUANTITY: unknown field" in _refused(data, "P-1-A123")
    assert "expected_qty: Field required" in _refused({"bin_id": "b1"}, "b1")


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1]", b"3", b"\xff", "[]", 3, None])
def test_non_objects_are_refused(payload: Any) -> None:
    assert "invalid manifest" in _refused(payload)


@pytest.mark.parametrize("bin_id", ["", "a/b", "+", "#", "a b", "x" * 200])
def test_bad_bin_id_is_refused(bin_id: str) -> None:
    assert "bin_id" in _refused(ABID_EXAMPLE, bin_id)
