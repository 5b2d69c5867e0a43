"""Where the console keeps snapshot JPEGs: a folder (default) or any S3-compatible object store.

:class:`ImageStore` is the seam; the store (:mod:`console.store`) names images by key (the alert
id). Keys are sanitized here, so that no key can leave the folder or the bucket prefix.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from contract.files import write_atomic

__all__ = ["FolderImages", "ImageStore", "S3Images", "safe_key"]

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_key(key: str) -> str:
    """``key`` itself when it is 1-128 characters of letters, digits, ``_ . -`` (not starting with a
    dot or dash, no ``..``); ValueError otherwise (a hostile alert id can never become a path)."""
    if not isinstance(key, str) or not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid image key {key!r}: 1-128 letters, digits, '_', '.', '-'")
    return key


class ImageStore(ABC):
    """Bytes by key: ``put`` replaces, ``get`` returns None when absent, ``delete`` is quiet when absent."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> Optional[bytes]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...


class FolderImages(ImageStore):
    """``<dir>/<key[:2]>/<key>.jpg``, written atomically (readers never see a partial JPEG)."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        key = safe_key(key)
        return self.dir / key[:2] / f"{key}.jpg"

    def put(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), bytes(data), mode=0o640)

    def get(self, key: str) -> Optional[bytes]:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"FolderImages({str(self.dir)!r})"


class S3Images(ImageStore):
    """An S3-compatible bucket: ``url`` is ``s3://bucket[/prefix]``; ``endpoint_url`` points at a
    non-AWS server (MinIO, Ceph, ...). Credentials come the usual boto3 way (environment, profile,
    instance role) unless given. Needs the ``console`` extra with boto3 installed."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: Optional[str] = None,
        region: Optional[str] = None,
        access_key: Optional[str] = None,
        secret_key: Optional[str] = None,
        client: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"S3 image store URL {url!r} must be s3://bucket[/prefix]")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        if client is None:
            try:
                import boto3
            except ImportError as e:
                raise RuntimeError(
                    "S3 snapshot storage needs boto3: pip install 'binwatch[console]' (the console extra)"
                ) from e
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
            )
        self.client = client

    def _key(self, key: str) -> str:
        key = f"{safe_key(key)}.jpg"
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=bytes(data), ContentType="image/jpeg"
        )

    def get(self, key: str) -> Optional[bytes]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:  # botocore's ClientError: only "no such key" means absent
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return bytes(obj["Body"].read())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def __repr__(self) -> str:
        return f"S3Images('s3://{self.bucket}/{self.prefix}')"
