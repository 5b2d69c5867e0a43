"""The bundle manifest (``MANIFEST.json``): size and sha256 of every file in a model bundle.

``MANIFEST.sig`` is an ed25519 signature over :meth:`BundleManifest.canonical_bytes` (signing, keys
and verification live in :mod:`contract.signing`; this module only hashes and checks).
:func:`write_manifest` stores exactly those canonical bytes, so the file itself is what is signed.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

from pydantic import AfterValidator, Field, StrictStr, ValidationError, field_serializer

from contract.base import ContractError, Strict, Versioned, _describe, canonical_json, utcnow
from contract.fields import U63, Name, Sha256, Timestamp
from contract.files import sha256_file, write_atomic

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BundleManifest",
    "FileEntry",
    "build_manifest",
    "load_manifest",
    "verify_manifest",
    "write_manifest",
]

MANIFEST_NAME = "MANIFEST.json"
SIGNATURE_NAME = "MANIFEST.sig"
_NOT_LISTED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})


def _check_relpath(path: str) -> str:
    if len(path) > 1024:
        raise ValueError(f"path is {len(path)} characters long (limit 1024)")
    if path.startswith("/") or "\\" in path or any(ord(c) < 32 for c in path):
        raise ValueError(f"{path!r} is not a relative POSIX path")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{path!r} has an empty, '.' or '..' component")
    if path in _NOT_LISTED:
        raise ValueError(f"{path} cannot list itself")
    return path


RelPath = Annotated[StrictStr, AfterValidator(_check_relpath)]


class FileEntry(Strict):
    sha256: Sha256
    size: U63


class BundleManifest(Versioned):
    """Every file of a bundle (relative POSIX path -> sha256 and size), except the manifest and its
    signature."""

    SCHEMA = "binwatch.bundle_manifest"
    VERSION = 1

    created: Timestamp = Field(default_factory=utcnow)
    model_name: Name
    model_version: U63
    files: dict[RelPath, FileEntry] = Field(max_length=10_000)

    @field_serializer("created")
    def _utc_text(self, value: datetime) -> str:
        # A fixed format, so the signed bytes do not depend on the pydantic version.
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def canonical_bytes(self) -> bytes:
        """What ed25519 signs: sorted keys, no spaces, UTF-8 (see :func:`contract.base.canonical_json`)."""
        return canonical_json(self.to_dict())


def _scan(bundle_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Plain files under ``bundle_dir`` (relative POSIX path -> path), and problems (links, devices)."""
    files: dict[str, Path] = {}
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(bundle_dir, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames):
            if (base / name).is_symlink():
                rel = (base / name).relative_to(bundle_dir).as_posix()
                problems.append(f"{rel}: is a symbolic link (bundles hold plain files only)")
        for name in filenames:
            p = base / name
            rel = p.relative_to(bundle_dir).as_posix()
            if rel in _NOT_LISTED:
                continue
            if p.is_symlink():
                problems.append(f"{rel}: is a symbolic link (bundles hold plain files only)")
            elif not p.is_file():
                problems.append(f"{rel}: is not a regular file")
            else:
                files[rel] = p
    return dict(sorted(files.items())), sorted(problems)


def build_manifest(
    bundle_dir: os.PathLike[str] | str,
    *,
    model_name: str,
    model_version: int,
    created: Optional[datetime] = None,
) -> BundleManifest:
    """Hash every file of ``bundle_dir`` (except ``MANIFEST.json``/``MANIFEST.sig``); ContractError if
    the folder holds links or special files, or a path cannot be listed."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ContractError(f"{root}: not a directory (a bundle is a folder of files)")
    files, problems = _scan(root)
    if problems:
        raise ContractError(f"{root}: " + "; ".join(problems))
    entries = {rel: {"sha256": sha256_file(p), "size": p.stat().st_size} for rel, p in files.items()}
    data = {"model_name": model_name, "model_version": model_version, "files": entries}
    try:
        if created is not None:
            return BundleManifest.model_validate({**data, "created": created})
        return BundleManifest.model_validate(data)
    except ValidationError as e:
        raise ContractError(_describe(f"bundle manifest for {root}", e)) from e


def write_manifest(bundle_dir: os.PathLike[str] | str, manifest: BundleManifest) -> Path:
    """Write ``MANIFEST.json`` (exactly the canonical bytes) atomically; returns its path."""
    return write_atomic(Path(bundle_dir) / MANIFEST_NAME, manifest.canonical_bytes())


def load_manifest(bundle_dir: os.PathLike[str] | str) -> BundleManifest:
    """Read and parse ``MANIFEST.json``; ContractError naming the file and the field."""
    return BundleManifest.read_file(
        Path(bundle_dir) / MANIFEST_NAME,
        missing="{path}: missing (not a bundle, or the manifest was never written)",
    )


def verify_manifest(
    bundle_dir: os.PathLike[str] | str, manifest: Optional[BundleManifest] = None
) -> list[str]:
    """Compare a bundle folder with its manifest (``MANIFEST.json`` unless given).

    Returns the problems, each starting with the file it names (missing, size or sha256 changed,
    unexpected extra file, link); an empty list means every byte matches. The signature is not
    checked here (:func:`contract.signing.verify_bundle` checks both).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    if manifest is None:
        try:
            manifest = load_manifest(root)
        except ContractError as e:
            return [f"{MANIFEST_NAME}: {e}"]
    files, problems = _scan(root)
    for rel, entry in sorted(manifest.files.items()):
        p = files.get(rel)
        if p is None:
            if not any(msg.startswith(f"{rel}:") for msg in problems):
                problems.append(f"{rel}: missing (listed in {MANIFEST_NAME})")
            continue
        size = p.stat().st_size
        if size != entry.size:
            problems.append(f"{rel}: size is {size} bytes, {MANIFEST_NAME} says {entry.size}")
        elif sha256_file(p) != entry.sha256:
            problems.append(f"{rel}: sha256 differs from {MANIFEST_NAME} (the file was changed)")
    problems.extend(
        f"{rel}: unexpected file (not in {MANIFEST_NAME})" for rel in files if rel not in manifest.files
    )
    if problems:
        log.debug("bundle %s does not match its manifest: %s", root, "; ".join(problems))
    return problems
