"""Base classes for every wire and file format: strict, versioned pydantic v2 models."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class Versioned(Strict):
    """A top-level document: carries ``schema`` and ``schema_version`` and refuses unknown versions.

    Subclasses set ``SCHEMA`` (e.g. ``"binwatch.alert"``) and ``VERSION``.
    """

    SCHEMA: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    schema_name: str = Field(default="", alias="schema")
    schema_version: int = 0

    def model_post_init(self, __context: Any) -> None:
        if not self.schema_name:
            object.__setattr__(self, "schema_name", self.SCHEMA)
        if not self.schema_version:
            object.__setattr__(self, "schema_version", self.VERSION)

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, v: str) -> str:
        if v and v != cls.SCHEMA:
            raise ValueError(f"schema is {v!r}, expected {cls.SCHEMA!r}")
        return v

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, v: int) -> int:
        if v and v != cls.VERSION:
            raise ValueError(
                f"unsupported schema_version {v} for {cls.SCHEMA} (this binwatch reads version {cls.VERSION})"
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
        try:
            if isinstance(data, dict):
                return cls.model_validate(data)
            return cls.model_validate_json(data)
        except ValidationError as e:
            raise ContractError(_describe(cls.SCHEMA or cls.__name__, e)) from e


def _describe(what: str, e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field (not part of this schema)"
        parts.append(f"{loc}: {msg}")
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return f"invalid {what}: " + "; ".join(parts) + more
