"""binwatch contract: the wire and file formats every side shares (stdlib + pydantic only).

The public names are re-exported lazily, so ``import contract`` (or ``contract.abid``) does not
load pydantic until a model is used::

    from contract import Alert, ContractError, Topics
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # base
    "ContractError": "contract.base",
    "Strict": "contract.base",
    "Versioned": "contract.base",
    "canonical_json": "contract.base",
    "utcnow": "contract.base",
    # card
    "ModelCard": "contract.card",
    "load_card": "contract.card",
    "save_card": "contract.card",
    # messages
    "Alert": "contract.messages",
    "BinEvent": "contract.messages",
    "BinOutcome": "contract.messages",
    "Review": "contract.messages",
    "CameraStats": "contract.messages",
    "CameraStatus": "contract.messages",
    "CommandRequest": "contract.messages",
    "CommandResult": "contract.messages",
    "ItemLine": "contract.messages",
    "ManifestEntry": "contract.messages",
    "ModelDesired": "contract.messages",
    "ModelRef": "contract.messages",
    "ModelReported": "contract.messages",
    "Result": "contract.messages",
    "Snapshot": "contract.messages",
    "StageLatency": "contract.messages",
    "Stats": "contract.messages",
    "Status": "contract.messages",
    "parse_manifest": "contract.messages",
    # topics
    "Topics": "contract.topics",
    "TopicInfo": "contract.topics",
    "fleet_desired": "contract.topics",
    "group_desired": "contract.topics",
    "parse_topic": "contract.topics",
    # bundle
    "BundleManifest": "contract.bundle",
    "FileEntry": "contract.bundle",
    "build_manifest": "contract.bundle",
    "load_manifest": "contract.bundle",
    # files
    "sha256_file": "contract.files",
    "write_atomic": "contract.files",
    "atomic_writer": "contract.files",
    "safe_extract_tar": "contract.files",
    "verify_manifest": "contract.bundle",
    "write_manifest": "contract.bundle",
    # schemas
    "parse_any": "contract.schemas",
}

__all__ = [
    "Alert",
    "BinEvent",
    "BinOutcome",
    "BundleManifest",
    "CameraStats",
    "CameraStatus",
    "CommandRequest",
    "CommandResult",
    "ContractError",
    "FileEntry",
    "ItemLine",
    "ManifestEntry",
    "ModelCard",
    "ModelDesired",
    "ModelRef",
    "ModelReported",
    "Result",
    "Review",
    "Snapshot",
    "StageLatency",
    "Stats",
    "Status",
    "Strict",
    "TopicInfo",
    "Topics",
    "Versioned",
    "atomic_writer",
    "build_manifest",
    "canonical_json",
    "fleet_desired",
    "group_desired",
    "load_card",
    "load_manifest",
    "parse_any",
    "parse_manifest",
    "parse_topic",
    "safe_extract_tar",
    "save_card",
    "sha256_file",
    "utcnow",
    "verify_manifest",
    "write_atomic",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'contract' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from contract.base import ContractError, Strict, Versioned, canonical_json, utcnow
    from contract.bundle import (
        BundleManifest,
        FileEntry,
        build_manifest,
        load_manifest,
        verify_manifest,
        write_manifest,
    )
    from contract.card import ModelCard, load_card, save_card
    from contract.files import atomic_writer, safe_extract_tar, sha256_file, write_atomic
    from contract.messages import (
        Alert,
        BinEvent,
        BinOutcome,
        CameraStats,
        CameraStatus,
        CommandRequest,
        CommandResult,
        ItemLine,
        ManifestEntry,
        ModelDesired,
        ModelRef,
        ModelReported,
        Result,
        Review,
        Snapshot,
        StageLatency,
        Stats,
        Status,
        parse_manifest,
    )
    from contract.schemas import parse_any
    from contract.topics import TopicInfo, Topics, fleet_desired, group_desired, parse_topic
