"""Snapshots (bounded folder with retention) and manifest sources (MQTT, folder, CSV)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from agent.delivery.snapshots import SnapshotStore
from agent.intake.manifests import ManifestStore, load_manifest_csv
from contract.base import ContractError


def test_snapshot_uri_and_sha256(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path / "snaps")
    ref = s.save(b"\xff\xd8jpeg-bytes", camera="cam 0", bin_id="B/1")
    assert ref.sha256 == hashlib.sha256(b"\xff\xd8jpeg-bytes").hexdigest()
    assert ref.uri.startswith("file://")
    path = Path(urlparse(ref.uri).path)
    assert path.read_bytes() == b"\xff\xd8jpeg-bytes"
    assert path.parent == (tmp_path / "snaps").resolve()
    assert "/" not in path.name.split("_", 1)[1] and " " not in path.name


def test_snapshots_are_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path, max_files=3, max_bytes=10_000, retention_days=None)
    refs = [s.save(bytes([i]) * 100, camera="c", bin_id=f"b{i}") for i in range(5)]
    assert s.files == 3 and s.pruned == 2
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == sorted(r.path.name for r in refs[2:])
    s2 = SnapshotStore(tmp_path / "b", max_files=100, max_bytes=250, retention_days=None)
    for i in range(4):
        s2.save(bytes([i]) * 100, camera="c", bin_id=f"b{i}")
    assert s2.total_bytes <= 250 and s2.files == 2


def test_snapshot_retention_by_age_survives_restart(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path, retention_days=1)
    old = s.save(b"old", camera="c", bin_id="b1")
    new = s.save(b"new", camera="c", bin_id="b2")
    week_ago = time.time() - 7 * 86400
    os.utime(old.path, (week_ago, week_ago))
    s2 = SnapshotStore(tmp_path, retention_days=1)  # a restarted agent scans the folder
    assert not old.path.exists() and new.path.exists() and s2.files == 1


def test_manifest_precedence(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "B1.json").write_text(json.dumps({"EXPECTED_QUANTITY": 4, "BIN_FCSKU_DATA": {}}))
    csv = tmp_path / "m.csv"
    csv.write_text("bin_id,expected_qty,note\nB1,9,x\nB2,2,y\n")
    st = ManifestStore(folder=folder, csv_path=csv)
    assert st.configured
    assert st.lookup("B1", event_qty=7) == (7, "event")
    assert st.lookup("B1") == (4, "dir")
    assert st.lookup("B2") == (2, "csv")
    st.on_mqtt("B1", json.dumps({"bin_id": "B1", "expected_qty": 5}).encode())
    assert st.lookup("B1") == (5, "mqtt")
    st.on_mqtt("B1", b"")  # retained message cleared
    assert st.lookup("B1") == (4, "dir")
    # a configured folder/CSV is the authority: the frame's own metadata is not used
    assert st.lookup("B3", frame_qty=3) == (None, "none") and st.missing == 1


def test_frame_metadata_is_used_only_without_a_configured_source() -> None:
    st = ManifestStore()
    assert st.lookup("B3", frame_qty=3) == (3, "frame")
    assert st.lookup("B4") == (None, "none")


def test_abid_metadata_on_mqtt_and_in_folders(tmp_path: Path) -> None:
    meta = {
        "BIN_FCSKU_DATA": {"B00X": {"asin": "B00X", "quantity": 2, "name": "thing", "weight": {}}},
        "image_fname": "1.jpg",
    }
    st = ManifestStore(folder=tmp_path)
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "121.json").write_text(json.dumps(meta))
    assert st.lookup("121") == (2, "dir")
    assert st.on_mqtt("00121", json.dumps(meta).encode()).expected_qty == 2


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1,2]",
        b'{"EXPECTED_QUANTITY": "3"}',
        b'{"bin_id": "B1", "expected_qty": -1}',
        b'{"bin_id": "OTHER", "expected_qty": 1}',
    ],
)
def test_bad_mqtt_manifests_are_refused(payload: bytes) -> None:
    st = ManifestStore()
    with pytest.raises(ContractError):
        st.on_mqtt("B1", payload)
    assert st.lookup("B1") == (None, "none")


def test_bad_manifest_files_are_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "B1.json").write_text("{broken")
    st = ManifestStore(folder=tmp_path)
    assert st.lookup("B1") == (None, "none")
    assert st.invalid["manifest-file"] == 1


def test_mqtt_manifests_are_bounded() -> None:
    st = ManifestStore(max_entries=2)
    for i in range(4):
        st.on_mqtt(f"B{i}", json.dumps({"expected_qty": i}).encode())
    assert st.evicted == 2 and st.lookup("B0") == (None, "none") and st.lookup("B3") == (3, "mqtt")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bin,qty\nB1,2\n", "header"),
        ("bin_id,expected_qty\nB1,two\n", ":2: expected_qty"),
        ("bin_id,expected_qty\nB 1,2\n", ":2: bin_id"),
    ],
)
def test_bad_csv_names_the_line(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_manifest_csv(f)
