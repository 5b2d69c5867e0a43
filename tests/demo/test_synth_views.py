"""binwatch data synth --views N: several pictures of each bin, for the demo's multi-frame fusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("cv2")

from training.data.synth import synthesize


def test_views_show_the_same_items_and_the_manifest_is_per_bin(tmp_path: Path) -> None:
    out = tmp_path / "bins"
    summary = synthesize(out, 6, 4, 3, views=3, mismatch=0.5, size=(128, 128), progress=False)
    assert summary.count == 6 and summary.mismatched == 3
    views = json.loads((out / "views.json").read_text())
    assert views["views"] == 3
    assert list(views["bins"]) == ["00001", "00002", "00003", "00004", "00005", "00006"]
    images = sorted(p.stem for p in (out / "bin-images").glob("*.jpg"))
    assert images == sorted(k for keys in views["bins"].values() for k in keys)
    for bin_id, keys in views["bins"].items():
        assert keys == [f"{bin_id}-v1", f"{bin_id}-v2", f"{bin_id}-v3"]
        metas = [json.loads((out / "metadata" / f"{k}.json").read_text()) for k in keys]
        assert len({m["EXPECTED_QUANTITY"] for m in metas}) == 1  # every view shows every item
        assert len({json.dumps(m["BIN_FCSKU_DATA"], sort_keys=True) for m in metas}) == 1  # same products
        assert [m["view"] for m in metas] == [{"bin": bin_id, "index": i, "of": 3} for i in (1, 2, 3)]
        pictures = {(out / "bin-images" / f"{k}.jpg").read_bytes() for k in keys}
        assert len(pictures) == 3  # placed and lit anew
    # the manifest and the injected errors are per bin (what the agent's bin events name)
    assert sorted(p.stem for p in (out / "manifest-mismatch").glob("*.json")) == list(views["bins"])
    wrong = json.loads((out / "mismatch.json").read_text())["mismatched"]
    assert len(wrong) == 3 and set(wrong) <= set(views["bins"])


def test_views_are_deterministic_and_one_view_is_the_plain_layout(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", 3, 3, 7, views=2, size=(128, 128), progress=False, workers=1)
    b = synthesize(tmp_path / "b", 3, 3, 7, views=2, size=(128, 128), progress=False, workers=2)
    assert a.counts == b.counts
    for p in sorted((tmp_path / "a" / "bin-images").iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / "bin-images" / p.name).read_bytes()
    synthesize(tmp_path / "c", 3, 3, 7, size=(128, 128), progress=False)
    assert not (tmp_path / "c" / "views.json").exists()
    plain = sorted(p.name for p in (tmp_path / "c" / "bin-images").iterdir())
    assert plain == ["00001.jpg", "00002.jpg", "00003.jpg"]
    # view 1 of a bin is the very picture the plain layout draws for it
    assert (tmp_path / "c" / "bin-images" / "00002.jpg").read_bytes() == (
        tmp_path / "a" / "bin-images" / "00002-v1.jpg"
    ).read_bytes()


def test_min_visible_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_visible"):
        synthesize(tmp_path / "x", 1, 1, 0, min_visible=0.0, progress=False)
