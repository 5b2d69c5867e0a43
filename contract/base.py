"""Base classes for every wire and file format: strict, versioned pydantic v2 models."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

__all__ = ["ContractError", "Strict", "Versioned", "canonical_json", "utcnow"]

V = TypeVar("V", bound="Versioned")


class ContractError(ValueError):
    """A payload or file that does not match its contract; the message names what is wrong."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces, UTF-8): what signatures and hashes cover."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


class Strict(BaseModel):
    """A section of a format: unknown fields are refused, names are the wire names."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        serialize_by_alias=True,
        validate_assignment=True,
        ser_json_inf_nan="strings",
    )


def _versioned_json_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    """JSON Schema: ``schema`` and ``schema_version`` are the class's constants (optional on input)."""
    props = schema.get("properties", {})
    name, version = getattr(cls, "SCHEMA", ""), getattr(cls, "VERSION", 1)
    if name and "schema" in props:
        props["schema"] = {"const": name, "default": name, "title": "Schema", "type": "string"}
    if name and "schema_version" in props:
        props["schema_version"] = {
            "const": version,
            "default": version,
            "title": "Schema Version",
            "type": "integer",
        }


class Versioned(Strict):
    """A top-level document: carries ``schema`` and ``schema_version`` and refuses unknown versions.

    Subclasses set ``SCHEMA`` (e.g. ``"binwatch.alert"``) and ``VERSION``. On input both fields may
    be left out (they default to the class's); when present they must match exactly.
    """

    model_config = ConfigDict(json_schema_extra=_versioned_json_schema)

    SCHEMA: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    OLDER_VERSIONS: ClassVar[tuple[int, ...]] = ()
    """Earlier versions this reader also accepts, each a subset of ``VERSION``: read as ``VERSION``."""

    # The defaults are placeholders filled in by model_post_init (defaults are not validated, so an
    # explicit "" or 0 on input still reaches the validators below and is refused).
    schema_name: StrictStr = Field(default="", alias="schema")
    schema_version: StrictInt = 0

    def model_post_init(self, __context: Any) -> None:
        if not self.schema_name:
            object.__setattr__(self, "schema_name", self.SCHEMA)
        if not self.schema_version:
            object.__setattr__(self, "schema_version", self.VERSION)

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, v: str) -> str:
        if v != cls.SCHEMA:
            raise ValueError(f"schema is {v!r}, expected {cls.SCHEMA!r}")
        return v

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, v: int) -> int:
        if v in cls.OLDER_VERSIONS:
            return cls.VERSION
        if v != cls.VERSION:
            readable = (
                f"versions {', '.join(str(n) for n in (*cls.OLDER_VERSIONS, cls.VERSION))}"
                if cls.OLDER_VERSIONS
                else f"version {cls.VERSION}"
            )
            raise ValueError(
                f"unsupported schema_version {v} for {cls.SCHEMA} (this binwatch reads {readable})"
            )
        return v

    # -- convenience -------------------------------------------------------------------------
    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=False).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def parse(cls: type[V], data: bytes | str | dict[str, Any]) -> V:
        """Parse bytes, text or a dict; any problem is a :class:`ContractError` naming the field."""
        what = cls.SCHEMA or cls.__name__
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, (bytes, str, dict)):
            raise ContractError(
                f"invalid {what}: expected JSON bytes, text or a dict, got {type(data).__name__}"
            )
        try:
            if isinstance(data, dict):
                return cls.model_validate(data)
            return cls.model_validate_json(data)
        except ValidationError as e:
            raise ContractError(_describe(what, e)) from e
        except (UnicodeError, RecursionError) as e:  # lone surrogates in text, absurd nesting
            raise ContractError(f"invalid {what}: {type(e).__name__}: {e}") from e

    @classmethod
    def read_file(cls: type[V], path: os.PathLike[str] | str, *, missing: Optional[str] = None) -> V:
        """Read and parse a file holding this document. Every error is a :class:`ContractError`
        that names the file: ``missing`` (``{path}`` is filled in) when it does not exist,
        ``cannot read`` with the OS reason, or the invalid field."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError as e:
            raise ContractError((missing or "{path}: missing").format(path=p)) from e
        except OSError as e:
            raise ContractError(f"{p}: cannot read {cls.SCHEMA or cls.__name__} ({e.strerror or e})") from e
        try:
            return cls.parse(raw)
        except ContractError as e:
            raise ContractError(f"{p}: {e}") from e


def _rank(err: Any) -> int:
    # Unknown fields and the schema/version come first: they explain the errors after them.
    if err.get("type") == "extra_forbidden":
        return 0
    loc = err.get("loc", ())
    return 1 if loc and loc[0] in ("schema", "schema_version") else 2


def _describe(what: str, e: ValidationError) -> str:
    parts = []
    for err in sorted(e.errors(), key=_rank)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not part of this schema)"
        parts.append(f"{loc}: {msg}")
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return f"invalid {what}: " + "; ".join(parts) + more
