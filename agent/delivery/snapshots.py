"""The JPEG of a deciding frame, kept on the device in a bounded folder with retention.

Alerts reference a snapshot by ``file://`` URI and sha256 (the image is never inlined); with
``snapshots.publish`` the JPEG also goes out on ``alert/snapshot/<alert_id>`` (:func:`with_picture`,
docs/delivery.md "Snapshots"). The folder
is bounded by file count, total bytes and age; the oldest files go first. Pruning is counted.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from contract.files import write_atomic
from contract.messages import Alert
from contract.topics import Topics

log = logging.getLogger(__name__)

__all__ = ["SnapshotRef", "SnapshotStore", "encode_jpeg", "with_picture"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SnapshotRef:
    uri: str
    sha256: str
    path: Path
    size: int


def with_picture(
    alert: Alert, jpeg: Optional[bytes], topics: Topics
) -> tuple[Alert, Optional[tuple[str, bytes]]]:
    """``alert`` naming the topic and size its JPEG is published with, and the ``(topic, jpeg)``
    of the outbox's snapshot row; ``(alert, None)`` without a JPEG or a snapshot. The JPEG must be
    the one ``alert.snapshot`` names (same sha256)."""
    if jpeg is None or alert.snapshot is None:
        return alert, None
    if hashlib.sha256(jpeg).hexdigest() != alert.snapshot.sha256:
        raise ValueError(f"alert {alert.alert_id}: the JPEG given is not the one its snapshot names")
    topic = topics.alert_snapshot(alert.alert_id)
    snap = alert.snapshot.model_copy(update={"topic": topic, "size": len(jpeg)})
    return alert.model_copy(update={"snapshot": snap}), (topic, bytes(jpeg))


def encode_jpeg(bgr, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("could not encode the frame as JPEG")
    return buf.tobytes()


class SnapshotStore:
    """Write snapshots to ``folder`` and keep it within ``max_files``, ``max_bytes`` and
    ``retention_days`` (0 or None disables that bound)."""

    def __init__(
        self,
        folder: Path,
        *,
        max_files: Optional[int] = 1000,
        max_bytes: Optional[int] = 256 * 1024 * 1024,
        retention_days: Optional[float] = 7.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files or None
        self.max_bytes = max_bytes or None
        self.retention_s = retention_days * 86400.0 if retention_days else None
        self.saved = 0
        self.pruned = 0
        self.errors = 0
        self._lock = threading.Lock()
        # path -> (mtime, size), oldest first
        self._index: OrderedDict[Path, tuple[float, int]] = OrderedDict()
        self._bytes = 0
        self._scan()

    def _scan(self) -> None:
        entries = []
        for p in self.folder.glob("*.jpg"):
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, p, st.st_size))
        for mtime, p, size in sorted(entries):
            self._index[p] = (mtime, size)
            self._bytes += size
        self._prune(time.time())

    @property
    def files(self) -> int:
        return len(self._index)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def save(self, jpeg: bytes, *, camera: str, bin_id: str, ts: Optional[float] = None) -> SnapshotRef:
        """Store ``jpeg`` atomically and return its URI and sha256; prune to the bounds."""
        now = time.time() if ts is None else ts
        digest = hashlib.sha256(jpeg).hexdigest()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.3f}"[1:]
        name = f"{stamp}_{_SAFE.sub('-', camera)[:40]}_{_SAFE.sub('-', bin_id)[:60]}_{digest[:12]}.jpg"
        path = self.folder / name
        with self._lock:
            try:
                write_atomic(path, jpeg)
            except OSError:
                self.errors += 1
                raise
            if path in self._index:
                self._bytes -= self._index.pop(path)[1]
            self._index[path] = (time.time(), len(jpeg))
            self._bytes += len(jpeg)
            self.saved += 1
            self._prune(time.time(), keep=path)
        return SnapshotRef(uri=path.resolve().as_uri(), sha256=digest, path=path, size=len(jpeg))

    def prune(self) -> int:
        with self._lock:
            return self._prune(time.time())

    def _prune(self, now: float, keep: Optional[Path] = None) -> int:
        removed = 0
        while self._index:
            path, (mtime, size) = next(iter(self._index.items()))
            if path == keep and len(self._index) == 1:
                break
            too_many = self.max_files is not None and len(self._index) > self.max_files
            too_big = self.max_bytes is not None and self._bytes > self.max_bytes
            too_old = self.retention_s is not None and now - mtime > self.retention_s
            if not (too_many or too_big or too_old):
                break
            self._index.pop(path)
            self._bytes -= size
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("snapshots: cannot remove %s: %s", path, e)
            removed += 1
        self.pruned += removed
        if removed:
            log.debug("snapshots: pruned %d old file(s) from %s", removed, self.folder)
        return removed
