"""``binwatch data stats`` on the real sample and on a small damaged copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from contract.abid import BAD_METADATA, EMPTY_IMAGE
from tests.hw import ABID_SAMPLE, requires_shared_data
from training.data.cli import app
from training.data.stats import UNREADABLE_IMAGE, compute_stats


def _jpeg(path: Path, w: int, h: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (200, 180, 40)).save(path, "JPEG")


def _meta(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": n}))


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    root = tmp_path / "abid"
    for key, (w, h, n) in {"a": (40, 30, 1), "b": (60, 20, 1), "c": (50, 70, 4)}.items():
        _jpeg(root / "bin-images" / f"{key}.jpg", w, h)
        _meta(root / "metadata" / f"{key}.json", n)
    return root


def test_stats_of_small_set(small: Path) -> None:
    stats = compute_stats(small)
    assert stats.images == 3
    assert stats.histogram == {1: 2, 4: 1}
    assert stats.mean_quantity == pytest.approx(2.0) and stats.total_quantity == 6
    assert (stats.width.min, stats.width.max, stats.width.mean) == (40, 60, pytest.approx(50.0))
    assert (stats.height.min, stats.height.max, stats.height.mean) == (20, 70, pytest.approx(40.0))
    assert stats.skipped == {} and stats.over_max_count == 0
    capped = compute_stats(small, max_count=3)
    assert (capped.images, capped.histogram, capped.over_max_count) == (2, {1: 2}, 1)


def test_stats_skip_and_count_bad_files(small: Path) -> None:
    (small / "metadata" / "b.json").write_text("{")
    (small / "bin-images" / "c.jpg").write_bytes(b"")
    _meta(small / "metadata" / "d.json", 2)
    (small / "bin-images" / "d.jpg").write_bytes(b"not a jpeg at all")
    stats = compute_stats(small)
    assert stats.images == 1 and stats.histogram == {1: 1}
    assert stats.skipped == {BAD_METADATA: 1, EMPTY_IMAGE: 1, UNREADABLE_IMAGE: 1}
    result = CliRunner().invoke(app, ["stats", str(small)])
    assert result.exit_code == 0, result.output
    assert "bad-metadata" in result.stdout and "unreadable-image" in result.stdout
    strict = CliRunner().invoke(app, ["stats", str(small), "--strict"])
    assert strict.exit_code == 2
    assert "b.json" in strict.stderr and "Traceback" not in strict.output


def test_stats_cli_on_missing_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "not an ABID folder" in result.stderr


@requires_shared_data
def test_stats_json_on_real_sample() -> None:
    result = CliRunner().invoke(app, ["stats", str(ABID_SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["images"] == 578
    hist = {int(k): v for k, v in stats["histogram"].items()}
    assert sum(hist.values()) == 578
    # padded 0:5 1:43 2:64 plus unpadded 0:10 1:20 2:20; counts 3.. only in the padded family
    assert [hist[c] for c in range(6)] == [15, 63, 84, 78, 80, 66]
    assert max(hist) == 47
    assert stats["total_quantity"] == sum(c * n for c, n in hist.items())
    assert stats["mean_quantity"] == pytest.approx(stats["total_quantity"] / 578)
    # README: padded images are 315-785 wide and 240-1069 high; one unpadded image is 234 high.
    assert (stats["width"]["min"], stats["width"]["max"]) == (315, 785)
    assert (stats["height"]["min"], stats["height"]["max"]) == (234, 1069)
    assert stats["skipped"] == {}
    capped = json.loads(
        CliRunner().invoke(app, ["stats", str(ABID_SAMPLE), "--json", "--max-count", "5"]).stdout
    )
    assert capped["images"] == 386 and capped["over_max_count"] == 192 and capped["max_count"] == 5


@requires_shared_data
def test_stats_table_via_the_binwatch_command(tmp_path: Path) -> None:
    # The installed root command, on a partial copy of the real sample with one corrupt file.
    root = tmp_path / "abid"
    for folder, suffix in (("bin-images", ".jpg"), ("metadata", ".json")):
        (root / folder).mkdir(parents=True)
        for key in ("00001", "00002", "121"):
            shutil.copy(ABID_SAMPLE / folder / f"{key}{suffix}", root / folder)
    (root / "metadata" / "00002.json").write_text("[]")
    from binwatch.cli import app as root_app

    result = CliRunner().invoke(root_app, ["data", "stats", str(root)])
    assert result.exit_code == 0, result.output
    assert "images" in result.stdout and "Count histogram" in result.stdout
    assert "skipped: bad-metadata" in result.stdout
