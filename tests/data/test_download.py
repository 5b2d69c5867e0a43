"""``binwatch data download`` against a real local HTTP server serving the real ABID sample."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.abid import iter_dataset
from tests.hw import ABID_SAMPLE
from training.data.cli import app
from training.data.download import download, parse_keys, select_keys

KEYS = "00001-00003,121"  # four keys, eight files, both naming families
FILES = [
    f"{folder}/{key}{suffix}"
    for key in ("00001", "00002", "00003", "121")
    for folder, suffix in (("bin-images", ".jpg"), ("metadata", ".json"))
]


class AbidServer:
    """Serves a folder over HTTP/1.0 on 127.0.0.1; ``faults[path]`` is a queue of injected failures
    (``"500"`` or ``"truncate"``) applied to the next requests for that path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: Counter[str] = Counter()
        self.faults: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                with server._lock:
                    server.requests[path] += 1
                    queue = server.faults.get(path)
                    fault = queue.pop(0) if queue else None
                if fault == "500":
                    self.send_error(500, "injected")
                    return
                file = (server.root / path).resolve()
                if not file.is_relative_to(server.root) or not file.is_file():
                    self.send_error(404, "NoSuchKey")
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # "truncate": promise the whole body, send half, close the connection.
                self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture()
def server() -> Iterator[AbidServer]:
    if not ABID_SAMPLE.is_dir():
        pytest.skip(f"real ABID sample not found at {ABID_SAMPLE}")
    srv = AbidServer(ABID_SAMPLE.resolve())
    try:
        yield srv
    finally:
        srv.stop()


def _run(server: AbidServer, out: Path, *args: str):
    argv = ["download", "--out", str(out), "--endpoint", server.url, "--backoff", "0", "--workers", "4"]
    return CliRunner().invoke(app, [*argv, *args])


def _same_as_sample(out: Path) -> None:
    for rel in FILES:
        assert (out / rel).read_bytes() == (ABID_SAMPLE / rel).read_bytes(), rel
    assert not list(out.rglob("*.part"))


def test_downloads_keys_verbatim_into_abid_layout(server: AbidServer, tmp_path: Path) -> None:
    out = tmp_path / "abid"
    result = _run(server, out, "--keys", KEYS)
    assert result.exit_code == 0, result.output
    assert "8 files downloaded" in result.stdout and "0 keys failed" in result.stdout
    _same_as_sample(out)
    assert sorted(server.requests) == sorted(FILES) and set(server.requests.values()) == {1}
    items = {i.key: i.count for i in iter_dataset(out)}
    expected = {i.key: i.count for i in iter_dataset(ABID_SAMPLE, keys=["00001", "00002", "00003", "121"])}
    assert items == expected


def test_server_error_is_retried(server: AbidServer, tmp_path: Path) -> None:
    server.faults["bin-images/00002.jpg"] = ["500", "500"]
    server.faults["metadata/121.json"] = ["500"]
    result = _run(server, tmp_path, "--keys", KEYS, "--retries", "2")
    assert result.exit_code == 0, result.output
    assert server.requests["bin-images/00002.jpg"] == 3
    assert server.requests["metadata/121.json"] == 2
    _same_as_sample(tmp_path)


def test_truncated_response_is_detected_and_retried(server: AbidServer, tmp_path: Path) -> None:
    server.faults["bin-images/00003.jpg"] = ["truncate"]
    server.faults["metadata/00001.json"] = ["truncate"]
    result = _run(server, tmp_path, "--keys", KEYS, "--retries", "1")
    assert result.exit_code == 0, result.output
    assert server.requests["bin-images/00003.jpg"] == 2
    assert server.requests["metadata/00001.json"] == 2
    _same_as_sample(tmp_path)


def test_gives_up_after_retries_and_exits_nonzero(server: AbidServer, tmp_path: Path) -> None:
    server.faults["bin-images/00002.jpg"] = ["truncate", "500", "500", "500"]
    result = _run(server, tmp_path, "--keys", KEYS, "--retries", "2")
    assert result.exit_code == 1
    assert server.requests["bin-images/00002.jpg"] == 3
    assert "00002" in result.stderr and "HTTP 500" in result.stderr and "after 3 attempts" in result.stderr
    assert not (tmp_path / "bin-images" / "00002.jpg").exists()
    assert not list(tmp_path.rglob("*.part"))
    assert (tmp_path / "bin-images" / "121.jpg").is_file()  # the other keys are done


def test_resume_skips_complete_files_and_refetches_part_files(server: AbidServer, tmp_path: Path) -> None:
    assert _run(server, tmp_path, "--keys", KEYS).exit_code == 0
    server.requests.clear()
    again = _run(server, tmp_path, "--keys", KEYS)
    assert again.exit_code == 0, again.output
    assert sum(server.requests.values()) == 0
    assert "0 files downloaded" in again.stdout and "8 already complete" in again.stdout
    # An interrupted download leaves <name>.part and no final file: only that file is fetched again.
    image = tmp_path / "bin-images" / "00002.jpg"
    image.unlink()
    Path(f"{image}.part").write_bytes(b"\xff\xd8 half a jpeg")
    third = _run(server, tmp_path, "--keys", KEYS)
    assert third.exit_code == 0, third.output
    assert dict(server.requests) == {"bin-images/00002.jpg": 1}
    assert "1 files downloaded" in third.stdout and "7 already complete" in third.stdout
    _same_as_sample(tmp_path)


def test_missing_key_fails_without_retry(server: AbidServer, tmp_path: Path) -> None:
    result = _run(server, tmp_path, "--keys", "00001,99999", "--retries", "3")
    assert result.exit_code == 1
    assert "99999" in result.stderr and "404" in result.stderr
    assert server.requests["bin-images/99999.jpg"] == 1
    assert "metadata/99999.json" not in server.requests  # the key already failed
    assert "1 keys failed" in result.stdout
    assert (tmp_path / "metadata" / "00001.json").is_file()
    assert not list(tmp_path.rglob("99999*"))


def test_split_file_with_limit_selects_padded_keys(server: AbidServer, tmp_path: Path) -> None:
    split = tmp_path / "split.json"
    split.write_text("[[0, 3], [120, 3], [1, 1]]")  # index0 120 -> 00121, never 121
    result = _run(server, tmp_path / "abid", "--split", str(split), "--limit", "2")
    assert result.exit_code == 0, result.output
    assert sorted(server.requests) == [
        "bin-images/00001.jpg",
        "bin-images/00121.jpg",
        "metadata/00001.json",
        "metadata/00121.json",
    ]


def test_download_function_reports_per_key(server: AbidServer, tmp_path: Path) -> None:
    seen: list[str] = []
    summary = download(
        ["121", "00121", "404404"],
        tmp_path,
        endpoint=server.url + "/",
        backoff=0,
        on_key=lambda r: seen.append(r.key),
    )
    assert sorted(seen) == ["00121", "121", "404404"]
    assert (summary.keys, summary.downloaded, summary.skipped) == (3, 4, 0)
    assert list(summary.failed) == ["404404"] and "HTTP 404" in summary.failed["404404"]
    assert summary.nbytes == sum(
        (ABID_SAMPLE / d / f"{k}{s}").stat().st_size
        for k in ("121", "00121")
        for d, s in (("bin-images", ".jpg"), ("metadata", ".json"))
    )


# --- key selection (no server) ----------------------------------------------------------------


def test_parse_keys_keeps_padding_of_each_range() -> None:
    assert parse_keys("00008-00011") == ["00008", "00009", "00010", "00011"]
    assert parse_keys("8-11, 121") == ["8", "9", "10", "11", "121"]
    assert parse_keys("00121,121,syn-01") == ["00121", "121", "syn-01"]
    for bad in ("5-3", "", ",", "a/b", "../x"):
        with pytest.raises(ValueError):
            parse_keys(bad)


def test_select_keys(tmp_path: Path) -> None:
    assert select_keys(limit=3) == ["00001", "00002", "00003"]
    assert select_keys(keys="3,1,3", limit=5) == ["3", "1"]
    file_list = tmp_path / "file_list.json"
    file_list.write_text('{"2": ["data/metadata/00007.json"], "1": ["data/metadata/121.json"]}')
    assert select_keys(file_list=file_list) == ["121", "00007"]
    with pytest.raises(ValueError, match="only one"):
        select_keys(split=file_list, keys="1")
    with pytest.raises(ValueError, match="choose what"):
        select_keys()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "choose what to download"),
        (["--keys", "1", "--limit", "2", "--split", "s.json"], "only one"),
        (["--keys", "1", "--endpoint", "ftp://x"], "not an http(s) URL"),
        (["--split", "absent.json"], "split file not found"),
    ],
)
def test_bad_input_exits_2_with_the_cause(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["download", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
