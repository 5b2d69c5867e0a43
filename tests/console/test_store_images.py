"""Image stores: a folder (atomic writes, hostile keys refused) and S3Images against an S3-compatible
server. No real S3 service is reachable here: moto's server mode is the stand-in (a real HTTP
server speaking the S3 API through boto3), used when moto is installed; set
BINWATCH_TEST_S3_ENDPOINT (+ AWS credentials) to run the same test against a real MinIO/Ceph/S3."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.images import FolderImages, ImageStore, S3Images, safe_key
from tests.broker import free_port


@pytest.mark.parametrize("key", ["../x", "a/b", "", ".hidden", "-x", "a..b", "x" * 129, "a\x00b"])
def test_hostile_keys_are_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        safe_key(key)
    with pytest.raises(ValueError):
        FolderImages(tmp_path).put(key, b"x")


def test_folder_images_round_trip(tmp_path: Path) -> None:
    images = FolderImages(tmp_path / "img")
    key = str(uuid.uuid4())
    assert images.get(key) is None
    images.put(key, b"one")
    images.put(key, b"two")  # replaces
    assert images.get(key) == b"two"
    files = [p for p in (tmp_path / "img").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{key}.jpg"]  # no temp file left behind
    images.delete(key)
    images.delete(key)  # quiet when absent
    assert images.get(key) is None


@pytest.fixture()
def s3() -> Iterator[ImageStore]:
    endpoint = os.environ.get("BINWATCH_TEST_S3_ENDPOINT")
    bucket = os.environ.get("BINWATCH_TEST_S3_BUCKET", "binwatch-test")
    server = None
    if endpoint is None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            pytest.skip(
                "no S3-compatible server: set BINWATCH_TEST_S3_ENDPOINT, or pip install 'moto[server]'"
            )
        pytest.importorskip("boto3", reason="boto3 not installed (the console extra)")
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    store = S3Images(f"s3://{bucket}/snapshots", endpoint_url=endpoint, region="us-east-1")
    try:
        store.client.create_bucket(Bucket=bucket)
    except Exception as e:  # exists already on a real server
        if "BucketAlready" not in type(e).__name__ and "BucketAlready" not in str(e):
            raise
    try:
        yield store
    finally:
        if server is not None:
            server.stop()


def test_s3_images_round_trip(s3: S3Images) -> None:
    key = str(uuid.uuid4())
    assert s3.get(key) is None
    s3.put(key, b"\xff\xd8jpeg")
    assert s3.get(key) == b"\xff\xd8jpeg"
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="snapshots/")
    assert f"snapshots/{key}.jpg" in [o["Key"] for o in listed.get("Contents", [])]
    s3.delete(key)
    assert s3.get(key) is None
    with pytest.raises(ValueError):
        s3.put("../escape", b"x")


def test_s3_url_must_name_a_bucket() -> None:
    with pytest.raises(ValueError, match="s3://bucket"):
        S3Images("http://x/y", client=object())
