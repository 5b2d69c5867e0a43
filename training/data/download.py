"""Download ABID images and metadata from the public S3 bucket (or any mirror of its layout).

Each key is two files, ``<endpoint>/bin-images/<key>.jpg`` and ``<endpoint>/metadata/<key>.json``,
saved in the same layout under the output folder. Plain HTTPS, no credentials, stdlib only.

- Concurrent: one worker thread per key in flight (``workers``).
- Resumable: a file is written to ``<name>.part`` and renamed when complete, so a file under its
  final name is complete and is skipped on the next run; a leftover ``.part`` is fetched again.
- Retrying: 5xx, 408, 429, timeouts, connection errors and truncated bodies (fewer bytes than
  ``Content-Length``) are retried with exponential backoff; other 4xx (404: no such key) fail the
  key at once.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from contract.abid import (
    IMAGE_SUFFIX,
    IMAGES_DIR,
    METADATA_DIR,
    METADATA_SUFFIX,
    check_key,
    load_file_list,
    load_split,
    split_key,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://aft-vbi-pds.s3.amazonaws.com"
PART_SUFFIX = ".part"
_CHUNK = 64 * 1024
_MAX_SLEEP_S = 60.0
_RETRY_STATUS = frozenset({408, 429})
_JPEG_MAGIC = b"\xff\xd8"


class _Retryable(Exception):
    """A transient failure: try again after a pause."""


class _Fatal(Exception):
    """A failure that retrying cannot fix (404 and other 4xx)."""


@dataclass(frozen=True)
class KeyResult:
    """The outcome for one key: files fetched, files already complete, or why it failed."""

    key: str
    downloaded: int = 0
    skipped: int = 0
    nbytes: int = 0
    error: Optional[str] = None


@dataclass
class DownloadSummary:
    keys: int = 0
    downloaded: int = 0  # files fetched in this run
    skipped: int = 0  # files already complete
    nbytes: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, result: KeyResult) -> None:
        self.keys += 1
        self.downloaded += result.downloaded
        self.skipped += result.skipped
        self.nbytes += result.nbytes
        if result.error is not None:
            self.failed[result.key] = result.error


def parse_keys(spec: str) -> list[str]:
    """Parse ``--keys``: comma-separated keys and inclusive ranges, e.g. ``00001-00100,121-130``.

    A range keeps the zero padding of its start (``00001-00100`` -> ``00001``..``00100``;
    ``121-130`` -> ``121``..``130``): keys are never re-padded.
    """
    keys: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo.isascii() and hi.isascii() and lo.isdigit() and hi.isdigit():
            start, stop = int(lo), int(hi)
            if stop < start:
                raise ValueError(f"key range {part!r} ends before it starts")
            width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
            keys.extend(str(i).zfill(width) for i in range(start, stop + 1))
        else:
            keys.append(check_key(part))
    if not keys:
        raise ValueError(f"no keys in {spec!r}; use e.g. 00001-00100 or 00121,121")
    return keys


def select_keys(
    *,
    split: Optional[Path] = None,
    file_list: Optional[Path] = None,
    keys: Optional[str] = None,
    limit: Optional[int] = None,
) -> list[str]:
    """The keys to fetch, in order, without duplicates.

    One of ``split`` (abid_challenge ``counting_*.json``), ``file_list`` (capstone
    ``file_list.json``) or ``keys`` (see :func:`parse_keys`); ``limit`` keeps the first N of them,
    or alone means ``00001``..N. Raises ValueError (bad choice of options) or AbidError (bad file).
    """
    given = [name for name, v in (("--split", split), ("--file-list", file_list), ("--keys", keys)) if v]
    if len(given) > 1:
        raise ValueError(f"give only one of --split, --file-list, --keys (got {', '.join(given)})")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    if split is not None:
        selected = [k for k, _ in load_split(split)]
    elif file_list is not None:
        selected = [k for k, _ in load_file_list(file_list)]
    elif keys is not None:
        selected = parse_keys(keys)
    elif limit is not None:
        selected = [split_key(i) for i in range(limit)]
    else:
        raise ValueError("choose what to download: --split FILE, --file-list FILE, --keys A-B or --limit N")
    selected = list(dict.fromkeys(selected))
    return selected[:limit] if limit is not None else selected


def check_endpoint(endpoint: str) -> str:
    """Return the endpoint without a trailing slash; ValueError unless it is an http(s) URL."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL (default {DEFAULT_ENDPOINT})")
    return endpoint.rstrip("/")


def _check_body(dest: Path, part: Path) -> None:
    if dest.suffix == METADATA_SUFFIX:
        try:
            json.loads(part.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _Retryable(f"response is not valid JSON ({e})") from e
    elif dest.suffix == IMAGE_SUFFIX:
        with part.open("rb") as f:
            if f.read(2) != _JPEG_MAGIC:
                raise _Retryable("response is not a JPEG")


def _fetch_once(url: str, dest: Path, part: Path, timeout: float) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": "binwatch-download"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.strip().isdigit() else None
            received = 0
            with part.open("wb") as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                f.flush()
                os.fsync(f.fileno())
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from e
        raise _Fatal(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:  # DNS, refused connection
        raise _Retryable(f"cannot connect: {e.reason}") from e
    except (http.client.HTTPException, OSError) as e:  # broken response, reset, timeout
        raise _Retryable(f"{type(e).__name__}: {e}") from e
    if expected is not None and received != expected:
        raise _Retryable(f"truncated response: {received} of {expected} bytes")
    if received == 0:
        raise _Retryable("empty response")
    _check_body(dest, part)
    return received


def fetch_file(url: str, dest: Path, *, retries: int, backoff: float, timeout: float) -> Optional[int]:
    """Fetch ``url`` to ``dest`` unless ``dest`` is already complete.

    Returns the bytes fetched, or None when skipped as complete. Raises ``RuntimeError`` with the
    reason after a 4xx or once ``retries`` retries are spent.
    """
    if dest.is_file() and dest.stat().st_size > 0:
        return None
    part = dest.with_name(dest.name + PART_SUFFIX)
    attempt = 0
    while True:
        try:
            nbytes = _fetch_once(url, dest, part, timeout)
            os.replace(part, dest)
            return nbytes
        except _Fatal as e:
            part.unlink(missing_ok=True)
            raise RuntimeError(f"{url}: {e}") from e
        except _Retryable as e:
            part.unlink(missing_ok=True)
            if attempt >= retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise RuntimeError(f"{url}: {e} (gave up after {tries})") from e
            pause = min(_MAX_SLEEP_S, backoff * 2**attempt) * (1 + 0.25 * random.random())
            log.info("%s: %s; retry %d/%d in %.2fs", url, e, attempt + 1, retries, pause)
            time.sleep(pause)
            attempt += 1


def _fetch_key(key: str, out: Path, endpoint: str, retries: int, backoff: float, timeout: float) -> KeyResult:
    downloaded = skipped = nbytes = 0
    for folder, suffix in ((IMAGES_DIR, IMAGE_SUFFIX), (METADATA_DIR, METADATA_SUFFIX)):
        name = f"{key}{suffix}"
        url = f"{endpoint}/{folder}/{urllib.parse.quote(name)}"
        try:
            got = fetch_file(url, out / folder / name, retries=retries, backoff=backoff, timeout=timeout)
        except (RuntimeError, OSError) as e:
            return KeyResult(key, downloaded, skipped, nbytes, error=str(e))
        if got is None:
            skipped += 1
        else:
            downloaded += 1
            nbytes += got
    return KeyResult(key, downloaded, skipped, nbytes)


def download(
    keys: Sequence[str] | Iterable[str],
    out: Path,
    *,
    endpoint: str = DEFAULT_ENDPOINT,
    workers: int = 16,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    on_key: Optional[Callable[[KeyResult], None]] = None,
) -> DownloadSummary:
    """Fetch every key's image and metadata into ``out`` (ABID layout); see the module doc.

    ``on_key`` is called in the calling thread as each key finishes (for a progress bar).
    """
    endpoint = check_endpoint(endpoint)
    if workers < 1 or retries < 0 or backoff < 0 or timeout <= 0:
        raise ValueError("workers >= 1, retries >= 0, backoff >= 0 and timeout > 0 are required")
    keys = [check_key(k) for k in keys]
    for folder in (IMAGES_DIR, METADATA_DIR):
        (out / folder).mkdir(parents=True, exist_ok=True)
    summary = DownloadSummary()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abid-download")
    try:
        futures = [pool.submit(_fetch_key, k, out, endpoint, retries, backoff, timeout) for k in keys]
        for future in as_completed(futures):
            result = future.result()
            summary.add(result)
            if result.error:  # reported in the summary (and by the CLI); not twice on stderr
                log.info("failed %s: %s", result.key, result.error)
            if on_key is not None:
                on_key(result)
    except BaseException:
        # Ctrl-C or a callback error: drop queued keys; finished files stay, .part files are
        # fetched again next run.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return summary
