"""``binwatch contract``: export the JSON Schemas and validate documents against them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from binwatch.cliutil import cannot_write, fail

app = typer.Typer(
    help="Wire and file formats (MQTT payloads, model card, bundle manifest): JSON Schemas and validation.",
    no_args_is_help=True,
)


@app.command("schema")
def schema_cmd(
    out: Path = typer.Option(
        Path("docs/schemas"), "--out", "-o", help="Folder for the <schema>.v<version>.json files."
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if the files in --out are missing or out of date."
    ),
) -> None:
    """Write one JSON Schema (draft 2020-12) per top-level document, e.g. binwatch.alert.v1.json."""
    from contract.schemas import stale_schemas, write_schemas

    if check:
        problems = stale_schemas(out)
        if problems:
            for p in problems:
                typer.echo(f"{out}/{p}", err=True)
            raise fail(f"schemas in {out} are stale: run `binwatch contract schema --out {out}`", 1)
        typer.echo(f"{out}: schemas up to date")
        return
    try:
        paths = write_schemas(out)
    except OSError as e:
        raise cannot_write(out, e) from e
    for path in paths:
        typer.echo(str(path))


@app.command("validate")
def validate_cmd(
    kind: str = typer.Argument(
        ...,
        help="alert, result, status, stats, model_desired, model_reported, bin, manifest (ABID metadata "
        "accepted), cmd, cmd_result, bundle_manifest, card; or a schema name such as binwatch.alert.",
    ),
    file: Path = typer.Argument(..., help="The JSON file to check ('-' reads standard input)."),
    bin_id: Optional[str] = typer.Option(
        None, "--bin-id", help="For manifests: the bin id (default: the file name without .json)."
    ),
) -> None:
    """Check a JSON document against its contract; print what is wrong (field by field) and exit 1."""
    from contract.base import ContractError
    from contract.messages import ManifestEntry
    from contract.schemas import document_for, parse_any

    try:
        model = document_for(kind)
    except ContractError as e:
        raise fail(str(e), 2) from e
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as e:
        raise fail(f"cannot read {file}: {e.strerror or e}", 2) from e
    if model is ManifestEntry and bin_id is None:
        if str(file) == "-":
            raise fail("a manifest read from standard input needs --bin-id", 2)
        bin_id = file.name.removesuffix(".json")
    try:
        doc = parse_any(kind, data, bin_id=bin_id)
    except ContractError as e:
        raise fail(f"{file}: {e}", 1) from e
    summary = f"{file}: valid {doc.SCHEMA} v{doc.VERSION}"
    if isinstance(doc, ManifestEntry):
        summary += f" (bin {doc.bin_id}, expected_qty {doc.expected_qty})"
    typer.echo(summary)


@app.command("list")
def list_cmd() -> None:
    """List the documents: short name, schema name and version, and the MQTT topic that carries it."""
    from contract.schemas import DOCUMENTS, TOPIC_DOCUMENTS, schema_filename

    for model in DOCUMENTS:
        topics = [k for k, s in TOPIC_DOCUMENTS.items() if s == model.SCHEMA]
        where = ", ".join(topics) if topics else "file"
        typer.echo(f"{model.SCHEMA.split('.', 1)[1]:<16} {schema_filename(model):<34} {where}")
