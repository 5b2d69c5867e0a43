"""Bin manifests: the expected contents of one bin, in our own strict form or as ABID metadata JSON.

``parse_manifest(payload, bin_id)`` reads either form into a :class:`ManifestEntry`. ABID metadata
is third-party data: it is the one documented exception to ``extra="forbid"`` (vendor keys at the
top level and inside items are ignored), while the label itself is checked as strictly as ever.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from contract.base import ContractError, Strict, Versioned, _describe
from contract.fields import Count, Id, check_id

log = logging.getLogger(__name__)

__all__ = ["ItemLine", "ManifestEntry", "parse_manifest"]

ItemName = Annotated[StrictStr, StringConstraints(max_length=2048)]


class ItemLine(Strict):
    """One product line of a bin: ``asin`` and/or ``sku``, a name, and how many of it."""

    asin: Optional[Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]] = None
    sku: Optional[Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]] = None
    name: Optional[ItemName] = None
    quantity: Count

    @model_validator(mode="after")
    def _identified(self) -> ItemLine:
        if self.asin is None and self.sku is None:
            raise ValueError("an item needs an asin or a sku")
        return self


Items = Annotated[list[ItemLine], Field(max_length=1000)]


class ManifestEntry(Versioned):
    """Expected contents of one bin (retained ``<prefix>/<site>/manifest/<bin_id>``).

    ``expected_qty`` is authoritative; ``items`` are informational (ABID's own labels equal their sum).
    """

    SCHEMA = "binwatch.manifest_entry"
    VERSION = 1

    bin_id: Id
    expected_qty: Count
    items: Items = Field(default_factory=list)


# -- ABID metadata (third-party form, read tolerantly) -------------------------------------------
class _AbidSku(BaseModel):
    # Vendor data: extra keys (dimensions, weight, normalizedName, ...) are ignored on purpose.
    model_config = ConfigDict(extra="ignore")

    asin: Optional[StrictStr] = None
    name: Optional[StrictStr] = None
    quantity: Count


class _AbidMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    EXPECTED_QUANTITY: Optional[Count] = None
    BIN_FCSKU_DATA: dict[str, _AbidSku] = Field(default_factory=dict)

    @field_validator("BIN_FCSKU_DATA", mode="before")
    @classmethod
    def _object(cls, v: Any) -> Any:
        return {} if v is None else v


_ABID_KEYS = ("EXPECTED_QUANTITY", "BIN_FCSKU_DATA")


def _abid_entry(meta: dict[str, Any], bin_id: str) -> ManifestEntry:
    if "EXPECTED_QUANTITY" in meta and meta["EXPECTED_QUANTITY"] is None:
        raise ContractError(
            "invalid ABID metadata: EXPECTED_QUANTITY: is null (a non-negative integer or absent)"
        )
    try:
        abid = _AbidMetadata.model_validate(meta)
    except ValidationError as e:
        raise ContractError(_describe("ABID metadata", e)) from e
    skus = abid.BIN_FCSKU_DATA
    total = sum(sku.quantity for sku in skus.values())
    expected = abid.EXPECTED_QUANTITY
    if expected is None:
        if "BIN_FCSKU_DATA" not in meta:
            raise ContractError("invalid ABID metadata: EXPECTED_QUANTITY: missing (and no BIN_FCSKU_DATA)")
        expected = total
    elif skus and expected != total:
        log.debug("ABID metadata for %s: EXPECTED_QUANTITY %d != item sum %d", bin_id, expected, total)
    # Vendor strings are cut to our bounds rather than refused (the label is what matters).
    items = [
        {
            "asin": (sku.asin or key)[:64],
            "name": None if sku.name is None else sku.name[:2048],
            "quantity": sku.quantity,
        }
        for key, sku in skus.items()
    ]
    try:
        return ManifestEntry.model_validate({"bin_id": bin_id, "expected_qty": expected, "items": items})
    except ValidationError as e:
        raise ContractError(_describe("ABID metadata", e)) from e


def parse_manifest(payload: bytes | str | dict[str, Any], bin_id: str) -> ManifestEntry:
    """Read a manifest: our ``binwatch.manifest_entry`` or ABID metadata JSON as is.

    ``bin_id`` comes from the topic (``manifest/<bin_id>``) or file name. ABID form: the label is
    ``EXPECTED_QUANTITY`` (a non-negative integer; when absent, the sum of the items' ``quantity``);
    the vendor's extra keys are ignored. Our form: strict; a ``bin_id`` in it must match. Any
    problem is a :class:`ContractError` naming the field.
    """
    try:
        bin_id = check_id(bin_id, "bin_id")
    except ValueError as e:
        raise ContractError(f"invalid manifest: {e}") from e
    if isinstance(payload, (bytes, bytearray, memoryview, str)):
        try:
            payload = json.loads(bytes(payload) if not isinstance(payload, str) else payload)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ContractError(f"invalid manifest for bin {bin_id}: not JSON ({e})") from e
    if not isinstance(payload, dict):
        raise ContractError(
            f"invalid manifest for bin {bin_id}: expected a JSON object, got {type(payload).__name__}"
        )
    if "schema" not in payload and any(k in payload for k in _ABID_KEYS):
        return _abid_entry(payload, bin_id)
    data = dict(payload)
    data.setdefault("bin_id", bin_id)
    entry = ManifestEntry.parse(data)
    if entry.bin_id != bin_id:
        raise ContractError(
            f"invalid manifest: bin_id {entry.bin_id!r} does not match {bin_id!r} (topic or file)"
        )
    return entry
