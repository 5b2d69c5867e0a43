"""One helper for each common file job, used by every package: atomic writes (whole bytes, a stream,
or a temp path for libraries that write to a path themselves), sha256 of a file, and safe
extraction of a tar archive. Stdlib only, so the agent, training, export and the operator side can
all import it (see docs/architecture.md)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Optional, Union

__all__ = [
    "UnsafeArchiveError",
    "atomic_path",
    "atomic_writer",
    "safe_extract_tar",
    "sha256_file",
    "write_atomic",
]

PathLike = Union[str, "os.PathLike[str]"]
_CHUNK = 1 << 20


@contextmanager
def atomic_path(path: PathLike, *, mode: Optional[int] = None, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path`` (parents created) for a writer that wants a path; when the
    block ends without an exception the file is moved into place with ``os.replace`` (readers see
    the old file or the new one, never a part), else it is removed. ``mode`` sets the permissions
    (``mkstemp`` makes 0600). ``suffix`` keeps an extension some writers look at (``.tar.gz``)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if mode is not None:
            os.chmod(tmp_path, mode)
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_writer(path: PathLike, *, mode: Optional[int] = None, text: bool = False) -> Iterator[IO]:
    """Yield an open file (binary, or UTF-8 text with ``text=True``) that becomes ``path`` atomically
    when the block ends without an exception: for streaming writers such as ``torch.save``,
    ``json.dump`` or a CSV writer. The data is flushed and fsynced before the rename."""
    opts = {"encoding": "utf-8", "newline": ""} if text else {}
    with atomic_path(path, mode=mode) as tmp, open(tmp, "w" if text else "wb", **opts) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: PathLike, data: Union[bytes, memoryview, str], *, mode: Optional[int] = None) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (see :func:`atomic_path`).
    Returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class UnsafeArchiveError(ValueError):
    """A tar archive that is unreadable or holds an entry that must not be extracted."""


def safe_extract_tar(tar_path: PathLike, dest: PathLike) -> Path:
    """Extract regular files and folders of ``tar_path`` into ``dest`` (created); an absolute path,
    a ``..`` part, a link or a device is refused before anything is written, as is an archive that
    cannot be read. Raises :class:`UnsafeArchiveError` naming the archive and the entry."""
    out = Path(dest)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if m.name.startswith("/") or Path(m.name).is_absolute() or ".." in parts:
                    raise UnsafeArchiveError(f"{tar_path}: unsafe path {m.name!r} in the archive")
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(
                        f"{tar_path}: {m.name} is not a plain file or folder (links are refused)"
                    )
            out.mkdir(parents=True, exist_ok=True)
            for m in members:
                target = out / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise UnsafeArchiveError(f"{tar_path}: {m.name} has no data")
                with src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
    except UnsafeArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeArchiveError(f"{tar_path} is not a readable tar archive ({e})") from e
    return out
