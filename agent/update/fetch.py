"""Download a bundle to the device's staging folder: a local path, ``file://`` or ``http(s)://``.

- The file lands as ``<staging>/<sha256>.tar`` only once its sha256 matches the desired state's;
  until then it is ``<sha256>.part``, and an interrupted HTTP download resumes from there (``Range``).
- A download larger than ``max_bytes`` is refused (from ``Content-Length`` before reading, else
  while reading); every socket operation has ``timeout_s``.
- Failures raise :class:`FetchError` with the cause (unreachable server, HTTP status, size, sha256
  mismatch, full disk); the caller reports and retries.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Optional
from urllib.parse import unquote, urlsplit

from contract.files import sha256_file

log = logging.getLogger(__name__)

__all__ = ["FetchError", "fetch_bundle"]

_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """The bundle could not be brought to the device; the message says why."""


def fetch_bundle(
    url: str,
    staging: Path,
    *,
    sha256: str,
    max_bytes: int,
    timeout_s: float = 60.0,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
) -> Path:
    """The bundle at ``url`` as a verified file under ``staging`` (reused when already there)."""
    staging.mkdir(parents=True, exist_ok=True)
    final = staging / f"{sha256}.tar"
    if final.is_file() and sha256_file(final) == sha256:
        return final
    part = staging / f"{sha256}.part"
    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme in ("http", "https"):
            _http(url, part, max_bytes=max_bytes, timeout_s=timeout_s, on_progress=on_progress)
        elif scheme in ("", "file"):
            _copy(_local_path(url), part, max_bytes=max_bytes)
        else:
            raise FetchError(f"unsupported bundle URL {url!r}: use a path, file://, http:// or https://")
    except OSError as e:
        raise FetchError(f"cannot store the bundle in {staging}: {e.strerror or e}") from e
    got = sha256_file(part)
    if got != sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"sha256 of the download from {url} is {got}, the desired state says {sha256}")
    os.replace(part, final)
    return final


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme else Path(url)


def _copy(src: Path, part: Path, *, max_bytes: int) -> None:
    if not src.is_file():
        raise FetchError(f"bundle {src} not found (or not a file)")
    size = src.stat().st_size
    if size > max_bytes:
        raise FetchError(
            f"bundle {src} is {size} bytes, more than the limit of {max_bytes} (update.max_bytes)"
        )
    shutil.copyfile(src, part)


def _http(
    url: str,
    part: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    on_progress: Optional[Callable[[int, Optional[int]], None]],
) -> None:
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)  # the scheme is checked by the caller
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after what we have: the part is complete (or wrong)
            return
        raise FetchError(f"HTTP {e.code} {e.reason} for {url}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot reach {url}: {reason}") from e
    with resp:
        resumed = have and resp.status == 206
        if not resumed:
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if total is not None and total > max_bytes:
            raise FetchError(
                f"bundle at {url} is {total} bytes, more than the limit of {max_bytes} (update.max_bytes)"
            )
        with open(part, "ab" if resumed else "wb") as out:
            _stream(resp, out, have, total, max_bytes, url, on_progress)


def _stream(
    src: BinaryIO,
    out: BinaryIO,
    have: int,
    total: Optional[int],
    max_bytes: int,
    url: str,
    on_progress: Optional[Callable[[int, Optional[int]], None]],
) -> None:
    done = have
    try:
        while chunk := src.read(_CHUNK):
            done += len(chunk)
            if done > max_bytes:
                raise FetchError(f"bundle at {url} exceeds the limit of {max_bytes} bytes (update.max_bytes)")
            out.write(chunk)
            if on_progress is not None:
                on_progress(done, total)
    except (TimeoutError, ConnectionError) as e:
        raise FetchError(
            f"download from {url} broke off after {done} bytes ({e}); it resumes on retry"
        ) from e
    out.flush()
    os.fsync(out.fileno())
