"""Synthetic bins: determinism, label truth, image plausibility, the mismatch manifest and the CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from binwatch.cli import app as root_app
from contract.abid import expected_quantity, iter_dataset
from tests.hw import ABID_SAMPLE, requires_shared_data
from training.data.synth import (
    MIN_VISIBLE,
    generate_bin,
    key_for,
    make_manifest_errors,
    render_bin,
    rng_for,
    synthesize,
)

SMALL = {"min_size": 160, "max_size": 240, "progress": False}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fabric_hue(image: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[where]
    return float(np.median(hsv[:, 0])), float(np.median(hsv[:, 1]))


def test_generate_bin_is_deterministic_per_seed() -> None:
    a, meta_a = generate_bin(rng_for(7, 3), 4, (200, 180))
    b, meta_b = generate_bin(rng_for(7, 3), 4, (200, 180))
    c, _ = generate_bin(rng_for(8, 3), 4, (200, 180))
    assert a.dtype == np.uint8 and a.shape == (180, 200, 3)
    assert np.array_equal(a, b) and meta_a == meta_b
    assert not np.array_equal(a, c)
    d, _ = generate_bin(11, 2, (160, 160))
    e, _ = generate_bin(11, 2, (160, 160))
    assert np.array_equal(d, e)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", 10, 5, seed=5, workers=1, mismatch=0.3, **SMALL)
    synthesize(tmp_path / "b", 10, 5, seed=5, workers=2, mismatch=0.3, **SMALL)
    synthesize(tmp_path / "c", 10, 5, seed=6, workers=1, mismatch=0.3, **SMALL)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert len(a) == 10 + 10 + 10 + 2  # images, metadata, manifests, mismatch.json + synth.json
    assert a == b
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


@pytest.mark.parametrize("seed", range(6))
def test_label_is_what_was_drawn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 13))
    size = (int(rng.integers(160, 400)), int(rng.integers(160, 400)))
    r = render_bin(rng, n, size, keep_masks=True)
    meta = r.metadata
    assert meta["EXPECTED_QUANTITY"] == len(r.items) == n
    assert sum(s["quantity"] for s in meta["BIN_FCSKU_DATA"].values()) == n
    assert Counter(it.sku for it in r.items) == {a: s["quantity"] for a, s in meta["BIN_FCSKU_DATA"].items()}
    # Recompute, independently of the generator's bookkeeping, what each item still shows:
    # its own pixels, inside the opening, not covered by any item drawn after it.
    h, w = r.opening.shape
    full = []
    for it in r.items:
        m = np.zeros((h, w), bool)
        x, y, bw, bh = it.bbox
        m[y : y + bh, x : x + bw] = it.mask
        full.append(m)
    for i, it in enumerate(r.items):
        covered = np.zeros((h, w), bool)
        for later in full[i + 1 :]:
            covered |= later
        visible = int((full[i] & r.opening & ~covered).sum())
        assert visible == it.visible
        assert visible >= MIN_VISIBLE * it.area, f"item {i} shows only {visible}/{it.area} px"
        assert visible > 0


def test_images_decode_with_sizes_in_range_and_yellow_bins(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, 40, 4, seed=1, **SMALL)
    assert summary.count == 40
    assert set(summary.counts) == {0, 1, 2, 3, 4}  # every count from 0 to K
    assert min(summary.counts.values()) >= 4  # roughly uniform (12 expected per count)
    for key in (key_for(i, 40) for i in range(40)):
        img = cv2.imread(str(tmp_path / "bin-images" / f"{key}.jpg"))
        assert img is not None, key
        meta = json.loads((tmp_path / "metadata" / f"{key}.json").read_text())
        assert 160 <= img.shape[1] <= 240 and 160 <= img.shape[0] <= 240
        assert (meta["image_width"], meta["image_height"]) == (img.shape[1], img.shape[0])
        assert meta["image_fname"] == f"{key}.jpg"
        assert meta["synthetic"]["seed"] == 1
    items = list(iter_dataset(tmp_path))
    assert [it.key for it in items] == [f"{i:05d}" for i in range(1, 41)]
    assert sum(Counter(it.count for it in items).values()) == 40
    for i in range(8):
        r = render_bin(rng_for(2, i), i % 5, (256, 256))
        hue, sat = _fabric_hue(r.image, ~r.opening)
        assert 15 <= hue <= 30 and sat >= 60, (hue, sat)  # pale yellow fabric, as in ABID


@requires_shared_data
def test_fabric_colour_matches_real_bins() -> None:
    real = []
    for path in sorted((ABID_SAMPLE / "bin-images").glob("0*.jpg"))[:20]:
        img = cv2.imread(str(path))
        top = np.zeros(img.shape[:2], bool)
        top[: max(2, img.shape[0] // 30), img.shape[1] // 10 : img.shape[1] // 3] = True
        real.append(_fabric_hue(img, top)[0])
    synth = [
        _fabric_hue(r.image, ~r.opening)[0]
        for r in (render_bin(rng_for(3, i), 3, (256, 256)) for i in range(8))
    ]
    assert abs(float(np.median(real)) - float(np.median(synth))) <= 4


def test_mismatch_manifest(tmp_path: Path) -> None:
    synthesize(tmp_path, 40, 3, seed=9, mismatch=0.25, **SMALL)
    listing = json.loads((tmp_path / "mismatch.json").read_text())
    wrong = listing["mismatched"]
    assert len(wrong) == 10 and listing["total"] == 40
    for key in (key_for(i, 40) for i in range(40)):
        meta = (tmp_path / "metadata" / f"{key}.json").read_bytes()
        manifest = (tmp_path / "manifest-mismatch" / f"{key}.json").read_bytes()
        truth, stated = json.loads(meta), json.loads(manifest)
        if key not in wrong:
            assert manifest == meta
            continue
        assert wrong[key]["true_quantity"] == truth["EXPECTED_QUANTITY"]
        assert wrong[key]["manifest_quantity"] == stated["EXPECTED_QUANTITY"] >= 0
        assert 1 <= abs(stated["EXPECTED_QUANTITY"] - truth["EXPECTED_QUANTITY"]) <= 2
        skus = stated["BIN_FCSKU_DATA"].values()
        assert sum(s["quantity"] for s in skus) == stated["EXPECTED_QUANTITY"]
        assert all(s["quantity"] > 0 for s in skus)
        assert expected_quantity(stated) == stated["EXPECTED_QUANTITY"]


def test_manifest_errors_never_negative_and_exact_fraction() -> None:
    quantities = {f"{i:05d}": i % 3 for i in range(200)}  # many zeros and ones
    wrong = make_manifest_errors(quantities, 0.5, seed=0)
    assert len(wrong) == 100
    assert all(q >= 0 and q != quantities[k] for k, q in wrong.items())
    assert make_manifest_errors(quantities, 0.5, seed=0) == wrong
    assert make_manifest_errors(quantities, 0.0, seed=0) == {}
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        make_manifest_errors(quantities, 1.5, seed=0)


def test_cli_synth(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--count", "6", "--max-items", "3", "--seed", "4"]
    args += ["--size", "176x144", "--workers", "1", "--mismatch", "0.5"]
    res = runner.invoke(root_app, args)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "bin-images").iterdir()) == [f"0000{i}.jpg" for i in range(1, 7)]
    assert cv2.imread(str(out / "bin-images" / "00001.jpg")).shape == (144, 176, 3)
    assert len(json.loads((out / "mismatch.json").read_text())["mismatched"]) == 3
    first = _files(out)

    again = runner.invoke(root_app, args)  # refuses to mix datasets
    assert again.exit_code == 2 and "--overwrite" in again.output
    again = runner.invoke(root_app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output
    assert _files(out) == first

    bad = runner.invoke(
        root_app, ["data", "synth", "--out", str(tmp_path / "x"), "--count", "2", "--size", "big"]
    )
    assert bad.exit_code == 2 and "WIDTHxHEIGHT" in bad.output
    bad = runner.invoke(
        root_app,
        [
            "data",
            "synth",
            "--out",
            str(tmp_path / "x"),
            "--count",
            "2",
            "--min-items",
            "5",
            "--max-items",
            "2",
        ],
    )
    assert bad.exit_code == 2 and "--min-items" in bad.output
