"""Expected quantities: where the agent learns how many items a bin should hold.

Lookup order for one presentation (the first that knows the bin wins):

1. the ``bin`` event itself (``expected_qty``, else the sum of its ``items``);
2. a retained ``<prefix>/<site>/manifest/<bin_id>`` message (ABID metadata JSON accepted as is);
3. a local folder of ``<bin_id>.json`` files (ABID metadata or ``binwatch.manifest_entry``);
4. a CSV ``bin_id,expected_qty``;
5. replay only, and only when neither a folder nor a CSV is configured: the frame's own metadata.

A bin that none of them knows is decided as ``no_manifest``: counted and reported, never alerted.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Optional

from contract.base import ContractError
from contract.fields import check_id
from contract.messages import ManifestEntry, parse_manifest

log = logging.getLogger(__name__)

__all__ = ["MAX_MANIFEST_FILE_BYTES", "ManifestStore", "load_manifest_csv"]

MAX_MANIFEST_FILE_BYTES = 1024 * 1024


def load_manifest_csv(path: Path) -> dict[str, int]:
    """Read ``bin_id,expected_qty`` (header required; extra columns ignored).

    Raises ValueError naming the file and line of the first bad row.
    """
    out: dict[str, int] = {}
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read manifest CSV {path}: {e}") from e
    import io

    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if "bin_id" not in fields or "expected_qty" not in fields:
            raise ValueError(
                f"{path}: the header must name the columns bin_id and expected_qty (got {fields})"
            )
        reader.fieldnames = fields
        for row in reader:
            line = reader.line_num
            bin_id = (row.get("bin_id") or "").strip()
            qty = (row.get("expected_qty") or "").strip()
            try:
                check_id(bin_id, "bin_id")
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from e
            if not qty.isdigit():
                raise ValueError(f"{path}:{line}: expected_qty {qty!r} is not a non-negative integer")
            if bin_id in out and out[bin_id] != int(qty):
                log.warning(
                    "%s:%d: bin %s listed again with another quantity; the last wins", path, line, bin_id
                )
            out[bin_id] = int(qty)
    return out


class ManifestStore:
    """Thread-safe lookup of expected quantities from MQTT, a folder and a CSV."""

    def __init__(
        self,
        *,
        folder: Optional[Path] = None,
        csv_path: Optional[Path] = None,
        use_mqtt: bool = True,
        max_entries: int = 200_000,
    ) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.use_mqtt = use_mqtt
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._mqtt: OrderedDict[str, ManifestEntry] = OrderedDict()
        self._csv: dict[str, int] = {}
        self._files: dict[str, tuple[float, Optional[int]]] = {}  # bin -> (mtime, qty or None if bad)
        self.invalid: Counter[str] = Counter()  # reason -> count
        self.missing = 0
        self.evicted = 0
        if self.csv_path is not None:
            self._csv = load_manifest_csv(self.csv_path)
            log.info("manifest: %d bins from %s", len(self._csv), self.csv_path)
        if self.folder is not None and not self.folder.is_dir():
            raise ValueError(f"manifest folder {self.folder} is not a folder")

    @property
    def configured(self) -> bool:
        """True when a folder or CSV is the authority (then frame metadata is never used)."""
        return self.folder is not None or self.csv_path is not None

    def __len__(self) -> int:
        return len(self._mqtt) + len(self._csv)

    # -- MQTT ----------------------------------------------------------------------------------
    def on_mqtt(self, bin_id: str, payload: bytes) -> Optional[ManifestEntry]:
        """Apply a retained manifest message; an empty payload clears the bin's manifest.

        Raises :class:`ContractError` (naming the field) for a payload that is not a manifest.
        """
        if not payload:
            with self._lock:
                self._mqtt.pop(bin_id, None)
            log.info("manifest: bin %s cleared", bin_id)
            return None
        entry = parse_manifest(payload, bin_id)
        with self._lock:
            self._mqtt.pop(bin_id, None)
            self._mqtt[bin_id] = entry
            while len(self._mqtt) > self.max_entries:
                self._mqtt.popitem(last=False)
                self.evicted += 1
        return entry

    # -- files ---------------------------------------------------------------------------------
    def _from_folder(self, bin_id: str) -> Optional[int]:
        assert self.folder is not None
        for path in (self.folder / f"{bin_id}.json", self.folder / "metadata" / f"{bin_id}.json"):
            try:
                st = path.stat()
            except OSError:
                continue
            cached = self._files.get(bin_id)
            if cached is not None and cached[0] == st.st_mtime:
                return cached[1]
            qty: Optional[int] = None
            try:
                if st.st_size > MAX_MANIFEST_FILE_BYTES:
                    raise ContractError(f"{st.st_size} bytes (limit {MAX_MANIFEST_FILE_BYTES})")
                qty = parse_manifest(path.read_bytes(), bin_id).expected_qty
            except (ContractError, OSError) as e:
                self.invalid["manifest-file"] += 1
                log.warning("manifest: %s unusable: %s", path, e)
            self._files[bin_id] = (st.st_mtime, qty)
            return qty
        return None

    # -- lookup --------------------------------------------------------------------------------
    def lookup(
        self,
        bin_id: str,
        *,
        event_qty: Optional[int] = None,
        frame_qty: Optional[int] = None,
    ) -> tuple[Optional[int], str]:
        """``(expected quantity or None, source)``; source is event|mqtt|dir|csv|frame|none."""
        if event_qty is not None:
            return event_qty, "event"
        if self.use_mqtt:
            with self._lock:
                entry = self._mqtt.get(bin_id)
            if entry is not None:
                return entry.expected_qty, "mqtt"
        if self.folder is not None:
            qty = self._from_folder(bin_id)
            if qty is not None:
                return qty, "dir"
        if bin_id in self._csv:
            return self._csv[bin_id], "csv"
        if not self.configured and frame_qty is not None:
            return frame_qty, "frame"
        self.missing += 1
        return None, "none"
