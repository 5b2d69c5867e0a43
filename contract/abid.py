"""Reader for the Amazon Bin Image Dataset (ABID) layout and its split files.

An ABID folder holds ``bin-images/<key>.jpg`` and ``metadata/<key>.json``; the label of an image is
the metadata's ``EXPECTED_QUANTITY``. Keys are used verbatim: ``121`` and ``00121`` are different
images of two naming families and are never re-padded.

Split files:

- abid_challenge ``counting_*.json``: a list of ``[index0, count]``; the image key is
  ``'%05d' % (index0 + 1)``.
- the capstone ``file_list.json``: ``{"1": ["data/metadata/100313.json", ...], ...}`` (class -> paths);
  the key is the file name without ``.json``.

Stdlib only (the agent's replay source uses this module too); images are never decoded here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

IMAGES_DIR = "bin-images"
METADATA_DIR = "metadata"
IMAGE_SUFFIX = ".jpg"
METADATA_SUFFIX = ".json"

# Letters, digits, '_' and '-' (no separators, no leading dot): ABID keys are digits, synthetic
# bins may use names such as ``syn-000001``.
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

# Reasons a file is skipped (``SkipReport.by_reason`` keys).
MISSING_IMAGE = "missing-image"
EMPTY_IMAGE = "empty-image"
MISSING_METADATA = "missing-metadata"
BAD_METADATA = "bad-metadata"


class AbidError(Exception):
    """A missing or corrupt ABID file, or a malformed split file.

    ``path`` names the file; ``reason`` is one of the skip reasons for item files (e.g.
    ``"bad-metadata"``) and empty for split files and folders.
    """

    def __init__(self, path: os.PathLike[str] | str, problem: str, reason: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        self.reason = reason
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class AbidItem:
    """One bin image and its label.

    ``size`` is ``(width, height)`` when the metadata carries integer ``image_width`` and
    ``image_height`` (ABID's own metadata does not), else None: the reader never opens images.
    ``metadata`` is always set by :func:`iter_dataset`; it is optional for callers that build items
    from other sources.
    """

    key: str
    image: Path
    metadata: Optional[Path]
    count: int
    size: Optional[tuple[int, int]] = None


@dataclass
class SkipReport:
    """What :func:`iter_dataset` skipped: bad files by reason (with their paths), and items left
    out by ``max_count``."""

    by_reason: dict[str, list[Path]] = field(default_factory=dict)
    over_max_count: int = 0

    def add(self, reason: str, path: Path) -> None:
        self.by_reason.setdefault(reason, []).append(path)

    @property
    def total(self) -> int:
        """Number of items skipped as missing or corrupt (not counting ``over_max_count``)."""
        return sum(len(paths) for paths in self.by_reason.values())

    def counts(self) -> dict[str, int]:
        return {reason: len(paths) for reason, paths in sorted(self.by_reason.items())}

    def summary(self) -> str:
        if not self.total:
            return "nothing skipped"
        return ", ".join(f"{n} {reason}" for reason, n in self.counts().items())


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe file stem, else raise ValueError."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"invalid bin key {key!r}: use letters, digits, '_' or '-' (e.g. 00121 or 121)")
    return key


def split_key(index0: int) -> str:
    """The image key of an abid_challenge split entry: ``'%05d' % (index0 + 1)``."""
    return f"{index0 + 1:05d}"


def read_metadata(path: os.PathLike[str] | str) -> dict[str, Any]:
    """Read one metadata JSON object; AbidError (with the path) if unreadable or not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise AbidError(path, "metadata file not found", MISSING_METADATA) from e
    except (OSError, UnicodeDecodeError) as e:
        raise AbidError(path, f"cannot read metadata: {e}", BAD_METADATA) from e
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise AbidError(path, f"invalid metadata JSON: {e}", BAD_METADATA) from e
    if not isinstance(meta, dict):
        raise AbidError(path, f"metadata must be a JSON object, got {type(meta).__name__}", BAD_METADATA)
    return meta


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def expected_quantity(meta: dict[str, Any]) -> int:
    """The label: ``EXPECTED_QUANTITY``, else the sum of ``BIN_FCSKU_DATA[*].quantity``.

    Raises ValueError when neither gives a non-negative integer.
    """
    if "EXPECTED_QUANTITY" in meta:
        value = meta["EXPECTED_QUANTITY"]
        if not _is_count(value):
            raise ValueError(f"EXPECTED_QUANTITY must be a non-negative integer, got {value!r}")
        return value
    skus = meta.get("BIN_FCSKU_DATA")
    if not isinstance(skus, dict):
        raise ValueError("metadata has neither EXPECTED_QUANTITY nor a BIN_FCSKU_DATA object")
    total = 0
    for asin, sku in skus.items():
        quantity = sku.get("quantity") if isinstance(sku, dict) else None
        if not _is_count(quantity):
            raise ValueError(f"BIN_FCSKU_DATA[{asin!r}].quantity must be a non-negative integer")
        total += quantity
    return total


def _size_from(meta: dict[str, Any]) -> Optional[tuple[int, int]]:
    w, h = meta.get("image_width"), meta.get("image_height")
    if _is_count(w) and _is_count(h) and w > 0 and h > 0:
        return (w, h)
    return None


def _natural(key: str) -> tuple[int, int, str]:
    # 00001 < 00002 < ... < 00121 < 121 < 122; non-numeric keys after numeric ones, by name.
    return (0, int(key), key) if key.isdigit() else (1, 0, key)


def list_keys(root: os.PathLike[str] | str) -> list[str]:
    """All keys in an ABID folder (images and metadata alike), in natural order."""
    root = Path(root)
    images, metadata = root / IMAGES_DIR, root / METADATA_DIR
    if not images.is_dir() and not metadata.is_dir():
        if root.is_dir():
            detail = f"expected {IMAGES_DIR}/ and {METADATA_DIR}/ in it"
        else:
            detail = "not a folder" if root.exists() else "no such folder"
        raise AbidError(root, f"not an ABID folder: {detail}")
    keys: set[str] = set()
    for folder, suffix in ((images, IMAGE_SUFFIX), (metadata, METADATA_SUFFIX)):
        if folder.is_dir():
            keys.update(
                p.name[: -len(suffix)]
                for p in folder.iterdir()
                if p.name.endswith(suffix) and _KEY_RE.match(p.name[: -len(suffix)])
            )
    return sorted(keys, key=_natural)


def load_item(root: os.PathLike[str] | str, key: str) -> AbidItem:
    """Read one item; AbidError (``reason`` set, path named) if a file is missing or corrupt."""
    root = Path(root)
    check_key(key)
    image = root / IMAGES_DIR / f"{key}{IMAGE_SUFFIX}"
    meta_path = root / METADATA_DIR / f"{key}{METADATA_SUFFIX}"
    try:
        image_bytes = image.stat().st_size
    except FileNotFoundError as e:
        raise AbidError(image, "image file not found", MISSING_IMAGE) from e
    except OSError as e:
        raise AbidError(image, f"cannot read image: {e}", MISSING_IMAGE) from e
    if image_bytes == 0:
        raise AbidError(image, "image file is empty (0 bytes)", EMPTY_IMAGE)
    meta = read_metadata(meta_path)
    try:
        count = expected_quantity(meta)
    except ValueError as e:
        raise AbidError(meta_path, str(e), BAD_METADATA) from e
    return AbidItem(key=key, image=image, metadata=meta_path, count=count, size=_size_from(meta))


def iter_dataset(
    root: os.PathLike[str] | str,
    *,
    keys: Optional[Iterable[str]] = None,
    max_count: Optional[int] = None,
    skip_bad: bool = False,
    report: Optional[SkipReport] = None,
) -> Iterator[AbidItem]:
    """Yield the items of an ABID folder.

    ``keys`` restricts (and orders) the items; by default every key found under ``bin-images/`` or
    ``metadata/`` is read, in natural order. Items whose count exceeds ``max_count`` are left out
    (counted in ``report.over_max_count``). A missing or corrupt file raises AbidError naming it,
    unless ``skip_bad``: then it is logged, recorded in ``report`` and skipped.
    """
    root = Path(root)
    if keys is None:
        keys = list_keys(root)
    for key in keys:
        try:
            item = load_item(root, key)
        except AbidError as e:
            if not skip_bad:
                raise
            log.warning("skipping %s", e)
            if report is not None:
                report.add(e.reason, e.path)
            continue
        if max_count is not None and item.count > max_count:
            if report is not None:
                report.over_max_count += 1
            continue
        yield item


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise AbidError(path, "split file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise AbidError(path, f"cannot read split file: {e}") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise AbidError(path, f"invalid JSON: {e}") from e


def load_split(path: os.PathLike[str] | str) -> list[tuple[str, int]]:
    """Read an abid_challenge ``counting_*.json``: ``[index0, count]`` pairs -> ``(key, count)``."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise AbidError(path, "expected a list of [index0, count] pairs (abid_challenge split)")
    out: list[tuple[str, int]] = []
    for i, entry in enumerate(data):
        # Inlined checks (type(...) is int also rejects bools): official splits have 324,735 entries.
        if type(entry) is list and len(entry) == 2:
            index0, count = entry
            if type(index0) is int and type(count) is int and index0 >= 0 and count >= 0:
                out.append((f"{index0 + 1:05d}", count))
                continue
        raise AbidError(path, f"entry {i} is {entry!r}; expected [index0, count] (two integers >= 0)")
    return out


def load_file_list(path: os.PathLike[str] | str) -> list[tuple[str, int]]:
    """Read a capstone ``file_list.json`` (``{"<count>": [".../metadata/<key>.json", ...]}``).

    Returns ``(key, count)`` in count order, then file order; keys are the file stems, verbatim.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AbidError(path, 'expected an object {"<count>": ["data/metadata/<key>.json", ...]}')
    out: list[tuple[str, int]] = []
    for label in sorted(data, key=lambda s: (len(s), s)):
        if not (label.isascii() and label.isdigit()):
            raise AbidError(path, f"class {label!r} is not a non-negative integer")
        files = data[label]
        if not isinstance(files, list):
            raise AbidError(path, f"class {label!r}: expected a list of metadata paths")
        for entry in files:
            name = entry.rsplit("/", 1)[-1] if isinstance(entry, str) else ""
            stem = name[: -len(METADATA_SUFFIX)] if name.endswith(METADATA_SUFFIX) else ""
            if not _KEY_RE.match(stem):
                raise AbidError(path, f"class {label!r}: {entry!r} is not a path to <key>.json")
            out.append((stem, int(label)))
    return out
