"""Reviewed snapshots as a training set: the ABID layout that ``binwatch data stats``, ``binwatch
data prepare`` and ``binwatch train`` read as they are (contract/abid.py).

``<out>/bin-images/<key>.jpg`` is the alert's snapshot and ``<out>/metadata/<key>.json`` holds
``EXPECTED_QUANTITY`` = the reviewed count: ``actual_qty`` of a confirmed mismatch, the alert's
``expected_qty`` for a false alarm (the bin held what it should). ``cant_tell`` and unreviewed
alerts are left out, as are alerts without a snapshot. ``BIN_FCSKU_DATA`` is empty (the console
knows no items) and ``binwatch_review`` records where the label came from.

Keys are numbers (``000001``, ...) given once per alert and kept in ``<out>/binwatch-export.json``,
so a re-export writes only what changed: a new review rewrites that item's metadata, an alert
whose latest review left the set has its files removed, and its number is never reused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from console.store import AlertRow, ConsoleStore, ReviewRow
from contract.files import write_atomic

__all__ = ["INDEX", "ExportSummary", "export_reviews", "label"]

log = logging.getLogger(__name__)

INDEX = "binwatch-export.json"
_INDEX_SCHEMA = "binwatch.console_export"


@dataclass(frozen=True)
class ExportSummary:
    out: Path
    items: int  # items in the export now
    written: int  # items whose image or metadata was (re)written by this run
    removed: int  # items removed by this run (their latest review left the set)
    missing: int  # reviewed alerts left out because their JPEG is gone from the image store
    histogram: dict[int, int] = field(default_factory=dict)  # EXPECTED_QUANTITY -> items


def label(row: AlertRow, review: ReviewRow) -> int:
    """The reviewed count: ``actual_qty`` when confirmed, the expected quantity for a false alarm."""
    if review.decision == "confirmed" and review.actual_qty is not None:
        return review.actual_qty
    if review.decision == "false_alarm":
        return row.alert.expected_qty
    raise ValueError(f"review {review.decision!r} of alert {row.alert.alert_id} carries no count")


def _metadata(key: str, row: AlertRow, review: ReviewRow) -> dict[str, Any]:
    a = row.alert
    return {
        "BIN_FCSKU_DATA": {},
        "EXPECTED_QUANTITY": label(row, review),
        "image_fname": f"{key}.jpg",
        "binwatch_review": {
            "alert_id": a.alert_id,
            "site": a.site,
            "device": a.device,
            "camera": a.camera,
            "bin_id": a.bin_id,
            "event_id": a.event_id,
            "frame_ts": a.frame_ts.isoformat(),
            "expected_qty": a.expected_qty,
            "predicted_qty": a.predicted_qty,
            "model": {"name": a.model.name, "version": a.model.version},
            "decision": review.decision,
            "actual_qty": review.actual_qty,
            "reviewer": review.reviewer,
            "reviewed_ts": review.ts.isoformat(),
        },
    }


def _read_index(out: Path) -> tuple[dict[str, str], int]:
    path = out / INDEX
    if not path.exists():
        return {}, 1
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("schema") != _INDEX_SCHEMA:
            raise ValueError(f"schema is {doc.get('schema')!r}")
        keys = {str(k): str(v) for k, v in doc["keys"].items()}
        return keys, int(doc["next"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a console export index ({e}); export into a new folder") from e


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data, mode=0o644)
    return True


def export_reviews(store: ConsoleStore, out: Path) -> ExportSummary:
    """Write (or bring up to date) the export in ``out``; see the module doc."""
    out = Path(out)
    keys, next_n = _read_index(out)
    (out / "bin-images").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    written = missing = 0
    histogram: dict[int, int] = {}
    present: set[str] = set()
    for row, review in store.reviewed_for_export():
        alert_id = row.alert.alert_id
        jpeg = store.snapshot(alert_id)
        if jpeg is None:
            log.warning("alert %s: its snapshot is gone from the image store; left out", alert_id)
            missing += 1
            continue
        if alert_id not in keys:
            keys[alert_id] = f"{next_n:06d}"
            next_n += 1
        key = keys[alert_id]
        meta = _metadata(key, row, review)
        text = json.dumps(meta, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        changed = _write_if_changed(out / "bin-images" / f"{key}.jpg", jpeg)
        changed = _write_if_changed(out / "metadata" / f"{key}.json", text) or changed
        written += changed
        present.add(alert_id)
        histogram[meta["EXPECTED_QUANTITY"]] = histogram.get(meta["EXPECTED_QUANTITY"], 0) + 1
    removed = 0
    for alert_id, key in keys.items():
        if alert_id in present:
            continue
        gone = [out / "bin-images" / f"{key}.jpg", out / "metadata" / f"{key}.json"]
        if any(p.exists() for p in gone):
            removed += 1
        for p in gone:
            p.unlink(missing_ok=True)
    index = {"schema": _INDEX_SCHEMA, "version": 1, "next": next_n, "keys": keys}
    _write_if_changed(out / INDEX, json.dumps(index, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return ExportSummary(out, len(present), written, removed, missing, dict(sorted(histogram.items())))
