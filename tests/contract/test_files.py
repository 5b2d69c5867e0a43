"""contract.files: the one helper for each common file job (atomic writes, sha256, safe tar
extraction) and Versioned.read_file, used by every package."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from contract.base import ContractError
from contract.card import load_card
from contract.files import (
    UnsafeArchiveError,
    atomic_path,
    atomic_writer,
    safe_extract_tar,
    sha256_file,
    write_atomic,
)
from contract.messages import CommandRequest


def test_writes_bytes_creates_parents_and_sets_mode(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "card.json"
    assert write_atomic(dest, b"{}\n", mode=0o644) == dest
    assert dest.read_bytes() == b"{}\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    write_atomic(dest, memoryview(b"new"))  # replaces, accepts a buffer
    assert dest.read_bytes() == b"new"
    write_atomic(dest, "text é")  # text is written as UTF-8
    assert dest.read_bytes() == "text é".encode()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["card.json"]  # no temp file left


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "MANIFEST.json"
    dest.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(dest, 12345)  # type: ignore[arg-type]
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["MANIFEST.json"]


def test_streaming_writer_replaces_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "weights.pt"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(dest) as f:
        f.write(b"half")
        raise RuntimeError("writer died")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]
    with atomic_writer(tmp_path / "report.json", text=True, mode=0o644) as f:
        json.dump({"ok": True}, f)
    assert json.loads((tmp_path / "report.json").read_text()) == {"ok": True}
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644


def test_atomic_path_for_writers_that_want_a_path(tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    with atomic_path(dest, suffix=".tar") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tar") and tmp != dest
        with tarfile.open(tmp, "w") as tar:
            tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    assert tarfile.is_tarfile(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["out.tar"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # several chunks
    p = tmp_path / "blob"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def _tar(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        for info in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_safe_extract_writes_plain_files(tmp_path: Path) -> None:
    d = tarfile.TarInfo("bundle")
    d.type = tarfile.DIRTYPE
    arc = _tar(tmp_path / "ok.tar", [d, _file("bundle/card.json")])
    out = safe_extract_tar(arc, tmp_path / "out")
    assert (out / "bundle" / "card.json").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil"])
def test_safe_extract_refuses_escaping_paths(tmp_path: Path, name: str) -> None:
    arc = _tar(tmp_path / "bad.tar", [_file("fine"), _file(name)])
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        safe_extract_tar(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_safe_extract_refuses_links_and_garbage(tmp_path: Path) -> None:
    link = tarfile.TarInfo("card.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(UnsafeArchiveError, match="links are refused"):
        safe_extract_tar(_tar(tmp_path / "l.tar", [link]), tmp_path / "out")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar"):
        safe_extract_tar(junk, tmp_path / "out2")


def test_read_file_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "req.json"
    with pytest.raises(ContractError, match=r"req\.json: missing"):
        CommandRequest.read_file(p)
    with pytest.raises(ContractError, match=r"no card here: .*nothing\.json"):
        CommandRequest.read_file(tmp_path / "nothing.json", missing="no card here: {path}")
    p.write_text('{"request_id": "r1", "bogus": 1}')
    with pytest.raises(ContractError, match=r"req\.json: invalid binwatch\.cmd.*bogus"):
        CommandRequest.read_file(p)
    p.write_text('{"request_id": "r1"}')
    assert CommandRequest.read_file(p).request_id == "r1"


def test_load_card_messages_unchanged(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"no model card at .*expected a run folder or bundle"):
        load_card(tmp_path)
