"""``binwatch deploy serve`` as a real process: Range requests (206, 416), HEAD, and nothing outside
the folder (``..``, encoded ``..``, a symbolic link out, hidden files, folders); the agent's own
fetcher resumes a partial download from it."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.mqtt_helpers import wait_until
from tests.broker import free_port

DATA = bytes(range(256)) * 400  # 102400 bytes


class Served:
    def __init__(self, root: Path, port: int, log: Path) -> None:
        self.root, self.port, self.log = root, port, log

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)  # the path goes out as written
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@contextlib.contextmanager
def deploy_serve(root: Path, log_path: Path) -> Iterator[int]:
    """``binwatch deploy serve ROOT`` as a process on a free port (its output in ``log_path``):
    yields the port once it listens; stopped on exit."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "binwatch.cli",
        "deploy",
        "serve",
        str(root),
        "--listen",
        f"127.0.0.1:{port}",
    ]
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("serve")
    root = base / "bundles"
    (root / "sub").mkdir(parents=True)
    (root / "model.tar").write_bytes(DATA)
    (root / "sub" / "other.tar").write_bytes(b"x" * 10)
    (root / ".model.tar.123.tmp").write_bytes(b"partial copy")
    (base / "secret.txt").write_text("outside the served folder")
    os.symlink(base / "secret.txt", root / "link.txt")
    with deploy_serve(root, base / "serve.log") as port:
        yield Served(root, port, base / "serve.log")


def test_a_range_request_gets_206_with_those_bytes(served: Served) -> None:
    status, headers, body = served.request("GET", "/model.tar", {"Range": "bytes=1000-1999"})
    assert status == 206
    assert headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
    assert body == DATA[1000:2000]
    status, headers, body = served.request("GET", "/model.tar", {"Range": "bytes=100000-"})
    assert status == 206 and body == DATA[100000:]
    status, headers, _ = served.request("GET", "/model.tar", {"Range": f"bytes={len(DATA)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(DATA)}"


def test_get_and_head_of_a_whole_file(served: Served) -> None:
    status, headers, body = served.request("GET", "/model.tar")
    assert status == 200 and body == DATA and headers["accept-ranges"] == "bytes"
    status, headers, body = served.request("HEAD", "/model.tar")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(DATA))
    assert served.request("GET", "/sub/other.tar")[0] == 200
    assert served.request("POST", "/model.tar")[0] == 405


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/link.txt",
        "/.model.tar.123.tmp",
        "/sub",
        "/",
    ],
)
def test_nothing_outside_the_folder_and_no_listings(served: Served, path: str) -> None:
    status, _headers, body = served.request("GET", path)
    assert status == 404, (path, body)
    assert b"outside the served folder" not in body


def test_the_agent_fetcher_resumes_a_partial_download(served: Served, tmp_path: Path) -> None:
    from agent.update.fetch import fetch_bundle

    sha = hashlib.sha256(DATA).hexdigest()
    staging = tmp_path / "updates"
    staging.mkdir()
    (staging / f"{sha}.part").write_bytes(DATA[:40000])  # an interrupted download
    got = fetch_bundle(f"http://127.0.0.1:{served.port}/model.tar", staging, sha256=sha, max_bytes=1 << 20)
    assert got.read_bytes() == DATA
    last = lambda: [line for line in served.log.read_text().splitlines() if "GET /model.tar" in line][-1]  # noqa: E731
    assert wait_until(lambda: "206 Partial Content" in last(), timeout=5), last()  # the rest only


def test_bad_folder_and_listen_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from binwatch.cli import app

    r = CliRunner().invoke(app, ["deploy", "serve", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such folder" in r.output
    r = CliRunner().invoke(app, ["deploy", "serve", str(tmp_path), "--listen", "8088"])
    assert r.exit_code == 2 and "give HOST:PORT" in r.output
