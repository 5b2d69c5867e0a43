"""export_reviews: the reviewed snapshots in the ABID layout, read back by the real readers
(``binwatch data stats --strict`` and ``binwatch data prepare`` in a subprocess, and
contract.abid), and brought up to date idempotently."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from console.export import INDEX, export_reviews
from console.images import FolderImages
from console.store import ConsoleStore
from contract.abid import iter_dataset, list_keys
from contract.reviews import Review
from tests.agent.mqtt_helpers import make_alert
from tests.hw import REPO

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def jpeg(shade: int, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def rev(a: Any, decision: str, qty: int | None = None, reviewer: str = "ann") -> Review:
    fields = {"site": a.site, "device": a.device, "camera": a.camera, "bin_id": a.bin_id}
    return Review(alert_id=a.alert_id, decision=decision, actual_qty=qty, reviewer=reviewer, ts=T0, **fields)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ConsoleStore]:
    pytest.importorskip("PIL", reason="Pillow not installed (the train extra)")
    s = ConsoleStore.open(f"sqlite:///{tmp_path / 'c.db'}", FolderImages(tmp_path / "images"))
    try:
        yield s
    finally:
        s.close()


def add(
    store: ConsoleStore, shade: int, decision: str | None, qty: int | None = None, expected: int = 3
) -> Any:
    data = jpeg(shade)
    a = make_alert(expected_qty=expected, snapshot={"uri": "x", "sha256": hashlib.sha256(data).hexdigest()})
    store.add_alert(a)
    store.add_snapshot(a.alert_id, data)
    if decision is not None:
        store.add_review(rev(a, decision, qty))
    return a


def binwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "binwatch", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_export_is_read_by_the_abid_readers(store: ConsoleStore, tmp_path: Path) -> None:
    confirmed = add(store, 10, "confirmed", 5)
    false_alarm = add(store, 60, "false_alarm", expected=2)
    add(store, 110, "cant_tell")
    add(store, 160, None)  # not reviewed
    zero = add(store, 210, "confirmed", 0)
    out = tmp_path / "export"
    summary = export_reviews(store, out)
    assert (summary.items, summary.written, summary.removed, summary.missing) == (3, 3, 0, 0)
    assert summary.histogram == {0: 1, 2: 1, 5: 1}
    assert list_keys(out) == ["000001", "000002", "000003"]
    items = {it.key: it for it in iter_dataset(out, skip_bad=False)}
    assert {k: it.count for k, it in items.items()} == {"000001": 5, "000002": 2, "000003": 0}
    meta = json.loads((out / "metadata" / "000002.json").read_text())
    assert meta["binwatch_review"]["alert_id"] == false_alarm.alert_id
    assert (out / "bin-images" / "000001.jpg").read_bytes() == store.snapshot(confirmed.alert_id)
    assert json.loads((out / INDEX).read_text())["keys"][zero.alert_id] == "000003"

    stats = binwatch("data", "stats", str(out), "--json", "--strict")
    assert stats.returncode == 0, stats.stderr
    got = json.loads(stats.stdout)
    assert got["images"] == 3 and got["histogram"] == {"0": 1, "2": 1, "5": 1} and got["skipped"] == {}
    assert got["width"]["min"] == 64 and got["height"]["max"] == 48
    cache = tmp_path / "cache"
    prep = binwatch("data", "prepare", str(out), "--out", str(cache), "--size", "32", "--workers", "1")
    assert prep.returncode == 0, prep.stderr
    index = json.loads((cache / "index.json").read_text())
    assert sorted((e["key"], e["count"]) for e in index["items"]) == [
        ("000001", 5),
        ("000002", 2),
        ("000003", 0),
    ]


def test_re_export_is_idempotent_and_follows_new_reviews(store: ConsoleStore, tmp_path: Path) -> None:
    a = add(store, 10, "confirmed", 5)
    b = add(store, 60, "false_alarm", expected=2)
    out = tmp_path / "export"
    export_reviews(store, out)
    before = {
        p.relative_to(out): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()
    }
    again = export_reviews(store, out)
    assert (again.items, again.written, again.removed) == (2, 0, 0)
    after = {
        p.relative_to(out): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()
    }
    assert after == before  # nothing rewritten
    # a's latest review becomes cant_tell: removed; b recounted; a new one gets the next number
    store.add_review(rev(a, "cant_tell", reviewer="bob"))
    store.add_review(rev(b, "confirmed", 7, reviewer="bob"))
    c = add(store, 110, "confirmed", 1)
    third = export_reviews(store, out)
    assert (third.items, third.written, third.removed) == (2, 2, 1)
    assert {it.key: it.count for it in iter_dataset(out, skip_bad=False)} == {"000002": 7, "000003": 1}
    assert json.loads((out / INDEX).read_text())["keys"][c.alert_id] == "000003"
    # the removed alert comes back under its old number
    store.add_review(rev(a, "confirmed", 4, reviewer="bob"))
    export_reviews(store, out)
    assert {it.key: it.count for it in iter_dataset(out, skip_bad=False)} == {
        "000001": 4,
        "000002": 7,
        "000003": 1,
    }


def test_export_refuses_a_folder_with_a_foreign_index(store: ConsoleStore, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / INDEX).write_text('{"schema": "something.else"}')
    with pytest.raises(ValueError, match="not a console export index"):
        export_reviews(store, out)
