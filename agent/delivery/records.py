"""Small files the runtime keeps in the state directory.

- :class:`VerdictLog`: ``verdicts.jsonl``, one JSON line per verdict (with the alert's id and
  ``seq`` for mismatches), rotated to ``verdicts.jsonl.1`` beyond a size. It is the agent's own
  record of what it decided, written after the alert is durably in the outbox.
- :class:`ReplayCursors`: ``replay/<camera>.json``, where a replay stopped, so that a crashed run
  restarted on the same state directory resumes instead of starting over (removed once a replay
  finished).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from contract.files import write_atomic

log = logging.getLogger(__name__)

__all__ = ["ReplayCursors", "VerdictLog", "read_verdicts"]


class VerdictLog:
    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._f = self.path.open("a", encoding="utf-8")
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._f.closed:
                return
            self._f.write(line)
            self._f.flush()  # in the page cache: survives a process kill
            self.lines += 1
            if self._f.tell() > self.max_bytes:
                self._f.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._f = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


def read_verdicts(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a verdict log (a torn last line after a kill is ignored)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class ReplayCursors:
    """Per-camera replay positions: ``{"source": ..., "run_id": ..., "next": N}``.

    Written at most every ``interval_s`` (and on :meth:`flush`): after a crash the replay resumes
    up to that much earlier, and the frames decided again produce alerts with the same
    ``alert_id`` (derived from the run id and frame index), which consumers deduplicate.
    """

    def __init__(self, folder: Path, interval_s: float = 0.25) -> None:
        self.folder = Path(folder)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._written = 0.0

    def _path(self, camera: str) -> Path:
        return self.folder / f"{camera}.json"

    def begin_all(self, cameras: list[tuple[str, str, bool]]) -> tuple[dict[str, str], dict[str, int]]:
        """:meth:`begin` for each ``(camera, source, resume)``: run ids and start positions by camera."""
        run_ids: dict[str, str] = {}
        positions: dict[str, int] = {}
        for camera, source, resume in cameras:
            run_ids[camera], positions[camera] = self.begin(camera, source, resume)
        return run_ids, positions

    def begin(self, camera: str, source: str, resume: bool) -> tuple[str, int]:
        """``(run_id, start position)`` for a replay camera: resumed when a cursor of the same
        source exists (and ``resume``), else a new run from 0."""
        p = self._path(camera)
        if resume and p.is_file():
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
                if data.get("source") == source and isinstance(data.get("next"), int):
                    run_id, start = str(data["run_id"]), int(data["next"])
                    log.warning(
                        "camera %s: resuming the replay of %s at frame %d (an earlier run stopped there; "
                        "delete %s or set resume: false to start over)",
                        camera,
                        source,
                        start,
                        p,
                    )
                    self._meta[camera] = {"source": source, "run_id": run_id}
                    self._next[camera] = start
                    return run_id, start
            except (OSError, ValueError, KeyError) as e:
                log.warning("camera %s: replay cursor %s unusable (%s); starting over", camera, p, e)
        run_id = uuid.uuid4().hex[:8]
        self._meta[camera] = {"source": source, "run_id": run_id}
        self._next[camera] = 0
        self._write(camera)
        return run_id, 0

    def advance(self, camera: str, index: int) -> None:
        """Frame ``index`` of ``camera`` is decided (and its alert stored)."""
        with self._lock:
            if camera not in self._meta or index + 1 <= self._next.get(camera, 0):
                return
            self._next[camera] = index + 1
            self._dirty.add(camera)
            if time.monotonic() - self._written >= self.interval_s:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        for camera in self._dirty:
            if camera in self._meta:
                self._write(camera)
        self._dirty.clear()
        self._written = time.monotonic()

    def position(self, camera: str) -> Optional[int]:
        return self._next.get(camera)

    def _write(self, camera: str) -> None:
        data = dict(self._meta[camera], next=self._next[camera])
        write_atomic(self._path(camera), json.dumps(data).encode("utf-8"))

    def finish(self, camera: str) -> None:
        """The replay is complete: the next run starts from the beginning."""
        with self._lock:
            self._meta.pop(camera, None)
            self._dirty.discard(camera)
            self._path(camera).unlink(missing_ok=True)
