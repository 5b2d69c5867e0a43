"""The exported JSON Schemas (one file per top-level document) and a parser by kind.

``docs/schemas/<schema>.v<version>.json`` is generated from the pydantic models by
``binwatch contract schema --out docs/schemas`` and committed; a test fails when it is stale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from contract.base import ContractError, Versioned
from contract.bundle import BundleManifest
from contract.card import ModelCard
from contract.files import write_atomic
from contract.messages import (
    Alert,
    BinEvent,
    BinOutcome,
    CommandRequest,
    CommandResult,
    ManifestEntry,
    ModelDesired,
    ModelReported,
    Result,
    Review,
    Stats,
    Status,
    parse_manifest,
)

__all__ = [
    "DOCUMENTS",
    "KIND_ALIASES",
    "TOPIC_DOCUMENTS",
    "document_for",
    "json_schema",
    "parse_any",
    "schema_filename",
    "schema_files",
    "stale_schemas",
    "write_schemas",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "https://binwatch.dev/schemas/"

DOCUMENTS: tuple[type[Versioned], ...] = (
    Alert,
    Result,
    Status,
    Stats,
    ModelDesired,
    ModelReported,
    BinEvent,
    BinOutcome,
    Review,
    ManifestEntry,
    CommandRequest,
    CommandResult,
    BundleManifest,
    ModelCard,
)
"""Every top-level document, in the order docs list them."""

_BY_SCHEMA: dict[str, type[Versioned]] = {m.SCHEMA: m for m in DOCUMENTS}

KIND_ALIASES: dict[str, str] = {m.SCHEMA.split(".", 1)[1]: m.SCHEMA for m in DOCUMENTS}
KIND_ALIASES["manifest"] = ManifestEntry.SCHEMA  # ours or ABID metadata, via parse_manifest
"""Short names (``alert``, ``status``, ``card``, ...) -> schema names."""

TOPIC_DOCUMENTS: dict[str, str] = {
    "status": Status.SCHEMA,
    "alert_mismatch": Alert.SCHEMA,
    "result": Result.SCHEMA,
    "stats": Stats.SCHEMA,
    "model_reported": ModelReported.SCHEMA,
    "model_desired": ModelDesired.SCHEMA,
    "fleet_desired": ModelDesired.SCHEMA,
    "group_desired": ModelDesired.SCHEMA,
    "bin": BinEvent.SCHEMA,
    "bin_outcome": BinOutcome.SCHEMA,
    "alert_review": Review.SCHEMA,
    "cmd": CommandRequest.SCHEMA,
    "cmd_result": CommandResult.SCHEMA,
    "manifest": ManifestEntry.SCHEMA,
}
"""Topic kind (see :data:`contract.topics.KINDS`) -> the schema of its payload."""


def document_for(kind: str) -> type[Versioned]:
    """The model for a schema name (``binwatch.alert``), short name (``alert``) or topic kind
    (``alert_mismatch``); ContractError listing the valid names otherwise."""
    name = TOPIC_DOCUMENTS.get(kind) or KIND_ALIASES.get(kind) or kind
    model = _BY_SCHEMA.get(name)
    if model is None:
        valid = ", ".join(sorted(KIND_ALIASES))
        raise ContractError(f"unknown document kind {kind!r}; use one of: {valid} (or binwatch.<name>)")
    return model


def parse_any(kind: str, payload: bytes | str | dict[str, Any], *, bin_id: Optional[str] = None) -> Versioned:
    """Parse ``payload`` as ``kind`` (see :func:`document_for`). Manifests go through
    :func:`~contract.messages.parse_manifest` (ABID metadata accepted) and need ``bin_id``."""
    model = document_for(kind)
    if model is ManifestEntry:
        if bin_id is None:
            raise ContractError("a manifest needs its bin_id (from the topic or the file name)")
        return parse_manifest(payload, bin_id)
    return model.parse(payload)


def schema_filename(model: type[Versioned]) -> str:
    return f"{model.SCHEMA}.v{model.VERSION}.json"


def json_schema(model: type[Versioned]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of what ``model.parse`` accepts."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    doc = (model.__doc__ or "").strip()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_ID_BASE + schema_filename(model),
        **schema,
        "title": model.SCHEMA,
        **({"description": doc} if doc else {}),
    }


def schema_files() -> dict[str, bytes]:
    """File name -> bytes, exactly what :func:`write_schemas` writes (stable: sorted keys, LF)."""
    return {
        schema_filename(m): (
            json.dumps(json_schema(m), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ).encode("utf-8")
        for m in DOCUMENTS
    }


def write_schemas(out_dir: os.PathLike[str] | str) -> list[Path]:
    """Write one JSON Schema file per top-level document into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in schema_files().items():
        paths.append(write_atomic(out / name, data))
    return paths


def stale_schemas(out_dir: os.PathLike[str] | str) -> list[str]:
    """What differs between ``out_dir`` and freshly generated schemas: changed, missing and leftover
    ``binwatch.*.json`` files. Empty when up to date."""
    out = Path(out_dir)
    fresh = schema_files()
    problems = []
    for name, data in fresh.items():
        path = out / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.read_bytes() != data:
            problems.append(f"{name}: out of date")
    if out.is_dir():
        problems.extend(
            f"{p.name}: no longer generated (a removed or renamed document)"
            for p in sorted(out.glob("binwatch.*.json"))
            if p.name not in fresh
        )
    return problems
