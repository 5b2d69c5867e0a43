"""contract.base.write_atomic: the one temp-file-then-rename writer every side uses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from contract.base import write_atomic


def test_writes_bytes_creates_parents_and_sets_mode(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "card.json"
    assert write_atomic(dest, b"{}\n", mode=0o644) == dest
    assert dest.read_bytes() == b"{}\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    write_atomic(dest, memoryview(b"new"))  # replaces, accepts a buffer
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["card.json"]  # no temp file left


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "MANIFEST.json"
    dest.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(dest, "not bytes")  # type: ignore[arg-type]
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["MANIFEST.json"]
