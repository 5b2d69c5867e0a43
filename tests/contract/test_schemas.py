"""Exported JSON Schemas (committed under docs/schemas) and the ``binwatch contract`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from contract import ContractError
from contract.cli import app
from contract.schemas import DOCUMENTS, document_for, parse_any, schema_filename, stale_schemas, write_schemas
from tests.contract.samples import EXAMPLES, example
from tests.hw import REPO

DOCS_SCHEMAS = REPO / "docs" / "schemas"
REGENERATE = "run `binwatch contract schema --out docs/schemas` and commit the result"
runner = CliRunner()


def test_committed_schemas_are_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "schemas"
    write_schemas(fresh)
    want = {p.name: p.read_bytes() for p in fresh.iterdir()}
    have = {p.name: p.read_bytes() for p in DOCS_SCHEMAS.glob("*.json")} if DOCS_SCHEMAS.is_dir() else {}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    changed = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    assert not (missing or extra or changed), (
        f"docs/schemas is stale (missing {missing}, no longer generated {extra}, changed {changed}): "
        + REGENERATE
    )
    assert stale_schemas(DOCS_SCHEMAS) == []


def test_one_schema_file_per_document() -> None:
    assert {schema_filename(m) for m in DOCUMENTS} == {f"{m.SCHEMA}.v{m.VERSION}.json" for m in EXAMPLES}
    assert "binwatch.alert.v2.json" in {schema_filename(m) for m in DOCUMENTS}


def test_stale_schemas_reports_each_file(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    (tmp_path / "binwatch.alert.v2.json").write_text("{}")
    (tmp_path / "binwatch.status.v1.json").unlink()
    (tmp_path / "binwatch.gone.v1.json").write_text("{}")
    assert stale_schemas(tmp_path) == [
        "binwatch.alert.v2.json: out of date",
        "binwatch.status.v1.json: missing",
        "binwatch.gone.v1.json: no longer generated (a removed or renamed document)",
    ]


@pytest.mark.parametrize("model", DOCUMENTS, ids=[m.SCHEMA for m in DOCUMENTS])
def test_exported_schema_agrees_with_the_model(model: Any) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS_SCHEMAS / schema_filename(model)).read_text())
    assert schema["$id"].endswith(schema_filename(model))
    assert schema["additionalProperties"] is False
    assert schema["properties"]["schema"]["const"] == model.SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    good = example(model)
    assert list(validator.iter_errors(good)) == []
    for bad in ({"stray": 1}, {"schema_version": model.VERSION + 1}, {"schema": "binwatch.other"}):
        assert list(validator.iter_errors({**good, **bad})), bad
        with pytest.raises(ContractError):
            model.parse({**good, **bad})


def test_document_for_accepts_short_names_schema_names_and_topic_kinds() -> None:
    assert document_for("alert") is document_for("binwatch.alert") is document_for("alert_mismatch")
    assert document_for("manifest").SCHEMA == "binwatch.manifest_entry"
    with pytest.raises(ContractError, match="unknown document kind 'nope'; use one of: alert"):
        document_for("nope")


def test_parse_any_routes_manifests_through_the_abid_reader() -> None:
    entry = parse_any("manifest", {"EXPECTED_QUANTITY": 2, "BIN_FCSKU_DATA": {}}, bin_id="b1")
    assert entry.expected_qty == 2
    with pytest.raises(ContractError, match="bin_id"):
        parse_any("manifest", {"EXPECTED_QUANTITY": 2})


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_schema_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    res = runner.invoke(app, ["schema", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(schema_filename(m) for m in DOCUMENTS)
    assert runner.invoke(app, ["schema", "--out", str(out), "--check"]).exit_code == 0
    (out / "binwatch.bin.v2.json").write_text("{}")
    res = runner.invoke(app, ["schema", "--out", str(out), "--check"])
    assert res.exit_code == 1
    assert "binwatch.bin.v2.json: out of date" in res.output
    assert "binwatch contract schema --out" in res.output


def _write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_cli_validate_accepts_a_valid_document(tmp_path: Path) -> None:
    path = _write(tmp_path, "alert.json", example(document_for("alert")))
    res = runner.invoke(app, ["validate", "alert", str(path)])
    assert res.exit_code == 0, res.output
    assert "valid binwatch.alert v2" in res.output


def test_cli_validate_names_the_bad_field(tmp_path: Path) -> None:
    data = example(document_for("status"))
    data["state"] = "sleeping"
    data["stray"] = True
    res = runner.invoke(app, ["validate", "binwatch.status", str(_write(tmp_path, "s.json", data))])
    assert res.exit_code == 1
    assert "stray: unknown field" in res.output
    assert "state: Input should be 'online', 'stopped' or 'offline'" in res.output


def test_cli_validate_abid_metadata_takes_the_bin_id_from_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "00121.json", {"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0})
    res = runner.invoke(app, ["validate", "manifest", str(path)])
    assert res.exit_code == 0, res.output
    assert "bin 00121, expected_qty 0" in res.output
    res = runner.invoke(app, ["validate", "manifest", str(path), "--bin-id", "a/b"])
    assert res.exit_code == 1 and "bin_id" in res.output


def test_cli_validate_bad_usage_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", "nope", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "unknown document kind" in res.output
    res = runner.invoke(app, ["validate", "alert", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "cannot read" in res.output


def test_cli_validate_reads_stdin() -> None:
    res = runner.invoke(app, ["validate", "cmd", "-"], input=json.dumps({"request_id": "r1"}))
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", "cmd", "-"], input="{")
    assert res.exit_code == 1 and "Invalid JSON" in res.output


def test_cli_list_names_every_document() -> None:
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for model in DOCUMENTS:
        assert schema_filename(model) in res.output


def test_root_cli_has_the_contract_group() -> None:
    from binwatch.cli import app as root

    res = runner.invoke(root, ["contract", "--help"])
    assert res.exit_code == 0
    assert "schema" in res.output and "validate" in res.output
